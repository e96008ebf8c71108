"""Train the VAE (diffusers AutoencoderKL) on character-world renders.

    serialgen train vae --data data/world128 --out runs/vae [--config FILE] [--resume]

Reconstruction L1 + MSE with a small KL term (SD's VAE recipe without the perceptual and
adversarial terms, whose pretrained networks cannot be downloaded here). Trains on both the
non-standard and the standard images, since Stage I decodes standardized ones. The latent
scaling factor (1 / std of latents, as SD's 0.18215) is measured on training images and
written into the saved config.

A second phase can fine-tune the decoder alone (`decoder_only`, from `init_from`): the encoder,
and so every latent the diffusion models were trained on, stays as it was, while the decoder
learns to map latents with a little Gaussian noise added (`latent_noise`, in units of the
scaled latents) to the clean image. A diffusion model's samples land near the latent
manifold, not on it, and a decoder trained on exact latents turns that gap into blotches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_json
from ..data.memory import WorldArrays, batch_indices, to_float, to_uint8
from ..models.backbones import VAE_PRESETS, preset
from ..sheet import grid
from . import loop
from .common import RunDir, make_accelerator
from .config import LoopConfig, Precision, Weights, folder


@dataclass(frozen=True)
class VAETrainConfig(LoopConfig):
    architecture: str = "mini"  # models.backbones.VAE_PRESETS
    init_from: Weights = None  # start from this AutoencoderKL folder (or the bundled one), e.g. a second phase
    crop: tuple[int, int] = (96, 64)  # (H, W) random crops, multiples of 8: the VAE is convolutional
    kl_weight: float = 1e-6
    mse_weight: float = 1.0
    ema_decay: float = 0.999
    eval_images: int = 256
    decoder_only: bool = False  # freeze the encoder (latents unchanged), train the decoder
    latent_noise: float = 0.0  # per image, noise of std U(0, latent_noise) in scaled-latent units


# The paper trains no VAE (it uses Stable Diffusion 1.5's); the mini VAE's recipe
PRESETS = {"mini": VAETrainConfig(steps=3000, batch_size=32, lr=5e-4, warmup=200, mixed_precision=Precision.BF16,
                                  sample_every=1000), "paper": None}


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def random_crops(images: np.ndarray, idx: np.ndarray, crop: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Crops (len(idx), ch, cw, C) at random positions on the 8-pixel latent grid."""
    ch, cw = crop
    h, w = images.shape[1:3]
    ys = rng.integers(0, (h - ch) // 8 + 1, len(idx)) * 8
    xs = rng.integers(0, (w - cw) // 8 + 1, len(idx)) * 8
    return np.stack([images[i, y:y + ch, x:x + cw] for i, y, x in zip(idx, ys, xs)])


@torch.no_grad()
def reconstruct(vae, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Encode to the posterior mean and decode (deterministic)."""
    out = []
    for k in range(0, len(images), batch):
        z = vae.encode(images[k:k + batch]).latent_dist.mode()
        out.append(vae.decode(z).sample)
    return torch.cat(out)


class Autoencode(torch.nn.Module):
    """The training forward as one module, so data-parallel wrappers see the whole pass."""

    def __init__(self, vae, decoder_only: bool = False):
        super().__init__()
        self.vae, self.decoder_only = vae, decoder_only

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (reconstruction (N, 3, H, W), KL (N,)); `noise` (raw latent units) is added to the
        latent before decoding. Decoder-only: the posterior mean, no KL."""
        if self.decoder_only:
            with torch.no_grad():
                z = self.vae.encode(x).latent_dist.mode()
            kl = torch.zeros(len(x), device=x.device)
        else:
            posterior = self.vae.encode(x).latent_dist
            z, kl = posterior.sample(), posterior.kl()
        if noise is not None:
            z = z + noise.to(z.dtype)
        return self.vae.decode(z).sample, kl


def train(cfg: VAETrainConfig, data, out, resume: bool = False, device: str = "auto") -> Path:
    """Train and export to OUT/model. -> that folder."""
    run = RunDir(out, cfg, resume)
    accelerator = make_accelerator(cfg, device)
    torch.manual_seed(cfg.seed)

    # 1. Data: non-standard and standard images of the training split, a held-out sample
    train = WorldArrays.load(data, "train", keys=("image", "standard_image"), limit=cfg.limit or None,
                             progress=accelerator.is_main_process)
    pool = np.concatenate([train.images["image"], train.images["standard_image"][train.first_of_each_character()]])
    del train
    # held-out: half renders, half standard images (one per character, so load enough characters)
    test = WorldArrays.load(data, "validation", keys=("image", "standard_image"), limit=cfg.eval_images * 16, progress=False)
    renders = test.images["image"][:cfg.eval_images // 2]
    standards = test.images["standard_image"][test.first_of_each_character()][:cfg.eval_images - len(renders)]
    eval_images = to_float(np.concatenate([renders, standards]))
    half = len(renders)

    # 2. Model, EMA, optimizer
    vae = preset(VAE_PRESETS, cfg.architecture).build()
    if cfg.init_from is not None:
        from ..models.loading import load_vae

        source = load_vae(folder(cfg.init_from))
        vae.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    if cfg.decoder_only:
        if cfg.init_from is None:
            raise ValueError("decoder_only fine-tunes a trained VAE: set init_from")
        vae.register_to_config(scaling_factor=source.config.scaling_factor)
        for module in (vae.encoder, vae.quant_conv):
            module.requires_grad_(False)
    ema = copy.deepcopy(vae).requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0,
                                  betas=(0.9, 0.99))
    start, elapsed = loop.resume(run, cfg, model=vae, optimizer=optimizer, ema=ema, requested=resume)
    model, optimizer = accelerator.prepare(Autoencode(vae, cfg.decoder_only), optimizer)

    # 3. Training loop: batch = f(seed, step), so resume is exact
    def step(k: int, report: bool) -> loop.StepResult:
        idx = batch_indices(len(pool), cfg.batch_size, k, cfg.seed, accelerator.process_index, accelerator.num_processes)
        x = to_float(random_crops(pool, idx, cfg.crop, np.random.default_rng([cfg.seed, k, 3]))).to(accelerator.device)
        noise = None
        if cfg.latent_noise > 0:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
            shape = (len(x), vae.config.latent_channels, x.shape[2] // 8, x.shape[3] // 8)
            sigma = torch.rand(len(x), 1, 1, 1, generator=g) * cfg.latent_noise / vae.config.scaling_factor
            noise = (sigma * torch.randn(shape, generator=g)).to(accelerator.device)
        with accelerator.autocast():
            recon, kl = model(x, noise)
        recon = recon.float()
        l1 = (recon - x).abs().mean()
        mse = F.mse_loss(recon, x)
        kl = kl.float().mean() / x[0].numel()
        loss = l1 + cfg.mse_weight * mse + cfg.kl_weight * kl
        if not report:
            return loop.StepResult(loss)
        return loop.StepResult(loss, {"loss": loss.item(), "l1": l1.item(), "mse": mse.item(), "kl": kl.item()},
                               {"l1": f"{l1.item():.4f}", "psnr": f"{psnr(recon, x).mean().item():.1f}"})

    def sample(done: int, bar) -> None:
        ema.eval()
        rec = reconstruct(ema, eval_images)
        value = psnr(rec, eval_images).mean().item()
        run.log(done, eval_psnr=value)
        bar.write(f"step {done}: held-out PSNR {value:.2f} dB")
        k = min(8, half, len(eval_images) - half)
        rows = [slice(0, k), slice(half, half + k)]  # renders, then standard images
        show = [to_uint8(eval_images[r]) for r in rows]
        recs = [to_uint8(rec[r]) for r in rows]
        run.save_image(f"recon_{done:06d}.png", grid([list(a) for pair in zip(show, recs) for a in pair]))

    elapsed = loop.run(cfg, run, accelerator, step=step, wrapped=model, optimizer=optimizer, model=vae, start=start,
                       elapsed=elapsed, desc="vae", ema=ema, ema_decay=cfg.ema_decay, sample=sample)

    # 4. Export the EMA weights with their measured latent scaling factor
    if accelerator.is_main_process:
        ema.eval()
        with torch.no_grad():
            sample = to_float(pool[np.random.default_rng(cfg.seed).choice(len(pool), min(512, len(pool)), replace=False)])
            latents = torch.cat([ema.encode(sample[k:k + 64]).latent_dist.mode() for k in range(0, len(sample), 64)])
        scaling = float(1.0 / latents.std())
        if cfg.decoder_only:  # the encoder did not change: keep the factor the diffusion models use
            scaling = float(vae.config.scaling_factor)
        ema.register_to_config(scaling_factor=scaling)
        rec = reconstruct(ema, eval_images)
        value = psnr(rec, eval_images).mean().item()
        ema.save_pretrained(run.path / "model", safe_serialization=True)
        write_json(run.path / "model" / "training.json", run.provenance(
            data=str(data), steps=cfg.steps, scaling_factor=scaling,
            heldout_psnr_db=round(value, 3), wall_time_s=round(elapsed, 1)))
        print(f"saved {run.path / 'model'}: held-out PSNR {value:.2f} dB, scaling factor {scaling:.4f}")
    return run.path / "model"

