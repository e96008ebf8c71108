"""Train the text-to-image base model: a diffusers UNet2DConditionModel on VAE latents,
conditioned on the CLIP text tower's last hidden states (Stable Diffusion's recipe, Rombach
et al. 2022, eq. 2: epsilon prediction under SD's scaled-linear DDPM schedule), with caption
dropout so classifier-free guidance works at sampling time (Ho & Salimans 2022).

    serialgen train t2i --data data/world128 --out runs/t2i [--config FILE] [--resume]

The VAE and CLIP default to the bundled mini weights; `vae = "..."` and `clip = "..."` in
the config point at other folders; `init_from = "..."` starts the UNet from a trained one (a
second phase with its own schedule). Latents are computed once per (world, VAE) and cached
beside the data (serialgen.data.latents), caption embeddings once per run in OUT. Samples are drawn by
diffusers' StableDiffusionPipeline with a DDIM scheduler, 20 steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..atomic import write_json
from ..data.latents import cached_latents
from ..data.memory import WorldArrays, batch_indices
from ..diffusion import epsilon_loss, latent_masks, region_weights, sampling_scheduler, training_scheduler
from ..models.backbones import UNET_PRESETS, preset
from ..sheet import grid
from . import loop
from .common import RunDir, make_accelerator
from .config import LoopConfig, Source, Weights, describe, folder


@dataclass(frozen=True)
class T2ITrainConfig(LoopConfig):
    architecture: str = "mini"  # models.backbones.UNET_PRESETS
    vae: Weights = Source.BUNDLED  # an AutoencoderKL folder
    clip: Weights = Source.BUNDLED  # a CLIPModel folder with tokenizer/
    init_from: Weights = None  # start from this UNet (a unet/ folder, a pipeline folder, or the bundled one)
    caption_dropout: float = 0.1
    offset_noise: float = 0.0  # per (sample, channel) noise offset (diffusion.training_noise); 0.1 is usual
    snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weights (diffusion.min_snr_weights); 5 is usual
    figure_weight: float = 0.0  # > 0: the figure's latent pixels weigh 1 + this (diffusion.region_weights)
    ema_decay: float = 0.999
    guidance_scale: float = 5.0
    sample_steps: int = 20


# The paper trains no base model (it uses Stable Diffusion 1.5); the mini base's recipe. fp32:
# measured faster than bf16 autocast for this small UNet on CPU
PRESETS = {"mini": T2ITrainConfig(steps=8000, batch_size=64, lr=4e-4, warmup=300), "paper": None}


@torch.no_grad()
def encode_captions(text_encoder, tokenizer, captions: list[str], batch: int = 256, progress: bool = True
                    ) -> torch.Tensor:
    """Captions -> last hidden states (N, L, D) fp16, L = the tokenizer's max length."""
    out = []
    for k in tqdm(range(0, len(captions), batch), desc="encoding captions", disable=not progress):
        ids = tokenizer(captions[k:k + batch], padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        out.append(text_encoder(ids).last_hidden_state.half())
    return torch.cat(out)


def make_pipeline(unet, vae, text_encoder, tokenizer):
    """Our components in diffusers' StableDiffusionPipeline with a DDIM scheduler."""
    from ..models.loading import sd_pipeline

    return sd_pipeline(unet, vae, text_encoder, tokenizer)


def train(cfg: T2ITrainConfig, data, out, resume: bool = False, device: str = "auto") -> Path:
    """Train and export the EMA UNet and its sampling scheduler to OUT/model. -> that folder."""
    from ..models.loading import load_clip_text, load_vae

    run = RunDir(out, cfg, resume)
    accelerator = make_accelerator(cfg, device)
    torch.manual_seed(cfg.seed)
    main_process = accelerator.is_main_process

    # 1. Frozen encoders and the cached training set: latents and caption embeddings
    vae = load_vae(folder(cfg.vae)).eval().requires_grad_(False)
    text_encoder, tokenizer = load_clip_text(folder(cfg.clip))
    text_encoder.eval().requires_grad_(False)
    cache = run.path / "cache.safetensors"
    if cache.exists():
        cached = load_file(str(cache))
        latents, text, empty = cached["latents"], cached["text"], cached["empty"]
        captions = None
    else:
        train = WorldArrays.load(data, "train", keys=("image",), limit=cfg.limit or None, progress=main_process)
        captions = [m["caption"] for m in train.meta]
        latents = cached_latents(vae, train.images["image"], data, "train", run.path, progress=main_process,
                                 write=main_process)
        text = encode_captions(text_encoder, tokenizer, captions, progress=main_process)
        empty = encode_captions(text_encoder, tokenizer, [""], progress=False)[0]
        if main_process:
            tmp = cache.with_suffix(".tmp")
            save_file({"latents": latents.contiguous(), "text": text.contiguous(), "empty": empty.contiguous()}, str(tmp))
            tmp.replace(cache)
        del train
    masks = figure_masks(data, run.path, cfg, latents.shape[-2:], main_process) if cfg.figure_weight else None
    test = WorldArrays.load(data, "validation", keys=("image",), limit=8, progress=False)
    prompts = [m["caption"] for m in test.meta[:8]]

    # 2. UNet, EMA, optimizer, noise schedule
    unet = preset(UNET_PRESETS, cfg.architecture).build()
    if cfg.init_from is not None:
        from ..models.loading import load_unet

        unet.load_state_dict(load_unet(folder(cfg.init_from)).state_dict())
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, elapsed = loop.resume(run, cfg, model=unet, optimizer=optimizer, ema=ema, requested=resume)
    model, optimizer = accelerator.prepare(unet, optimizer)
    noise_scheduler = training_scheduler()

    # 3. Training loop: noise, timestep and dropout all follow (seed, step)
    def step(k: int, report: bool) -> loop.StepResult:
        idx = batch_indices(len(latents), cfg.batch_size, k, cfg.seed, accelerator.process_index,
                            accelerator.num_processes)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + k)
        x0 = latents[idx].float()  # (B, 4, h, w)
        cond = text[idx].float()  # (B, L, D)
        drop = torch.rand(len(idx), generator=g) < cfg.caption_dropout
        cond = torch.where(drop.view(-1, 1, 1), empty.float().expand_as(cond), cond)
        weights = region_weights(masks[idx], cfg.figure_weight) if masks is not None else None
        with accelerator.autocast():
            loss = epsilon_loss(lambda x, t, c: model(x, t, c).sample, x0.to(accelerator.device),
                                cond.to(accelerator.device), noise_scheduler, g, cfg.offset_noise, weights,
                                per_sample=True, snr_gamma=cfg.snr_gamma)
        return loop.StepResult(loss)

    def sample(done: int, bar) -> None:
        sheet = sample_sheet(make_pipeline(ema.eval(), vae, text_encoder, tokenizer), prompts, test, cfg)
        run.save_image(f"samples_{done:06d}.png", sheet)

    elapsed = loop.run(cfg, run, accelerator, step=step, wrapped=model, optimizer=optimizer, model=unet, start=start,
                       elapsed=elapsed, desc="t2i", ema=ema, ema_decay=cfg.ema_decay, sample=sample)

    # 4. Export the EMA UNet and its sampling scheduler
    if main_process:
        ema.save_pretrained(run.path / "model" / "unet", safe_serialization=True)
        sampling_scheduler().save_pretrained(run.path / "model" / "scheduler")
        write_json(run.path / "model" / "training.json", run.provenance(
            data=str(data), steps=cfg.steps, vae=describe(cfg.vae), clip=describe(cfg.clip),
            wall_time_s=round(elapsed, 1)))
        print(f"saved {run.path / 'model'}")
    return run.path / "model"


def figure_masks(data, out, cfg: T2ITrainConfig, size, write: bool) -> torch.Tensor:
    """The training renders' figure shares per latent pixel (diffusion.latent_masks), cached in
    OUT (masks.safetensors) beside the latents; same order and limit as the latents."""
    path = out / "masks.safetensors"
    if path.exists():
        masks = load_file(str(path))["masks"]
        if tuple(masks.shape[-2:]) == tuple(size):
            return masks
    train = WorldArrays.load(data, "train", keys=("mask",), limit=cfg.limit or None, progress=write)
    masks = latent_masks(train.images["mask"], size)
    if write:
        tmp = path.with_suffix(".tmp")
        save_file({"masks": masks.contiguous()}, str(tmp))
        tmp.replace(path)
    return masks


@torch.no_grad()
def sample_sheet(pipe, prompts: list[str], test: WorldArrays, cfg: T2ITrainConfig) -> np.ndarray:
    """Row 1: held-out renders; row 2: samples from their captions (seeded)."""
    g = torch.Generator().manual_seed(cfg.seed)
    pipe.set_progress_bar_config(disable=True)
    h, w = test.images["image"].shape[1:3]
    images = pipe(prompts, height=h, width=w, num_inference_steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale,
                  generator=g, output_type="np").images
    samples = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    return grid([list(test.images["image"][:len(prompts)]), list(samples)])
