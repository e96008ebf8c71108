"""CLIP image preprocessing shared by training, Stage II and evaluation.

Images are padded to a square (white, the standard background) rather than centre-cropped,
so a 2:3 full-body image keeps its head and feet, then resized and normalised with CLIP's
mean and standard deviation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(images: torch.Tensor, size: int, pad_value: float = 1.0) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, 3, size, size) CLIP-normalised, padded to square."""
    n, c, h, w = images.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    x = F.pad(images, (left, side - w - left, top, side - h - top), value=pad_value)  # (N, 3, side, side)
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x + 1) / 2
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
