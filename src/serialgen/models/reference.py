"""Reference attention with FBDM and RPIM, as attention processors on stock diffusers UNets.

- Reference attention (Animate Anyone, Hu et al. 2023, §3.2; SerialGen §3.3): the ReferenceNet
  runs once on the clean reference latent (t = 0); every self-attention of it *writes* its
  normed input hidden states to a `ReferenceBank`. The matching self-attention of the
  denoising UNet *reads* them: its keys and values are computed over its own tokens
  concatenated with the bank's (2hw tokens), its queries over its own tokens only.
- FBDM (SerialGen eq. 3): per ReferenceNet self-attention, two learnable vectors v_f, v_b and
  the reference's background mask m resized to the block: f~ = (f + v_b) m + (f + v_f)(1 - m).
- RPIM (SerialGen eq. 4): the reference's own pose map, encoded once (`PoseGuider`), mapped to
  each block's width by a conv, resized to the block and added: f~ = f~ + f_p.

Both additions start as no-ops (zero vectors, zero convs), so an untrained adapter leaves the
ReferenceNet exactly as loaded (STYLE.md rule 5). Conditioning reaches the processors through
the UNet's `cross_attention_kwargs={"reference": bank}`, so the UNets stay stock.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ReferenceBank:
    """What the ReferenceNet hands the denoising UNet, plus the inputs its adapters need.

    features: self-attention name -> (Nr, T, C) features written by the ReferenceNet.
    keep: (N,) bool over the denoising batch, False where a row must not see the reference
        (classifier-free guidance's unconditional half, condition dropout); None = all see it.
    background_mask: (Nr, 1, H, W) in [0, 1], 1 on background (FBDM); None = no FBDM term.
    pose_features: (Nr, C0, h, w) RPIM encoder output at latent size; None = no RPIM term.
    latent_size: (h, w) of the reference latent, to find each block's spatial size.
    """

    latent_size: tuple[int, int]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    keep: torch.Tensor | None = None
    background_mask: torch.Tensor | None = None
    pose_features: torch.Tensor | None = None

    def for_batch(self, name: str, n: int) -> torch.Tensor:
        """The bank entry repeated to a batch of n rows (row i uses reference i % Nr)."""
        if name not in self.features:
            raise KeyError(f"The reference bank has no features for {name}: run the ReferenceNet (encode_reference) "
                           "with the same architecture as the denoising UNet first")
        f = self.features[name]  # (Nr, T, C)
        if n % len(f):
            raise ValueError(f"A denoising batch of {n} cannot share {len(f)} references: use a multiple of {len(f)}")
        return f if n == len(f) else f.repeat(n // len(f), 1, 1)  # (N, T, C)


def block_size(latent_size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """Spatial size of a UNet block with `tokens` positions: the latent halved (rounding up,
    as diffusers' stride-2 downsampling does) until it matches."""
    h, w = latent_size
    for level in range(8):
        bh, bw = math.ceil(h / 2 ** level), math.ceil(w / 2 ** level)
        if bh * bw == tokens:
            return bh, bw
    raise ValueError(f"{tokens} tokens match no downsampling of a {h}x{w} latent")


def attend(attn, hidden_states: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """A diffusers `Attention` layer's computation: queries from hidden_states (N, T, C), keys and
    values from context (N, S, Cc), boolean mask (N, 1, 1, S) of allowed keys -> (N, T, C)."""
    if hidden_states.ndim != 3:
        raise ValueError(f"Reference attention expects (N, tokens, channels) hidden states, got {tuple(hidden_states.shape)}")
    n, t, _ = hidden_states.shape
    if attn.norm_cross is not None and context is not hidden_states:
        context = attn.norm_encoder_hidden_states(context)
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)  # (N, T|S, inner)
    head = k.shape[-1] // attn.heads
    q = q.view(n, -1, attn.heads, head).transpose(1, 2)  # (N, heads, T, head)
    k = k.view(n, -1, attn.heads, head).transpose(1, 2)  # (N, heads, S, head)
    v = v.view(n, -1, attn.heads, head).transpose(1, 2)  # (N, heads, S, head)
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, T, head)
    out = out.transpose(1, 2).reshape(n, t, attn.heads * head).to(q.dtype)  # (N, T, inner)
    out = attn.to_out[1](attn.to_out[0](out))  # (N, T, C)
    if attn.residual_connection:
        out = out + hidden_states
    return out / attn.rescale_output_factor


class ReferenceFeatureAdapter(nn.Module):
    """FBDM's v_f, v_b (eq. 3) and RPIM's per-block conv (eq. 4) for one ReferenceNet self-attention."""

    def __init__(self, width: int, pose_channels: int, fbdm: bool = True, rpim: bool = True):
        super().__init__()
        self.v_f = nn.Parameter(torch.zeros(width)) if fbdm else None
        self.v_b = nn.Parameter(torch.zeros(width)) if fbdm else None
        self.pose_proj = nn.Conv2d(pose_channels, width, 3, padding=1) if rpim else None
        if rpim:
            nn.init.zeros_(self.pose_proj.weight)
            nn.init.zeros_(self.pose_proj.bias)

    def forward(self, f: torch.Tensor, bank: ReferenceBank) -> torch.Tensor:
        """f: (N, T, C) normed hidden states -> f~ (N, T, C)."""
        h, w = block_size(bank.latent_size, f.shape[1])
        if self.v_f is not None and bank.background_mask is not None:
            m = F.interpolate(bank.background_mask.to(f.dtype), size=(h, w), mode="area")  # (N, 1, h, w)
            m = m.flatten(2).transpose(1, 2)  # (N, T, 1)
            f = f + self.v_b * m + self.v_f * (1 - m)
        if self.pose_proj is not None and bank.pose_features is not None:
            p = self.pose_proj(bank.pose_features.to(f.dtype))  # (N, C, h_lat, w_lat)
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)  # (N, C, h, w)
            f = f + p.flatten(2).transpose(1, 2)  # (N, T, C)
        return f


class ReferenceAttnProcessor:
    """One processor class for every attention layer of both UNets.

    role "write" (ReferenceNet self-attention): adapt f with FBDM/RPIM, store it, attend over it.
    role "read" (denoising UNet self-attention): attend over own tokens + the bank's.
    role "plain" (cross-attention): the stock computation; it only accepts the reference kwarg
    so diffusers does not warn about it.
    """

    def __init__(self, role: str, name: str = "", adapter: ReferenceFeatureAdapter | None = None):
        if role not in ("write", "read", "plain"):
            raise ValueError(f"Unknown reference attention role {role!r}; use write, read or plain")
        self.role, self.name, self.adapter = role, name, adapter

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference: ReferenceBank | None = None):
        if attention_mask is not None:
            raise ValueError("Reference attention takes no attention_mask")
        if self.role == "plain" or reference is None:
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            return attend(attn, hidden_states, context)
        if self.role == "write":
            f = self.adapter(hidden_states, reference) if self.adapter is not None else hidden_states
            reference.features[self.name] = f  # (Nr, T, C)
            return attend(attn, f, f)
        n, t, _ = hidden_states.shape
        bank = reference.for_batch(self.name, n).to(hidden_states.dtype)  # (N, T', C)
        context = torch.cat([hidden_states, bank], dim=1)  # (N, T + T', C)
        mask = None
        if reference.keep is not None and not bool(reference.keep.all()):
            keep = reference.keep.to(hidden_states.device).view(n, 1, 1, 1)
            mask = torch.cat([torch.ones(n, 1, 1, t, dtype=torch.bool, device=keep.device),
                              keep.expand(n, 1, 1, bank.shape[1])], dim=-1)  # (N, 1, 1, T + T')
        return attend(attn, hidden_states, context, mask)


def self_attention_layers(unet) -> dict[str, nn.Module]:
    """name -> diffusers Attention module, for every self-attention (attn1) of a UNet, in module order."""
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention) and name.endswith("attn1")}


def attach(unet, role: str, adapters: dict[str, ReferenceFeatureAdapter] | None = None) -> None:
    """Set reference processors on every attention layer of a stock UNet (weights untouched).
    role: "write" for the ReferenceNet, "read" for the denoising UNet."""
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            if name.endswith("attn1"):
                module.set_processor(ReferenceAttnProcessor(role, name, (adapters or {}).get(name)))
            else:
                module.set_processor(ReferenceAttnProcessor("plain", name))


@contextmanager
def added_after_conv_in(unet, features: torch.Tensor | None):
    """Within the block, the UNet's conv_in output gets `features` (N, C0, h, w) added: how the
    PoseGuider enters the denoising UNet in Animate Anyone, without editing the UNet."""
    if features is None:
        yield
        return
    handle = unet.conv_in.register_forward_hook(lambda module, args, out: out + features.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()
