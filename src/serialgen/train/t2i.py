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
import time
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..data.latents import cached_latents
from ..data.memory import WorldArrays, batch_indices
from ..diffusion import epsilon_loss, latent_masks, region_weights, sampling_scheduler, training_scheduler
from ..models.backbones import UNET_PRESETS, preset
from ..sheet import grid
from .checkpoint import ema_update, has_checkpoint, load_checkpoint, save_checkpoint
from .common import RunDir, load_config, optimizer_step, set_lr, write_json


@dataclass(frozen=True)
class T2ITrainConfig:
    preset: str = "mini"
    vae: str = ""  # folder of an AutoencoderKL; "" = the bundled mini VAE
    clip: str = ""  # folder of a CLIPModel with tokenizer/; "" = the bundled mini CLIP
    init_from: str = ""  # start from this UNet (a unet/ folder or a pipeline folder; "bundled"), e.g. a second phase
    steps: int = 8000
    batch_size: int = 64
    lr: float = 4e-4
    schedule: str = "cosine"  # or "constant", to extend a run by raising steps
    warmup: int = 300
    caption_dropout: float = 0.1
    offset_noise: float = 0.0  # per (sample, channel) noise offset (diffusion.training_noise); 0.1 is usual
    snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weights (diffusion.min_snr_weights); 5 is usual
    figure_weight: float = 0.0  # > 0: the figure's latent pixels weigh 1 + this (diffusion.region_weights)
    ema_decay: float = 0.999
    mixed_precision: str = "no"  # measured: fp32 is faster than bf16 autocast for this small UNet on CPU
    checkpoint_every: int = 250
    sample_every: int = 1000
    guidance_scale: float = 5.0
    sample_steps: int = 20
    limit: int = 0
    seed: int = 0


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


def main(args) -> int:
    from accelerate import Accelerator

    from ..models.loading import load_clip_text, load_vae

    cfg = load_config(T2ITrainConfig, args.config)
    run = RunDir(args.out, cfg, args.resume)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    main_process = accelerator.is_main_process

    # 1. Frozen encoders and the cached training set: latents and caption embeddings
    vae = load_vae(cfg.vae or None).eval().requires_grad_(False)
    text_encoder, tokenizer = load_clip_text(cfg.clip or None)
    text_encoder.eval().requires_grad_(False)
    cache = run.path / "cache.safetensors"
    if cache.exists():
        cached = load_file(str(cache))
        latents, text, empty = cached["latents"], cached["text"], cached["empty"]
        captions = None
    else:
        train = WorldArrays.load(args.data, "train", keys=("image",), limit=cfg.limit or None, progress=main_process)
        captions = [m["caption"] for m in train.meta]
        latents = cached_latents(vae, train.images["image"], args.data, "train", run.path, progress=main_process,
                                 write=main_process)
        text = encode_captions(text_encoder, tokenizer, captions, progress=main_process)
        empty = encode_captions(text_encoder, tokenizer, [""], progress=False)[0]
        if main_process:
            tmp = cache.with_suffix(".tmp")
            save_file({"latents": latents.contiguous(), "text": text.contiguous(), "empty": empty.contiguous()}, str(tmp))
            tmp.replace(cache)
        del train
    masks = figure_masks(args.data, run.path, cfg, latents.shape[-2:], main_process) if cfg.figure_weight else None
    test = WorldArrays.load(args.data, "test", keys=("image",), limit=8, progress=False)
    prompts = [m["caption"] for m in test.meta[:8]]

    # 2. UNet, EMA, optimizer, noise schedule
    unet = preset(UNET_PRESETS, cfg.preset).build()
    if cfg.init_from:
        from ..models.loading import load_unet

        unet.load_state_dict(load_unet(None if cfg.init_from == "bundled" else cfg.init_from).state_dict())
    ema = copy.deepcopy(unet).requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, elapsed = 0, 0.0
    if args.resume and has_checkpoint(run.path):
        state = load_checkpoint(run.path, model=unet, optimizer=optimizer, ema=ema)
        start, elapsed = state["step"], state["extra"].get("elapsed_s", 0.0)
        accelerator.print(f"resumed from step {start}")
    model, optimizer = accelerator.prepare(unet, optimizer)
    noise_scheduler = training_scheduler()

    # 3. Training loop: noise, timestep and dropout all follow (seed, step)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="t2i", disable=not main_process)
    t0 = time.time()
    for step in bar:
        set_lr(optimizer, cfg, step)
        idx = batch_indices(len(latents), cfg.batch_size, step, cfg.seed, accelerator.process_index, accelerator.num_processes)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        x0 = latents[idx].float()  # (B, 4, h, w)
        cond = text[idx].float()  # (B, L, D)
        drop = torch.rand(len(idx), generator=g) < cfg.caption_dropout
        cond = torch.where(drop.view(-1, 1, 1), empty.float().expand_as(cond), cond)
        weights = region_weights(masks[idx], cfg.figure_weight) if masks is not None else None
        with accelerator.autocast():
            loss = epsilon_loss(lambda x, t, c: model(x, t, c).sample, x0.to(accelerator.device),
                                cond.to(accelerator.device), noise_scheduler, g, cfg.offset_noise, weights,
                                per_sample=True, snr_gamma=cfg.snr_gamma)
        optimizer_step(accelerator, model, optimizer, loss)
        ema_update(ema, unet, cfg.ema_decay if step > cfg.warmup else 0.0)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            run.log(step, loss=loss.item(), lr=optimizer.param_groups[0]["lr"])
        done = step + 1
        if main_process and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            save_checkpoint(run.path, step=done, model=unet, optimizer=optimizer, ema=ema,
                            extra={"elapsed_s": elapsed + time.time() - t0})
        if main_process and (done % cfg.sample_every == 0 or done == cfg.steps):
            sheet = sample_sheet(make_pipeline(ema.eval(), vae, text_encoder, tokenizer), prompts, test, cfg)
            run.save_image(f"samples_{done:06d}.png", sheet)

    # 4. Export the EMA UNet and its sampling scheduler
    if main_process:
        ema.save_pretrained(run.path / "model" / "unet", safe_serialization=True)
        sampling_scheduler().save_pretrained(run.path / "model" / "scheduler")
        write_json(run.path / "model" / "training.json", run.provenance(
            data=str(args.data), steps=cfg.steps, vae=cfg.vae or "bundled mini", clip=cfg.clip or "bundled mini",
            wall_time_s=round(elapsed + time.time() - t0, 1)))
        print(f"saved {run.path / 'model'}")
    return 0


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
