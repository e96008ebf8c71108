"""Train the Stage I standardizer (SerialGen §3.3): (non-standard render, standard render) pairs
of the character world, backgrounds re-composited on the fly from the RGBA foregrounds as
the paper does with its 9,186 backgrounds.

    serialgen train stage1 --data data/world128 --out runs/stage1 [--config FILE] [--no-fbdm] [--no-rpim] [--resume]

Both UNets start from one UNet (the bundled mini text-to-image UNet by default; SD1.5's
unet/ at paper scale). The ReferenceNet, denoising UNet, PoseGuider, RPIM encoder and FBDM
vectors train; the VAE and CLIP image encoder are frozen. Reference and CLIP embedding are
dropped together (~10%) for classifier-free guidance, as Animate Anyone. The target pose is
the character's standard pose map, or (half the time) the template A-pose used at
inference, so the model learns to read body proportions from the reference when given the
template.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import write_json
from ..data.heldout import held_out_references
from ..data.latents import encode_latents
from ..data.memory import WorldArrays, batch_indices
from ..diffusion import epsilon_loss, latent_masks, region_weights, sampling_scheduler, training_scheduler
from ..metrics import psnr, ssim
from ..models.backbones import UNET_PRESETS, preset
from ..models.pose_guider import PoseGuider
from ..models.standard_pose import StandardPoseEstimator
from ..models.standardizer import Standardizer, StandardizerConfig
from ..pose import draw_pose_map
from ..preprocess import Reference
from ..sheet import grid
from ..silhouette import colour_silhouette
from ..world.backgrounds import SCENES, render_background
from ..world.generator import CharacterWorld
from . import loop
from .common import RunDir, lr_factor, make_accelerator
from .config import LoopConfig, Precision, Source, Weights, describe, folder


@dataclass(frozen=True)
class Stage1TrainConfig(LoopConfig):
    unet: Weights = Source.BUNDLED  # both UNets start here: a UNet/SD folder, the bundled mini t2i UNet, or scratch
    architecture: str = "mini"  # models.backbones.UNET_PRESETS, for unet = scratch
    vae: Weights = Source.BUNDLED  # an AutoencoderKL folder
    clip: Weights = Source.BUNDLED  # a CLIP image encoder folder
    fbdm: bool = True
    # FBDM's v_f, v_b start at zero and are single vectors: at the UNet's rate they barely move in a
    # short run (|v| <= 0.003 after 500 steps at 1e-4), so they may get a rate of their own
    fbdm_lr_scale: float = 1.0
    rpim: bool = True
    # RPIM's per-block convs start at zero too (its pose encoder does not): the same reasoning
    rpim_lr_scale: float = 1.0
    # a (self + cross) attention transformer at every latent level, the full 24x16 one included
    # (models.backbones.attention_at_every_level); new transformers start as no-ops
    attention_every_level: bool = False
    # > 0: the standard figure's latent pixels weigh 1 + this in the loss (diffusion.region_weights);
    # a standard render is about nine-tenths white canvas
    figure_weight: float = 0.0
    # > 0: the figure's latent pixels below its standard pose's hips (legs) or above its neck (head)
    # weigh this much more again (`part_weights`): bottoms, shoes and hair are what the fifth phase
    # reads back least (judge, 64 validation characters: bottom colour 0.14, shoes 0.09, hair colour
    # 0.17 against 0.56, 0.53 and 0.32 from the true render, top colour 0.41 against 0.56;
    # scripts/appearance_ceiling.py), and its feet run long
    legs_weight: float = 0.0
    head_weight: float = 0.0
    pose_channels: tuple[int, ...] = (16, 32, 96, 256)
    # the PoseGuider also reads the reference's colour silhouette at the target pose (StandardizerConfig
    # colour_prior); from a standardizer without it, the new input channels start at zero
    colour_prior: bool = False
    init_from: Weights = None  # start the whole standardizer from this Stage I folder (or the bundled one); overrides unet
    offset_noise: float = 0.0  # per (sample, channel) noise offset (diffusion.training_noise); 0.1 is usual
    reference_dropout: float = 0.1  # reference bank and CLIP embedding dropped together
    template_pose: float = 0.5  # share of steps whose target pose is the template A-pose
    # fit a StandardPoseEstimator (models/standard_pose.py) on the training keypoints first: at
    # inference it predicts each reference's standard pose instead of the template
    standard_pose: bool = False
    standard_pose_steps: int = 3000
    recomposite: float = 0.5  # share of references laid over a fresh background
    # share of those fresh backgrounds that are one saturated colour (purple, green, red...), the
    # case FBDM exists for: without it the backdrop's colour leaks into the clothes
    solid_backgrounds: float = 0.0
    backgrounds: int = 512  # size of the pre-rendered background pool
    ema_decay: float = 0.999
    sample_steps: int = 20
    guidance_scale: float = 2.5
    eval_samples: int = 64  # held-out characters scored (PSNR/SSIM) at the end

    def __post_init__(self):
        super().__post_init__()
        for name in ("figure_weight", "legs_weight", "head_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("template_pose", "recomposite", "solid_backgrounds", "reference_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a share: it must be in [0, 1], got {getattr(self, name)}")


PRESETS = {
    # the first mini phase's recipe (later phases override it in configs/mini/stage1_phase*.toml)
    "mini": Stage1TrainConfig(steps=4000, batch_size=32, lr=2e-4, warmup=200),
    # SerialGen §4.1: both UNets from SD1.5, the VAE and CLIP image encoder frozen; AdamW at 1e-5,
    # batch 4 on each of 8 GPUs (batch_size is per process), 512x768 images (the data's size), 50k
    # steps; bf16 on GPUs. The model folders are given by a TOML file (configs/paper/stage1.toml)
    "paper": Stage1TrainConfig(steps=50_000, batch_size=4, lr=1e-5, warmup=500, mixed_precision=Precision.BF16,
                               checkpoint_every=1000, sample_every=5000, pose_channels=(16, 32, 96, 256)),
}


class Stage1Objective(torch.nn.Module):
    """The whole training forward in one module call, so accelerate's DDP sees every parameter use."""

    def __init__(self, model: Standardizer, offset_noise: float = 0.0):
        super().__init__()
        self.model = model
        self.offset_noise = offset_noise

    def forward(self, ref_latents, embeds, background, ref_pose, target_pose, keep, x0, scheduler, generator,
                weights=None, prior=None):
        bank = self.model.encode_reference(ref_latents, embeds, background, ref_pose)
        bank.keep = keep
        cond = {"reference": bank, "pose": self.model.pose_features(target_pose, prior),
                "image": torch.where(keep.view(-1, 1, 1), embeds, torch.zeros_like(embeds))}  # (B, 1, D)
        return epsilon_loss(self.model, x0, cond, scheduler, generator, self.offset_noise, weights)


def part_weights(standard_keypoints: np.ndarray, size: tuple[int, int], height: int, legs: float,
                 head: float) -> torch.Tensor:
    """standard_keypoints: (C, 18, 2+) each character's standard pose in canvas pixels (COCO-18) ->
    (C, 1, h, w) `legs` on the latent rows whose centre lies below its hip line (keypoints 8, 11),
    `head` on those above its neck (keypoint 1), 0 elsewhere (size: the latent (h, w)). Added to
    figure_weight, it is `diffusion.region_weights`'s per-pixel weight."""
    kp = torch.as_tensor(np.asarray(standard_keypoints)[..., :2], dtype=torch.float32)
    rows = (torch.arange(size[0], dtype=torch.float32) + 0.5) * (height / size[0])  # each latent row's centre
    hips, neck = kp[:, [8, 11], 1].mean(1), kp[:, 1, 1]
    w = legs * (rows[None] >= hips[:, None]).float() + head * (rows[None] < neck[:, None]).float()  # (C, h)
    return w[:, None, :, None].expand(-1, 1, -1, size[1]).contiguous()


def template_keypoints(meta: list[dict], width: int, height: int) -> tuple:
    """Median standard keypoints over characters, as (x / W, y / H, visible) rows."""
    kp = np.array([m["standard_keypoints"] for m in meta], np.float64)  # (C, 18, 3)
    xy = np.median(kp[..., :2], axis=0) / np.array([width, height])
    seen = (kp[..., 2] > 0).mean(0) >= 0.5
    return tuple((round(float(x), 5), round(float(y), 5), float(v)) for (x, y), v in zip(xy, seen, strict=True))


def solid_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One saturated colour over the frame (H, W, 3) uint8, with a faint vertical gradient."""
    import colorsys

    rgb = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.35, 1.0)))
    shade = 1.0 + rng.uniform(-0.1, 0.1) * np.linspace(-1, 1, height)[:, None, None]  # (H, 1, 1)
    return np.clip(np.round(255 * rgb * shade), 0, 255).astype(np.uint8).repeat(width, 1)


def load_unet(cfg: Stage1TrainConfig):
    if cfg.unet is Source.SCRATCH:
        return preset(UNET_PRESETS, cfg.architecture).build()
    from ..models.loading import load_unet as load

    return load(folder(cfg.unet))


def parameter_groups(model: torch.nn.Module, fbdm_lr_scale: float, rpim_lr_scale: float = 1.0) -> list[dict]:
    """The trainable parameters in three groups: FBDM's v_f, v_b (rate scaled by fbdm_lr_scale, no
    weight decay: it would pull the offsets back to zero), RPIM's per-block convs (rate scaled by
    rpim_lr_scale) and everything else. Empty groups are left out."""
    fbdm, rpim, rest = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (fbdm if name.endswith((".v_f", ".v_b")) else rpim if ".pose_proj." in name else rest).append(p)
    groups = [{"params": rest}]
    if fbdm:
        groups.append({"params": fbdm, "lr_scale": fbdm_lr_scale, "weight_decay": 0.0})
    if rpim:
        groups.append({"params": rpim, "lr_scale": rpim_lr_scale})
    return groups


def adapter_norms(model: Standardizer) -> dict[str, float]:
    """RMS of FBDM's vectors and RPIM's per-block conv weights over all layers: how far each left
    its zero start (0.0 where the model has none)."""
    def rms(tensors):
        tensors = [t.detach().float().flatten() for t in tensors]
        return round(float(torch.cat(tensors).pow(2).mean().sqrt()), 6) if tensors else 0.0

    adapters = list(model.adapters.values())
    return {"fbdm_v_f": rms([a.v_f for a in adapters if a.v_f is not None]),
            "fbdm_v_b": rms([a.v_b for a in adapters if a.v_b is not None]),
            "rpim_conv": rms([a.pose_proj.weight for a in adapters if a.pose_proj is not None])}


def fit_standard_pose(estimator: StandardPoseEstimator, keypoints: np.ndarray, standard: np.ndarray, width: int,
                      height: int, steps: int = 3000, batch: int = 512, lr: float = 2e-3, seed: int = 0,
                      progress: bool = True) -> list[float]:
    """Train on (reference keypoints (N, 18, 3), standard keypoints (N, 18, 3)) pairs in canvas pixels:
    mean squared error over the standard keypoints visible in both the truth and the template, in
    canvas fractions, cosine rate. Deterministic for a seed. -> the loss every 100 steps."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.asarray(keypoints, np.float32))
    scale = torch.tensor([width, height], dtype=torch.float32)
    target = torch.from_numpy(np.asarray(standard, np.float32))
    offsets = target[..., :2] / scale - estimator.template[:, :2]  # (N, 18, 2)
    weight = ((target[..., 2] > 0) & (estimator.template[:, 2] > 0)).float()[..., None]  # (N, 18, 1)
    optimizer = torch.optim.AdamW(estimator.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for step in tqdm(range(steps), desc="standard pose", disable=not progress, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, 0, steps)
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = (((estimator.offsets(x[idx]) - offsets[idx]) ** 2) * weight[idx]).sum() / weight[idx].sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            losses.append(loss.item())
    return losses


def initial_model(cfg: Stage1TrainConfig, config: StandardizerConfig) -> Standardizer:
    """Both UNets from one checkpoint, or the whole standardizer from `init_from` (its own UNet
    architecture, whatever the bundled base is now); with attention_every_level, the new attention
    levels and their FBDM/RPIM adapters start as no-ops, so the start computes what the source does."""
    from ..models.backbones import attention_at_every_level

    source = None
    if cfg.init_from is not None:
        from ..models.loading import bundled

        source = Standardizer.from_pretrained(folder(cfg.init_from) or bundled("stage1")).float()
        unet = source.denoiser  # from_unet copies it
    else:
        unet = load_unet(cfg).float()
    if cfg.attention_every_level:
        unet = attention_at_every_level(unet)
    model = Standardizer.from_unet(unet, config)
    if source is not None:
        state = source.state_dict()
        if config.colour_prior and not source.config.colour_prior:  # the colour prior's inputs start at zero
            state = PoseGuider.widened_state(state, model.pose_guider.in_channels, prefix="pose_guider.")
        missing, unexpected = model.load_state_dict(state, strict=False)
        new = [k for k in missing if ".attentions." not in k and not k.startswith(("adapters.", "standard_pose."))]
        if unexpected or new:
            raise ValueError(f"{cfg.init_from} does not match this config's standardizer (fbdm, rpim, pose_channels): "
                             f"{(unexpected + new)[:3]}")
    return model


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


@dataclass
class Pairs:
    """One training batch's pixels and poses (uint8 images, before encoding)."""

    reference: np.ndarray  # (B, H, W, 3) the posed renders, some over fresh backdrops
    foreground: np.ndarray  # (B, H, W, 4) their RGBA figures
    characters: np.ndarray  # (B,) character rows: the standard image each one targets
    target_pose: np.ndarray  # (B, H, W, 3) the standard pose map, or the template's
    reference_pose: np.ndarray  # (B, H, W, 3) the render's own pose map (RPIM)
    prior: np.ndarray | None  # (B, H, W, 3) colour silhouettes at the target pose, with colour_prior
    keep: np.ndarray  # (B,) bool: the reference is kept (else dropped for guidance)

    def tensors(self, device) -> dict[str, torch.Tensor | None]:
        """The batch as the objective reads it, on `device`: images and pose maps in [-1, 1] (N, 3, H,
        W), the FBDM background mask (N, 1, H, W), the keep flags (N,), the colour prior or None."""
        return {"pixels": to_tensor(self.reference).to(device),
                "background": 1.0 - torch.from_numpy(self.foreground[..., 3].astype(np.float32) / 255.0)[:, None].to(device),
                "reference_pose": to_tensor(self.reference_pose).to(device),
                "target_pose": to_tensor(self.target_pose).to(device), "keep": torch.from_numpy(self.keep).to(device),
                "prior": None if self.prior is None else to_tensor(self.prior).to(device)}


class PairMaker:
    """Draws a training batch from the training split: re-composited backdrops (a share of them one
    saturated colour), the target pose (the character's standard pose or the template A-pose), the
    reference's pose map, the colour prior and the guidance dropout, all from one rng."""

    def __init__(self, cfg: Stage1TrainConfig, train: WorldArrays, template: tuple, backgrounds: np.ndarray):
        self.cfg, self.train, self.backgrounds = cfg, train, backgrounds
        self.height, self.width = train.images["image"].shape[1:3]
        self.keypoints = np.array([m["keypoints"] for m in train.meta], np.float32)  # (N, 18, 3)
        self.standard_keypoints = np.array([m["standard_keypoints"] for m in train.meta], np.float32)  # (N, 18, 3)
        self.template_px = np.array(template) * np.array([self.width, self.height, 1.0])  # (18, 3) canvas pixels
        self.template_map = draw_pose_map(self.template_px, self.width, self.height)

    def __call__(self, idx: np.ndarray, rng: np.random.Generator) -> Pairs:
        cfg, train, w, h = self.cfg, self.train, self.width, self.height
        foreground = train.images["foreground"][idx]
        ref = train.images["image"][idx].copy()
        for k in np.flatnonzero(rng.random(len(idx)) < cfg.recomposite):
            backdrop = (solid_background(rng, w, h) if cfg.solid_backgrounds and rng.random() < cfg.solid_backgrounds
                        else self.backgrounds[rng.integers(len(self.backgrounds))])
            ref[k] = CharacterWorld.composite(foreground[k], backdrop)
        chars = train.character_row[idx]
        use_template = rng.random(len(idx)) < cfg.template_pose
        target_pose = np.stack([self.template_map if use_template[k] else train.characters["standard_pose_map"][c]
                                for k, c in enumerate(chars)])
        ref_pose = np.stack([draw_pose_map(self.keypoints[i], w, h) for i in idx])
        prior = None
        if cfg.colour_prior:  # each reference's part colours, drawn where its target pose puts the parts
            prior = np.stack([colour_silhouette(
                Reference(ref[k], foreground[k][..., 3].astype(np.float32) / 255.0, self.keypoints[i]),
                self.template_px if use_template[k] else self.standard_keypoints[i], w, h, normalized=False)
                for k, i in enumerate(idx)])
        keep = rng.random(len(idx)) >= cfg.reference_dropout
        return Pairs(ref, foreground, chars, target_pose, ref_pose, prior, keep)


def train(cfg: Stage1TrainConfig, data, out, resume: bool = False, device: str = "auto") -> Path:
    """Train, score on held-out characters and export the EMA standardizer to OUT/model. -> that folder."""
    from accelerate import DistributedDataParallelKwargs

    from ..models.loading import load_image_encoder, load_vae
    from ..pipelines.standardize import StandardizePipeline, encode_images

    run = RunDir(out, cfg, resume)
    # the ReferenceNet's output layers never reach the loss: DDP must allow unused parameters
    accelerator = make_accelerator(cfg, device, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    torch.manual_seed(cfg.seed)
    main_process = accelerator.is_main_process
    device = accelerator.device

    # 1. Data: renders and foregrounds per sample, standard image and pose once per character
    weighted = bool(cfg.figure_weight or cfg.legs_weight or cfg.head_weight)
    per_character = ("standard_image", "standard_pose_map") + (("standard_mask",) if weighted else ())
    train = WorldArrays.load(data, "train", keys=("image", "foreground"), limit=cfg.limit or None,
                             per_character=per_character, progress=main_process)
    test = WorldArrays.load(data, "validation", keys=("image", "foreground"), limit=cfg.eval_samples * 16,
                            per_character=("standard_image",), progress=False)
    h, w = train.images["image"].shape[1:3]
    first = train.first_of_each_character()
    template = template_keypoints([train.meta[i] for i in first], w, h)
    pool_rng = np.random.default_rng([cfg.seed, 99])
    backgrounds = np.stack([render_background(str(pool_rng.choice(SCENES)), w, h, pool_rng,
                                              float(np.clip(pool_rng.normal(0.6, 0.1), 0.2, 0.9)))
                            for _ in range(cfg.backgrounds)])
    pairs_for = PairMaker(cfg, train, template, backgrounds)

    # 2. Frozen encoders; the standard images' latents once
    vae = load_vae(folder(cfg.vae)).to(device).eval().requires_grad_(False)
    image_encoder = load_image_encoder(folder(cfg.clip)).float().to(device).eval().requires_grad_(False)
    vae.float()
    standard_latents = encode_latents(vae, train.characters["standard_image"], device=device,
                                      progress=False).to(device)  # (C, 4, h/8, w/8)
    figure_share = (latent_masks(train.characters["standard_mask"], standard_latents.shape[-2:])  # (C, 1, h/8, w/8)
                    if weighted else None)
    weight_map = None  # else each character's figure weight per latent pixel: more on its legs and head
    if cfg.legs_weight or cfg.head_weight:
        standard = np.zeros((len(standard_latents), 18, 3), np.float32)
        standard[train.character_row] = pairs_for.standard_keypoints
        weight_map = cfg.figure_weight + part_weights(standard, standard_latents.shape[-2:], h, cfg.legs_weight,
                                                      cfg.head_weight)

    # 3. Model (both UNets from one checkpoint, or a whole standardizer), EMA, optimizer
    model = initial_model(cfg, StandardizerConfig(width=w, height=h, pose_channels=tuple(cfg.pose_channels),
                                                  fbdm=cfg.fbdm, rpim=cfg.rpim, template_keypoints=template,
                                                  standard_pose=cfg.standard_pose, colour_prior=cfg.colour_prior))
    if model.standard_pose is not None:  # deterministic and seconds long: refitted on resume too
        fit_standard_pose(model.standard_pose, pairs_for.keypoints, pairs_for.standard_keypoints, w, h, steps=cfg.standard_pose_steps,
                          seed=cfg.seed, progress=main_process)
        model.standard_pose.requires_grad_(False)
    if model.denoiser.config.cross_attention_dim != image_encoder.config.projection_dim:
        raise ValueError(f"The UNet's cross_attention_dim ({model.denoiser.config.cross_attention_dim}) must equal the CLIP "
                         f"image embedding size ({image_encoder.config.projection_dim}): pair a UNet and CLIP of one preset")
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.fbdm_lr_scale, cfg.rpim_lr_scale), lr=cfg.lr,
                                  weight_decay=0.01)
    start, elapsed = loop.resume(run, cfg, model=model, optimizer=optimizer, ema=ema, requested=resume)
    objective, optimizer = accelerator.prepare(Stage1Objective(model, cfg.offset_noise), optimizer)
    noise_scheduler = training_scheduler()
    sample_refs, sample_truth = held_out_references(test, 8)

    # 4. Training loop: batch, backgrounds, dropout, poses and noise all follow (seed, step)
    def training_step(step: int, report: bool) -> loop.StepResult:
        idx = batch_indices(len(train), cfg.batch_size, step, cfg.seed, accelerator.process_index, accelerator.num_processes)
        rng = np.random.default_rng([cfg.seed, step, 11])
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        pairs = pairs_for(idx, rng)
        chars, batch = pairs.characters, pairs.tensors(device)
        with torch.no_grad():
            ref_latents, embeds = encode_images(vae, image_encoder, batch["pixels"])
        with accelerator.autocast():
            weights = None
            if weighted:
                figure = cfg.figure_weight if weight_map is None else weight_map[chars]
                weights = region_weights(figure_share[chars], figure).to(device)
            loss = objective(ref_latents.float(), embeds.float(), batch["background"], batch["reference_pose"],
                             batch["target_pose"], batch["keep"], standard_latents[chars].to(device), noise_scheduler, g,
                             weights, batch["prior"])
        return loop.StepResult(loss)

    def sample(done: int, bar) -> None:
        pipe = StandardizePipeline(vae, image_encoder, ema.eval(), sampling_scheduler())
        run.save_image(f"samples_{done:06d}.png", sample_sheet(pipe, sample_refs, sample_truth, cfg))

    elapsed = loop.run(cfg, run, accelerator, step=training_step, wrapped=objective, optimizer=optimizer, model=model,
                       start=start, elapsed=elapsed, desc="stage1", ema=ema, ema_decay=cfg.ema_decay, sample=sample)

    # 5. Held-out PSNR/SSIM of the EMA model, then export
    if main_process:
        pipe = StandardizePipeline(vae, image_encoder, ema.eval(), sampling_scheduler())
        refs, truth = held_out_references(test, cfg.eval_samples)
        scores = evaluate(pipe, refs, truth, cfg)
        ema.save_pretrained(run.path / "model")
        write_json(run.path / "model" / "training.json", run.provenance(
            data=str(data), steps=cfg.steps, vae=describe(cfg.vae), clip=describe(cfg.clip),
            unet=describe(cfg.unet) if cfg.unet is not Source.SCRATCH else "scratch", heldout=scores, adapter_rms=adapter_norms(ema), wall_time_s=round(elapsed, 1),
))
        print(f"saved {run.path / 'model'}: held-out PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f} "
              f"({scores['count']} characters)")
    return run.path / "model"


def standardize_all(pipe, refs: list[Reference], cfg: Stage1TrainConfig) -> list:
    pipe.progress = False
    return pipe(refs, num_inference_steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed,
                batch_size=16).images


def evaluate(pipe, refs: list[Reference], truth: np.ndarray, cfg: Stage1TrainConfig) -> dict:
    images = standardize_all(pipe, refs, cfg)
    p, s = psnr(images, truth), ssim(images, truth)
    return {"psnr": round(float(p.mean()), 3), "ssim": round(float(s.mean()), 4), "count": len(refs),
            "steps": cfg.sample_steps, "guidance_scale": cfg.guidance_scale}


def sample_sheet(pipe, refs: list[Reference], truth: np.ndarray, cfg: Stage1TrainConfig) -> np.ndarray:
    """Rows: held-out references, our standardized images, ground-truth standard renders."""
    images = standardize_all(pipe, refs, cfg)
    return grid([[r.image for r in refs], [np.asarray(im) for im in images], list(truth)])
