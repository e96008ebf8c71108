"""RPIM, the reference pose injection module (SerialGen §3.3, eq. 4).

The reference image's own pose map is encoded once by a pose encoder E_p (a `PoseGuider` whose
last conv is not zeroed, state-dict keys rpim.*), then, per ReferenceNet self-attention, mapped
to the block's width by a zero-initialised 3x3 conv, resized to the block and added:

    f~ = f~ + conv(E_p(pose))

so the ReferenceNet's features know which body part each pixel is, whatever the reference's pose.
A fresh RPIM changes nothing (zero convs). The per-layer convs live in
`reference_attention.LayerAdapter` (keys adapters.<layer>.pose_proj.*). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pose_guider import PoseGuider


def encoder(out_channels: int, channels: tuple[int, ...]) -> PoseGuider:
    """E_p: the reference pose map (N, 3, H, W) in [-1, 1] -> (N, out_channels, h, w) at latent size."""
    return PoseGuider(out_channels, channels, zero_out=False)


def projection(pose_channels: int, width: int) -> nn.Conv2d:
    """One block's zero-initialised conv from E_p's channels to the block's width."""
    conv = nn.Conv2d(pose_channels, width, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def inject(f: torch.Tensor, conv: nn.Conv2d, pose_features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eq. 4. f: (N, T, C) with T = h * w for size (h, w); pose_features: (N, C0, h_lat, w_lat)
    from `encoder`. -> f + the projected pose, (N, T, C)."""
    p = conv(pose_features.to(f.dtype))  # (N, C, h_lat, w_lat)
    p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)  # (N, C, h, w)
    return f + p.flatten(2).transpose(1, 2)
