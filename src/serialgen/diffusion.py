"""The noise process shared by every model here: Stable Diffusion 1.5's DDPM schedule
(Ho et al. 2020 with SD's scaled-linear betas), epsilon prediction, and the DDIM sampler
(Song et al. 2021) it is sampled with. Models only map (x_t, t, cond) to a prediction;
this module owns the schedule, so training targets and sampling cannot drift apart.
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def noise_scheduler_config() -> dict:
    """Stable Diffusion 1.5's training schedule (also the DDIM sampler's)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def training_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(noise_scheduler_config())


def sampling_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(noise_scheduler_config())


def training_noise(shape: tuple[int, ...], generator: torch.Generator | None = None, offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise for a training step; with `offset`, plus offset x one Gaussian per (sample,
    channel), constant over the image (offset noise, Guttenberg 2023).

    Why: under SD's schedule x_T still holds a little of the image (sqrt(alpha_bar_T) = 0.068),
    and a model trained only on such x_T reads the low-frequency part of its starting noise as
    image content. On 4x24x16 latents the per-channel mean of pure noise has std 0.05, so every
    sample inherits a random tint and the model cannot draw a plain white background. Offset
    noise teaches it to set each channel's mean itself. offset = 0 draws exactly torch.randn.
    """
    noise = torch.randn(shape, generator=generator)
    if offset:
        noise = noise + offset * torch.randn(tuple(shape[:2]) + (1,) * (len(shape) - 2), generator=generator)
    return noise


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights min(SNR(t), gamma) / SNR(t) for epsilon prediction (Min-SNR-gamma,
    Hang et al. 2023): the near-clean timesteps, whose noise is easy to read back and which
    dominate the plain loss's gradients, count less, so training spends itself on the noisy
    timesteps where the layout of the image is decided. gamma = 5 is the paper's choice."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    return torch.clamp(snr, max=gamma) / snr


def latent_masks(masks: np.ndarray, size: tuple[int, int], batch: int = 2048) -> torch.Tensor:
    """Figure masks (N, H, W[, 1]) uint8 -> the share of each latent pixel the figure covers,
    (N, 1, *size) fp16 in [0, 1] (area average over the cell each latent pixel sees)."""
    out = []
    for k in range(0, len(masks), batch):
        m = torch.from_numpy(np.ascontiguousarray(masks[k:k + batch])).float()
        m = (m.reshape(m.shape[:3]) > 127).float().unsqueeze(1)  # (n, 1, H, W)
        out.append(F.adaptive_avg_pool2d(m, tuple(size)).half())
    return torch.cat(out)


def region_weights(share: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + weight x figure share, scaled to mean 1 over each sample.

    Why: a full-body figure covers about a tenth of a 24x16 latent, so the plain loss is
    nine-tenths background, which the base model learns first and well; its figures stayed
    blotches. Weighting the figure's pixels moves the loss's weight onto the figure's outline
    and limbs without changing the loss's scale (hence the learning rate's meaning)."""
    w = 1.0 + weight * share.float()
    return w / w.mean(dim=(1, 2, 3), keepdim=True)


def denoising_error(model, x_t: torch.Tensor, t: torch.Tensor, cond: dict, noise: torch.Tensor,
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared epsilon error per element (N, C, h, w) of model(x_t, t, cond) against `noise`,
    times `weights` (N, 1, h, w) when given."""
    error = F.mse_loss(model(x_t, t, cond).float(), noise.float(), reduction="none")
    return error if weights is None else error * weights.to(error)


def epsilon_loss(model, x0: torch.Tensor, cond: dict, scheduler, generator: torch.Generator | None = None,
                 offset_noise: float = 0.0, weights: torch.Tensor | None = None, per_sample: bool = False,
                 snr_gamma: float = 0.0) -> torch.Tensor:
    """Denoising loss (DDPM eq. 14, 'simple'): noise x0 (N, C, h, w) at uniform timesteps and
    regress the noise. model(x_t, t, cond) -> epsilon prediction; every model here (the base UNet,
    `Standardizer`, `Personalizer`) is trained and scored through this one function.
    `offset_noise`: see training_noise. `weights` (N, 1, h, w), e.g. `region_weights`: per latent
    pixel weights of the squared error. per_sample: average each sample's error first, then the
    samples, weighted by Min-SNR-gamma when snr_gamma > 0 (`min_snr_weights`); the plain mean over
    all elements is the same number up to float rounding."""
    noise = training_noise(x0.shape, generator, offset_noise).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    if weights is None and not per_sample:
        return F.mse_loss(model(x_t, t, cond).float(), noise.float())
    error = denoising_error(model, x_t, t, cond, noise, weights)
    if not per_sample:
        return error.mean()
    loss = error.mean((1, 2, 3))
    if snr_gamma:
        loss = loss * min_snr_weights(scheduler, t, snr_gamma).to(loss.device)
    return loss.mean()
