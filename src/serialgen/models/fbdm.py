"""FBDM, the foreground-background distinction module (SerialGen §3.3, eq. 3).

Per ReferenceNet self-attention, two learnable vectors v_f and v_b, and the reference's
background mask m (1 on background) resized to the block:

    f~ = (f + v_b) m + (f + v_f)(1 - m)

so the denoising UNet, which attends over f~, can tell the figure's features from the backdrop's
and need not copy the backdrop's colour into the clothes. The vectors start at zero: a fresh
FBDM changes nothing. The per-layer parameters live in `reference_attention.LayerAdapter`
(state-dict keys adapters.<layer>.v_f / v_b). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def vectors(width: int) -> tuple[nn.Parameter, nn.Parameter]:
    """(v_f, v_b), zero-initialised, for a block of `width` channels."""
    return nn.Parameter(torch.zeros(width)), nn.Parameter(torch.zeros(width))


def distinguish(f: torch.Tensor, v_f: torch.Tensor, v_b: torch.Tensor, background_mask: torch.Tensor,
                size: tuple[int, int]) -> torch.Tensor:
    """Eq. 3. f: (N, T, C) a block's normed hidden states, T = h * w for size (h, w);
    background_mask: (N, 1, H, W) in [0, 1]. -> f~ (N, T, C)."""
    m = F.interpolate(background_mask.to(f.dtype), size=size, mode="area")  # (N, 1, h, w)
    m = m.flatten(2).transpose(1, 2)  # (N, T, 1)
    return f + v_b * m + v_f * (1 - m)
