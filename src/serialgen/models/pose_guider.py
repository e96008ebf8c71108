"""Pose encoders: a pose map (OpenPose-style drawing) to features at the latent resolution.

Two uses in Stage I (SerialGen §3.3, docs/ARCHITECTURE.md):
- the PoseGuider of Animate Anyone (Hu et al. 2023, §3.2), whose output is added after the
  denoising UNet's conv_in: the *target* (standard) pose. Its last conv is zero-initialised,
  so a fresh guider changes nothing.
- RPIM's shared encoder (SerialGen eq. 4): the *reference* image's own pose map, projected per
  ReferenceNet block by a zero-initialised conv (models/rpim.py); this encoder's output is
  therefore not zeroed.
"""

from __future__ import annotations

import torch
from torch import nn


class PoseGuider(nn.Module):
    """3x3 convs with SiLU, widths `channels` (paper: 16, 32, 96, 256), a stride-2 conv between
    consecutive widths (/8 for four widths), then a 3x3 conv to `out_channels`.

    (N, 3, H, W) pose map in [-1, 1] -> (N, out_channels, H / 8, W / 8)."""

    def __init__(self, out_channels: int, channels: tuple[int, ...] = (16, 32, 96, 256), in_channels: int = 3,
                 zero_out: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1), nn.SiLU()]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.SiLU(),
                       nn.Conv2d(c_in, c_out, 3, padding=1, stride=2), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)
        if zero_out:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    @property
    def in_channels(self) -> int:
        return self.body[0].in_channels

    @staticmethod
    def widened_state(state: dict[str, torch.Tensor], in_channels: int, prefix: str = "") -> dict[str, torch.Tensor]:
        """A guider's state dict with its first conv taking `in_channels` inputs: the saved input
        channels keep their weights and the added ones start at zero, so the wider guider computes
        what the saved one does until the new inputs' weights train."""
        key = f"{prefix}body.0.weight"
        weight = state[key]
        if weight.shape[1] > in_channels:
            raise ValueError(f"A pose guider with {weight.shape[1]} input channels cannot be narrowed to {in_channels}")
        extra = weight.new_zeros(weight.shape[0], in_channels - weight.shape[1], *weight.shape[2:])
        return {**state, key: torch.cat([weight, extra], 1)}

    def forward(self, pose_map: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.body(pose_map))  # (N, out, H / 2^(len-1), W / 2^(len-1))
