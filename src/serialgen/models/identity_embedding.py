"""Beyond Inserting's identity embedding (Li et al. 2024, arXiv 2402.00631): one identity as several
per-stage tokens, one set per range of timesteps, each token made of two disentangled features,
one read by the cross-attention keys (where the identity is attended) and one by the values (what
it brings). They live in the cross-attention space and are appended to the prompt's encoded tokens
in every cross-attention layer (`IdentityCrossAttnProcessor`), so the text encoder is untouched.

The file is a small safetensors (`key`, `value`: (stages, tokens, dim)) whose metadata records the
base UNet it was optimized for (a digest of its weights): another base is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .attention import attend

FORMAT = "serialgen.identity_embedding/1"


def base_digest(unet) -> str:
    """The digest of a UNet's own weights (attention processors' weights, an image adapter's, left out)."""
    from ..data.latents import weights_digest

    return weights_digest(unet, exclude=(".processor",))


class IdentityEmbedding(nn.Module):
    """key, value: (stages, tokens, dim) parameters. Stage s covers timesteps
    [s * T / stages, (s + 1) * T / stages) of the T training timesteps."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, base: str, num_train_timesteps: int = 1000):
        super().__init__()
        if key.shape != value.shape or key.ndim != 3:
            raise ValueError(f"key and value must both be (stages, tokens, dim), got {tuple(key.shape)} and "
                             f"{tuple(value.shape)}")
        self.key, self.value = nn.Parameter(key.clone().float()), nn.Parameter(value.clone().float())
        self.base, self.num_train_timesteps = base, num_train_timesteps

    @classmethod
    def initial(cls, word: torch.Tensor, stages: int, tokens: int, base: str) -> "IdentityEmbedding":
        """Every stage's key and value features start from `word` (dim,), the encoded class word."""
        if stages < 1 or tokens < 1:
            raise ValueError(f"stages and tokens must be at least 1, got {stages} and {tokens}")
        start = word.detach().float().reshape(1, 1, -1).expand(stages, tokens, -1)
        return cls(start, start, base)

    @property
    def stages(self) -> int:
        return self.key.shape[0]

    def stage_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(N,) timesteps -> (N,) stage indices."""
        t = torch.as_tensor(timesteps).long().reshape(-1).cpu()
        return (t * self.stages // self.num_train_timesteps).clamp(0, self.stages - 1)

    def save(self, path: str | Path) -> Path:
        """Atomically: the safetensors file, with the base digest and stage layout in its metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        save_file({"key": self.key.detach().cpu().contiguous(), "value": self.value.detach().cpu().contiguous()},
                  str(tmp), metadata={"format": FORMAT, "base": self.base,
                                      "num_train_timesteps": str(self.num_train_timesteps)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, unet=None) -> "IdentityEmbedding":
        """The embedding at `path`; given the UNet it will run on, one made for another base is refused."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No identity embedding at {path}: make one with `serialgen personalize`")
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: identity embeddings are .safetensors files (made by `serialgen personalize`)")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a serialgen identity embedding (made by `serialgen personalize`)")
            key, value = f.get_tensor("key"), f.get_tensor("value")
        embedding = cls(key, value, meta["base"], int(meta["num_train_timesteps"]))
        if unet is not None:
            embedding.check_base(unet, path)
        return embedding

    def check_base(self, unet, where: str | Path = "this identity embedding") -> None:
        if base_digest(unet) != self.base:
            raise ValueError(f"{where} was made for another text-to-image base: make it again for this one with "
                             "`serialgen personalize --base`")
        if unet.config.cross_attention_dim != self.key.shape[-1]:
            raise ValueError(f"{where} has {self.key.shape[-1]}-d tokens; this UNet's cross-attention reads "
                             f"{unet.config.cross_attention_dim}-d")


class IdentityState:
    """What the processors of one UNet share in a call: the embedding, each row's stage (N,) and
    whether it carries the identity (N,) bool (a guidance half without it), and, while optimizing
    with the attention loss, a list collecting each layer's attention probabilities."""

    def __init__(self, embedding: IdentityEmbedding | None = None):
        self.embedding = embedding
        self.stages: torch.Tensor | None = None
        self.with_identity: torch.Tensor | None = None
        self.probabilities: list | None = None

    def set(self, timesteps: torch.Tensor, with_identity) -> None:
        self.stages = self.embedding.stage_of(timesteps)
        self.with_identity = torch.as_tensor(with_identity, dtype=torch.bool).reshape(-1)


class IdentityCrossAttnProcessor:
    """A cross-attention (attn2) processor: the prompt's tokens, then the row's stage's identity
    tokens, keys from their key features and values from their value features. Rows without the
    identity mask those keys out, which is the prompt alone exactly."""

    def __init__(self, state: IdentityState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference=None, ip_tokens=None):
        if attention_mask is not None:
            raise ValueError("These attention processors take no attention_mask")
        state = self.state
        if encoder_hidden_states is None or state.embedding is None or state.stages is None:
            return attend(attn, hidden_states, hidden_states if encoder_hidden_states is None else encoder_hidden_states)
        n, s = len(hidden_states), encoder_hidden_states.shape[1]
        if len(state.stages) != n:
            raise ValueError(f"The identity state holds {len(state.stages)} rows; the batch has {n}")
        stages = state.stages.to(hidden_states.device)
        dtype = encoder_hidden_states.dtype
        keys = state.embedding.key[stages].to(dtype)  # (N, T, D)
        values = state.embedding.value[stages].to(dtype)
        mask = None
        with_identity = state.with_identity.to(hidden_states.device)
        if not bool(with_identity.all()):
            mask = torch.cat([torch.ones(n, s, dtype=torch.bool, device=hidden_states.device),
                              with_identity[:, None].expand(n, keys.shape[1])], 1)[:, None, None, :]
        return attend(attn, hidden_states, torch.cat([encoder_hidden_states, keys], 1), mask,
                      value_context=torch.cat([encoder_hidden_states, values], 1), probabilities=state.probabilities)


def identity_attention_loss(probabilities: list[torch.Tensor], masks: torch.Tensor, tokens: int) -> torch.Tensor:
    """Beyond Inserting's region attention loss, on the subject: each layer's attention of the
    identity tokens (the last `tokens` keys; heads and tokens averaged), scaled to a maximum of 1
    per image, against the subject mask (N, 1, H, W) in [0, 1] pooled to the layer's resolution;
    mean squared error over layers. It keeps the identity's attention on the subject, not on its
    layout and background."""
    import torch.nn.functional as F

    losses = []
    aspect = masks.shape[-2] / masks.shape[-1]
    for weights in probabilities:  # (N, heads, Q, S)
        attention = weights[..., -tokens:].mean(dim=(1, 3))  # (N, Q)
        q = attention.shape[1]
        w = round((q / aspect) ** 0.5)
        h = q // w
        if h * w != q:
            raise ValueError(f"A layer of {q} queries does not tile the mask's aspect {masks.shape[-2]}x{masks.shape[-1]}")
        attention = attention.reshape(-1, h, w)
        attention = attention / attention.amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)
        target = F.adaptive_avg_pool2d(masks.to(attention), (h, w))[:, 0]
        losses.append(F.mse_loss(attention, target))
    return torch.stack(losses).mean()
