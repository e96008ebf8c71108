"""The Stage II model (SerialGen §3.4, eq. 5): a frozen text-to-image UNet whose cross-attentions
read image tokens through an `IPAdapter`, as one map (x_t, t, cond) -> epsilon, like Stage I's
`Standardizer`. Training (train/stage2.py), sampling (pipelines/personalize.py) and the held-out
loss gap (evaluation/series.py) all call this one model; its training loss (eq. 5) is
`diffusion.epsilon_loss(model, ...)`, taken by the trainer through accelerate's wrapper of it.

cond: {"text": (N, L, D) text embeddings, "tokens": (N, T, cross_dim) image tokens, or
"hidden": (N, T, d) CLIP hidden states that the adapter projects to tokens here (the training
path: the projection then runs inside this module's forward, so accelerate/DDP sees it),
"added": SDXL's added conditions or None}. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion import denoising_error
from .ip_adapter import IPAdapter


class Personalizer(nn.Module):
    """unet: a diffusers UNet2DConditionModel (SD1.5, SDXL or the mini base), frozen; adapter:
    the `IPAdapter` attached to it (only the adapter trains)."""

    def __init__(self, unet, adapter: IPAdapter):
        super().__init__()
        self.unet, self.adapter = unet, adapter
        adapter.attach(unet)

    def tokens(self, cond: dict) -> torch.Tensor:
        return cond["tokens"] if "tokens" in cond else self.adapter.tokens(cond["hidden"])

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return self.unet(x_t, t, cond["text"], added_cond_kwargs=cond.get("added"),
                         cross_attention_kwargs={"ip_tokens": self.tokens(cond)}).sample

    @torch.no_grad()
    def errors(self, x0: torch.Tensor, cond: dict, scheduler, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Each sample's epsilon MSE (N,) at one fixed timestep with fixed noise (held-out scoring)."""
        cond = {**cond, "tokens": self.tokens(cond)}
        tt = torch.full((len(x0),), t, device=x0.device)
        return denoising_error(self, scheduler.add_noise(x0, noise, tt), tt, cond, noise).mean(dim=(1, 2, 3))
