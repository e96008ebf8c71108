"""The Stage II image adapter: IP-Adapter with all CLIP tokens (SerialGen §3.4; Ye et al. 2023,
IP-Adapter §3.2, the "full" variant whose projector maps every token).

- Image tokens: the CLIP vision tower's penultimate hidden states, patch tokens + CLS (257 for
  OpenCLIP ViT-H/14; 65 for the mini CLIP), projected per token by an MLP
  (Linear d->d, GELU, Linear d->cross_dim, LayerNorm).
- Decoupled cross-attention (IP-Adapter eq. 5): each UNet cross-attention gets its own
  to_k_ip / to_v_ip, initialised from the layer's to_k / to_v; the queries are shared and
      Attention(Q, K_text, V_text) + scale * Attention(Q, K_img, V_img)
  goes through the layer's to_out. Scale 0 is the base model exactly.
- Saved in IP-Adapter's published layout: one safetensors file with `image_proj.*` (proj.0,
  proj.2, proj.3) and `ip_adapter.{i}.to_k_ip.weight` / `.to_v_ip.weight`, i = 1, 3, 5, ...
  over the UNet's cross-attentions in `attn_processors` order, which diffusers' `load_ip_adapter`
  reads as its IPAdapterFullImageProjection.

A weaker encoder for the paper's token study (supplementary §10, Fig. 13): `token_grid` g keeps
the CLS token and the patch tokens average-pooled to a g x g grid (g = 0: the CLS token alone),
1 + g^2 tokens through the same projector. The file keeps the published layout and records g in
its safetensors metadata; loaders that ignore it (diffusers) would feed every token.

The processors are plain objects pointing at this module's parameters, so the UNet's own
state dict stays stock. Image tokens reach them through `cross_attention_kwargs={"ip_tokens": ...}`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from .attention import PlainProcessor, attend


def pool_tokens(hidden_states: torch.Tensor, grid: int | None) -> torch.Tensor:
    """(N, 1 + s*s, d) CLS + patch tokens -> the CLS token and the patches average-pooled to a
    grid x grid map (grid 0: the CLS token alone; None: every token, unchanged)."""
    if grid is None:
        return hidden_states
    cls, patches = hidden_states[:, :1], hidden_states[:, 1:]
    side = round(patches.shape[1] ** 0.5)
    if side * side != patches.shape[1]:
        raise ValueError(f"pooling image tokens needs a square patch grid; got {patches.shape[1]} patch tokens")
    if grid == 0:
        return cls
    if grid > side:
        raise ValueError(f"token_grid {grid} is finer than the encoder's {side}x{side} patch grid")
    n, _, d = patches.shape
    pooled = nn.functional.adaptive_avg_pool2d(patches.transpose(1, 2).reshape(n, d, side, side), grid)
    return torch.cat([cls, pooled.flatten(2).transpose(1, 2)], 1)


class ImageProjection(nn.Module):
    """Per-token MLP: (N, T, d) CLIP hidden states -> (N, T, cross_dim) image tokens."""

    def __init__(self, clip_dim: int, cross_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(clip_dim, clip_dim), nn.GELU(), nn.Linear(clip_dim, cross_dim),
                                  nn.LayerNorm(cross_dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden_states)


class DecoupledCrossAttnProcessor:
    """Text cross-attention plus scaled image cross-attention with its own keys and values
    (IP-Adapter eq. 5), through the shared attention core (attention.py)."""

    def __init__(self, to_k_ip: nn.Linear, to_v_ip: nn.Linear, adapter: "IPAdapter"):
        self.to_k_ip, self.to_v_ip, self.adapter = to_k_ip, to_v_ip, adapter

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 ip_tokens: torch.Tensor | None = None):
        if attention_mask is not None:
            raise ValueError("The image adapter's attention takes no attention_mask")
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        scale, extra = self.adapter.scale, None
        if ip_tokens is not None and scale != 0:
            n = len(hidden_states)
            tokens = ip_tokens.to(hidden_states.dtype)
            if len(tokens) != n:
                if n % len(tokens):
                    raise ValueError(f"{len(tokens)} image-token rows cannot serve a batch of {n}")
                tokens = tokens.repeat(n // len(tokens), 1, 1)
            extra = (self.to_k_ip(tokens), self.to_v_ip(tokens))
        return attend(attn, hidden_states, context, extra=extra, extra_scale=scale)


def cross_attention_layers(unet) -> list[tuple[str, nn.Module]]:
    """(processor name, Attention) of every cross-attention, in the UNet's attn_processors order."""
    modules = dict(unet.named_modules())
    return [(name, modules[name[: -len(".processor")]]) for name in unet.attn_processors
            if not name.endswith("attn1.processor")]


class IPAdapter(nn.Module):
    """Projector + per-layer image keys/values for one UNet. `scale` weighs the image attention."""

    def __init__(self, clip_dim: int, cross_dim: int, widths: list[int], token_grid: int | None = None):
        super().__init__()
        if token_grid is not None and token_grid < 0:
            raise ValueError(f"token_grid must be >= 0 (0: the CLS token alone) or None (every token), got {token_grid}")
        self.token_grid = token_grid
        self.image_proj = ImageProjection(clip_dim, cross_dim)
        self.to_k_ip = nn.ModuleList(nn.Linear(cross_dim, w, bias=False) for w in widths)
        self.to_v_ip = nn.ModuleList(nn.Linear(cross_dim, w, bias=False) for w in widths)
        self.scale = 1.0

    @classmethod
    def for_unet(cls, unet, clip_dim: int, token_grid: int | None = None) -> "IPAdapter":
        """A fresh adapter whose image keys/values start as copies of each layer's text ones."""
        layers = cross_attention_layers(unet)
        adapter = cls(clip_dim, unet.config.cross_attention_dim, [attn.to_k.out_features for _, attn in layers],
                      token_grid)
        with torch.no_grad():
            for k, (_, attn) in enumerate(layers):
                adapter.to_k_ip[k].weight.copy_(attn.to_k.weight)
                adapter.to_v_ip[k].weight.copy_(attn.to_v.weight)
        return adapter

    def attach(self, unet) -> None:
        """Set the decoupled processors on the UNet's cross-attentions (weights untouched)."""
        layers = cross_attention_layers(unet)
        if len(layers) != len(self.to_k_ip):
            raise ValueError(f"This adapter has {len(self.to_k_ip)} layers; the UNet has {len(layers)} cross-attentions")
        names = {name for name, _ in layers}
        processors = {}
        k = 0
        for name in unet.attn_processors:
            if name in names:
                processors[name] = DecoupledCrossAttnProcessor(self.to_k_ip[k], self.to_v_ip[k], self)
                k += 1
            else:
                processors[name] = PlainProcessor()
        unet.set_attn_processor(processors)

    @apply_forward_hook  # model CPU offload places the adapter
    def tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """CLIP penultimate hidden states (N, T, d) -> image tokens (N, T', cross_dim): T' = T, or
        1 + token_grid^2 (`pool_tokens`)."""
        return self.image_proj(pool_tokens(hidden_states, self.token_grid).to(self.image_proj.proj[0].weight.dtype))

    # -- IP-Adapter's published file layout ----------------------------------------------

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"image_proj.{k}": v for k, v in self.image_proj.state_dict().items()}
        for k in range(len(self.to_k_ip)):
            state[f"ip_adapter.{2 * k + 1}.to_k_ip.weight"] = self.to_k_ip[k].weight
            state[f"ip_adapter.{2 * k + 1}.to_v_ip.weight"] = self.to_v_ip[k].weight
        return state

    def official_nested(self) -> dict[str, dict[str, torch.Tensor]]:
        """{"image_proj": ..., "ip_adapter": ...}: the layout of the original release's .bin files,
        which diffusers' `load_ip_adapter` also takes as an in-memory state dict."""
        nested: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, value in self.official_state_dict().items():
            part, _, rest = key.partition(".")
            nested[part][rest] = value.detach()
        return nested

    def save(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """One safetensors file in IP-Adapter's layout, written atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
                   for k, v in self.official_state_dict().items()}
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        extra = {} if self.token_grid is None else {"token_grid": str(self.token_grid)}
        save_file(tensors, str(tmp), metadata={"format": "pt"} | extra)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, unet, *, allow_pickle: bool = False) -> "IPAdapter":
        """Read an IP-Adapter file (ours or any in the published layout) for `unet`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No image adapter at {path}: give an IP-Adapter .safetensors file")
        token_grid = None
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            flat = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                grid = (f.metadata() or {}).get("token_grid")
            token_grid = int(grid) if grid is not None else None
        elif allow_pickle:
            nested = torch.load(path, map_location="cpu", weights_only=True)
            flat = {f"{part}.{k}": v for part, sub in nested.items() for k, v in sub.items()}
        else:
            raise ValueError(f"{path} is a pickle file, which can run code when loaded; convert it to safetensors, or "
                             "pass allow_pickle=True (--allow-pickle) if you trust the source")
        proj = {k[len("image_proj."):]: v for k, v in flat.items() if k.startswith("image_proj.")}
        if "proj.3.weight" not in proj:
            raise ValueError(f"{path} is not a full-token IP-Adapter (image_proj lacks proj.3, the LayerNorm of the "
                             "per-token MLP): serialgen's Stage II uses all CLIP tokens")
        clip_dim, cross_dim = proj["proj.0.weight"].shape[1], proj["proj.3.weight"].shape[0]
        if cross_dim != unet.config.cross_attention_dim:
            raise ValueError(f"{path} projects to {cross_dim}-d tokens; this UNet's cross-attention takes "
                             f"{unet.config.cross_attention_dim}")
        layers = cross_attention_layers(unet)
        adapter = cls(clip_dim, cross_dim, [attn.to_k.out_features for _, attn in layers], token_grid)
        adapter.image_proj.load_state_dict(proj)
        for k in range(len(layers)):
            key = f"ip_adapter.{2 * k + 1}"
            to_k_ip = flat.get(f"{key}.to_k_ip.weight")
            if to_k_ip is None:
                raise ValueError(f"{path} lacks {key}.to_k_ip.weight: it was made for a UNet with fewer cross-attentions")
            if to_k_ip.shape != adapter.to_k_ip[k].weight.shape:
                raise ValueError(f"{path} was made for a UNet of other widths (cross-attention {k} maps to "
                                 f"{to_k_ip.shape[0]} channels, this UNet's to {adapter.to_k_ip[k].out_features}): "
                                 "train an adapter for this base with `serialgen train stage2 --base`")
            adapter.to_k_ip[k].weight.data.copy_(to_k_ip)
            adapter.to_v_ip[k].weight.data.copy_(flat[f"{key}.to_v_ip.weight"])
        return adapter.to(next(iter(flat.values())).dtype)
