"""Image metrics shared by training reports and `serialgen eval`: PSNR and SSIM (torchmetrics)."""

from __future__ import annotations

import numpy as np
import torch


def _float(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) array or list of PIL images -> float (N, 3, H, W) in [0, 1]."""
    a = np.stack([np.asarray(im) for im in images]) if isinstance(images, (list, tuple)) else np.asarray(images)
    return torch.from_numpy(a.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def psnr(pred, target) -> np.ndarray:
    """Per-image PSNR in dB of 8-bit images."""
    mse = ((_float(pred) - _float(target)) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).numpy()


def ssim(pred, target) -> np.ndarray:
    """Per-image SSIM (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5) of 8-bit images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(_float(pred), _float(target), data_range=1.0,
                                               reduction="none").numpy()
