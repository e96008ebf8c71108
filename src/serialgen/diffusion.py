"""The noise process shared by every model here: Stable Diffusion 1.5's DDPM schedule
(Ho et al. 2020 with SD's scaled-linear betas), epsilon prediction, and the DDIM sampler
(Song et al. 2021) it is sampled with. Models only map (x_t, t, cond) to a prediction;
this module owns the schedule, so training targets and sampling cannot drift apart.
"""

from __future__ import annotations

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


def epsilon_loss(model, x0: torch.Tensor, cond: dict, scheduler, generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising loss (DDPM eq. 14, 'simple'): noise x0 (N, C, h, w) at uniform timesteps and
    regress the noise. model(x_t, t, cond) -> epsilon prediction."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=generator).to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(model(x_t, t, cond).float(), noise.float())
