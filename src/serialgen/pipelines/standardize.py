"""StandardizePipeline: any reference image in, its standardized image out (SerialGen §3.3).

A-pose, front view, white background, neutral face, face at the fixed place, 2:3. One task,
one `__call__`, in numbered steps; inference only. The ReferenceNet runs once per call (its
bank is reused by every denoising step), the PoseGuider once per call, and classifier-free
guidance batches the unconditional half (no reference bank, zero CLIP embedding, as Animate
Anyone) with the conditional half in one UNet call per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..models.clip import preprocess as clip_preprocess
from ..models.standardizer import STARTS, Standardizer
from ..pose import draw_pose_map
from ..preprocess import Reference, prepare_reference
from ..silhouette import colour_silhouette


@dataclass
class StandardizeOutput:
    images: list[Image.Image]  # the standardized images
    references: list[Reference]  # the prepared inputs (canvas, mask, pose map, notes)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_images(x: torch.Tensor) -> list[Image.Image]:
    a = ((x.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(im) for im in a]


@torch.no_grad()
def encode_images(vae, image_encoder, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) in [-1, 1] -> scaled VAE latents (N, 4, H/8, W/8), CLIP image embeds (N, 1, D)."""
    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
    size = image_encoder.config.image_size
    embeds = image_encoder(pixel_values=clip_preprocess(pixels, size).to(image_encoder.dtype)).image_embeds
    return latents, embeds[:, None]


class StandardizePipeline:
    """Components: vae (AutoencoderKL), image_encoder (CLIPVisionModelWithProjection),
    standardizer (`Standardizer`), scheduler (a diffusers scheduler, DDIM by default)."""

    # Raised whenever the sampler's output changes for the same weights and seed (2: the starting
    # noise's mean removed); Stage II's precomputed standardized references record it.
    SAMPLER_REVISION = 2

    def __init__(self, vae, image_encoder, standardizer: Standardizer, scheduler):
        self.vae, self.image_encoder, self.standardizer, self.scheduler = vae, image_encoder, standardizer, scheduler
        self.progress = True
        self._canvas = None  # the white canvas's latent, encoded once (start_latents)
        self._offload = None  # ModelOffload, when enable_model_cpu_offload was called

    @classmethod
    def from_pretrained(cls, weights: str | Path | None = None, *, vae: str | Path | None = None,
                        image_encoder: str | Path | None = None, allow_pickle: bool = False) -> "StandardizePipeline":
        """A saved standardizer folder (None = the bundled mini one). The VAE and the CLIP image
        encoder it runs with, for each: the given folder, else the standardizer folder's vae/ (or
        image_encoder/) subfolder, else the one its training.json records (`serialgen train stage1`
        writes "bundled mini" or a folder). A folder with none of these is refused: a standardizer
        read by another VAE or CLIP than its own draws noise."""
        import json

        from ..diffusion import sampling_scheduler
        from ..models.loading import bundled, load_image_encoder, load_vae

        folder = Path(weights) if weights is not None else bundled("stage1")
        if not folder.is_dir():
            raise FileNotFoundError(f"No standardizer weights at {folder}: train them with `serialgen train stage1` "
                                    "or give --weights a saved standardizer folder")
        standardizer = Standardizer.from_pretrained(folder, allow_pickle=allow_pickle)
        record = folder / "training.json"
        trained_with = json.loads(record.read_text()) if record.is_file() else {}

        def component(given, subfolder: str, key: str, argument: str):
            if given is not None:
                return given
            if (folder / subfolder).is_dir():
                return folder / subfolder
            recorded = trained_with.get(key)
            if recorded == "bundled mini":
                return None  # the loaders' default: the bundled mini weights
            if recorded:
                return recorded
            raise FileNotFoundError(f"{folder} holds no {subfolder}/ and no training.json naming the {key} it was "
                                    f"trained with: pass {argument} (the folder of that model)")

        vae_dir = component(vae, "vae", "vae", "vae=")
        enc_dir = component(image_encoder, "image_encoder", "clip", "image_encoder=")
        return cls(load_vae(vae_dir, allow_pickle=allow_pickle).eval(),
                   load_image_encoder(enc_dir, allow_pickle=allow_pickle).eval(), standardizer.eval(),
                   sampling_scheduler())

    def to(self, device=None, dtype=None) -> "StandardizePipeline":
        for module in (self.vae, self.image_encoder, self.standardizer):
            module.to(device=device, dtype=dtype)
        self._canvas = None
        return self

    def enable_model_cpu_offload(self, device="cuda", offload=None) -> "StandardizePipeline":
        """Keep the models in CPU memory, each moved to `device` only while it runs (`ModelOffload`);
        offload: one shared with other pipelines, so that one model of all of them is on the device."""
        from ..devices import ModelOffload

        self._offload = (offload or ModelOffload(device)).attach(self.image_encoder, self.vae, self.standardizer)
        self._canvas = None
        return self

    @property
    def device(self) -> torch.device:
        """Where the computation runs: the models' device, or the offload's execution device."""
        return self._offload.device if self._offload is not None else next(self.standardizer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.standardizer.dtype

    @property
    def size(self) -> tuple[int, int]:
        """Canvas (width, height)."""
        return self.standardizer.config.width, self.standardizer.config.height

    def template_pose(self) -> np.ndarray:
        """The standard A-pose map (H, W, 3) uint8 drawn from the config's template keypoints."""
        w, h = self.size
        rows = self.standardizer.config.template_keypoints
        if len(rows) != 18:
            raise ValueError("This standardizer has no template pose in its config: pass target_pose (a standard pose map)")
        kp = np.array(rows, np.float64) * np.array([w, h, 1.0])
        return draw_pose_map(kp, w, h)

    def target_keypoints(self, refs: list[Reference]) -> np.ndarray:
        """The standard keypoints of each reference (N, 18, 3) in canvas pixels: as the
        standardizer's StandardPoseEstimator predicts them from the reference's keypoints (its body
        proportions), or the config's template A-pose for a reference without keypoints (with a note
        saying so) or a standardizer without an estimator."""
        w, h = self.size
        rows = self.standardizer.config.template_keypoints
        if len(rows) != 18:
            raise ValueError("This standardizer has no template pose in its config: pass target_pose (a standard pose map)")
        out = np.stack([np.array(rows, np.float64) * np.array([w, h, 1.0])] * len(refs)).astype(np.float32)
        if self.standardizer.standard_pose is None:
            return out
        known = [k for k, r in enumerate(refs) if r.keypoints is not None]
        if known:
            kp = torch.from_numpy(np.stack([refs[k].keypoints for k in known]).astype(np.float32))
            out[known] = self.standardizer.predict_standard_keypoints(kp).numpy()
        for r in refs:
            if r.keypoints is None:
                r.notes.append("no keypoints: drawn in the template A-pose, with adult proportions")
        return out

    def target_poses(self, refs: list[Reference], keypoints: np.ndarray | None = None) -> np.ndarray:
        """The target pose map of each reference (N, H, W, 3) uint8 drawn from `target_keypoints`
        (or the given ones), or the template's (H, W, 3) when the standardizer has no
        StandardPoseEstimator."""
        if self.standardizer.standard_pose is None:
            return self.template_pose()
        w, h = self.size
        keypoints = self.target_keypoints(refs) if keypoints is None else keypoints
        return np.stack([draw_pose_map(k, w, h) for k in keypoints])

    def colour_silhouettes(self, refs: list[Reference], keypoints: np.ndarray) -> np.ndarray:
        """Each reference's colour silhouette (`colour_silhouette`: its own part colours, flat-shaded)
        at its standard keypoints (N, 18, 3) in canvas pixels. -> (N, H, W, 3) uint8."""
        w, h = self.size
        return np.stack([colour_silhouette(r, k, w, h, normalized=False) for r, k in zip(refs, keypoints, strict=True)])

    def silhouette_latents(self, refs: list[Reference], keypoints: np.ndarray) -> torch.Tensor:
        """The VAE latents (N, 4, h, w) of each reference's colour silhouette at its standard keypoints."""
        pixels = to_tensor(self.colour_silhouettes(refs, keypoints))
        latents = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode()
        return (latents * self.vae.config.scaling_factor).to(self.dtype)

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents, embeds = encode_images(self.vae, self.image_encoder, pixels.to(self.device))
        return latents.to(self.dtype), embeds.to(self.dtype)

    @torch.no_grad()
    def start_latents(self, noise: torch.Tensor, pose: np.ndarray) -> torch.Tensor:
        """The forward process at the first timestep, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise,
        with x_0 the white canvas's latent outside the figure (the pose map's drawn pixels, max-pooled
        to latent cells and grown by one cell) and 0 inside it, where the colours are the reference's.
        On a small latent sqrt(abar_t) x_0 is a visible part of x_t (0.07-0.1 of the canvas at DDIM's
        first step): pure noise lacks it, and the sampler then reads the noise's low frequencies as a
        tinted background. For the same reason the noise's own mean per sample and channel is removed:
        a model trained with offset noise reads it as a colour, and on a 4x24x16 latent it is large
        enough (|mean| up to ~0.1) to outweigh the reference (one reference standardized with ten seeds
        varied by 9 dB PSNR before; see tests)."""
        w, h = self.size
        noise = noise - noise.mean(dim=(-2, -1), keepdim=True)
        if self._canvas is None:
            white = torch.ones(1, 3, h, w, device=self.device, dtype=self.vae.dtype)  # VAE only: no CLIP of it
            self._canvas = (self.vae.encode(white).latent_dist.mode() * self.vae.config.scaling_factor).to(self.dtype)
        canvas = self._canvas.to(noise)
        poses = pose if pose.ndim == 4 else pose[None]  # (P, H, W, 3), one per sample or one for all
        figure = torch.from_numpy((poses.max(-1) > 0).astype(np.float32))[:, None]  # (P, 1, H, W)
        figure = F.max_pool2d(F.adaptive_max_pool2d(figure, canvas.shape[-2:]), 3, 1, 1).to(canvas)
        x0 = (canvas * (1 - figure)).expand_as(noise)
        return self.scheduler.add_noise(x0, noise, self.scheduler.timesteps[:1])

    @torch.no_grad()
    def __call__(self, reference, *, num_inference_steps: int = 20, guidance_scale: float = 2.5, seed: int = 0,
                 batch_size: int = 16, target_pose: np.ndarray | None = None, use_pose: bool = True, detector=None,
                 start: str | None = None, strength: float | None = None) -> StandardizeOutput:
        """reference: a `Reference` (already prepared), an image path or PIL image, or a list of them.
        target_pose: (H, W, 3) uint8 standard pose map for every reference. Default: each
        reference's standard pose as the standardizer's StandardPoseEstimator predicts it from the
        reference's keypoints (its body proportions), or the config's template A-pose for a
        standardizer without one or a reference without keypoints (noted in its `notes`).
        start (default: the standardizer config's `start`, chosen on validation characters for its
        weights): "canvas" starts from what every standardized image shares, the white
        canvas around the target figure, noised to the first timestep (`start_latents`); "noise"
        from pure Gaussian noise, which the few-step sampler's first timestep only approximates;
        "silhouette" from the reference's colour silhouette in its standard pose (its own median
        top, bottom, shoe, skin and hair colours, flat-shaded; `colour_silhouette`), noised to the
        timestep `strength` of the way into the schedule and denoised from there (SDEdit's start,
        as diffusers' img2img `strength`): the model refines a figure that already has the
        reference's colours and body proportions instead of recalling them from attention alone.
        Not in the paper. strength: the share of the steps run for the silhouette start (0 < s <= 1;
        default: the config's `strength`).
        seed: the starting noise of the whole call comes from one generator seeded with it, drawn
        reference after reference (the same noise for any batch_size); batch_size references are
        denoised together."""
        # 1. Check and prepare inputs
        items = reference if isinstance(reference, (list, tuple)) else [reference]
        if not items:
            raise ValueError("Give at least one reference image")
        if num_inference_steps < 1 or batch_size < 1:
            raise ValueError(f"num_inference_steps and batch_size must be at least 1, got {num_inference_steps} "
                             f"and {batch_size}")
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"guidance_scale must be a finite number >= 0 (1 or less: no guidance), got {guidance_scale}")
        config = self.standardizer.config
        if start is None:  # the model's own start; a given target pose has no keypoints to draw a silhouette at
            start = "canvas" if config.start == "silhouette" and target_pose is not None else config.start
        strength = config.strength if strength is None else strength
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
        if not (math.isfinite(strength) and 0 < strength <= 1):
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if start == "silhouette" and target_pose is not None:
            raise ValueError("start='silhouette' draws each reference's silhouette at its predicted standard pose: "
                             "with a given target_pose use start='canvas'")
        if config.colour_prior and target_pose is not None:
            raise ValueError("This standardizer reads each reference's colour silhouette drawn at its predicted standard "
                             "pose (config colour_prior): a given target_pose map has no keypoints to draw it at")
        w, h = self.size
        refs = [r if isinstance(r, Reference) else prepare_reference(r, (w, h), use_pose=use_pose, detector=detector)
                for r in items]
        for r in refs:
            if r.image.shape[:2] != (h, w):
                raise ValueError(f"A prepared reference is {r.image.shape[1]}x{r.image.shape[0]}; this model needs {w}x{h}")
        if target_pose is not None and target_pose.shape != (h, w, 3):
            raise ValueError(f"target_pose must be a ({h}, {w}, 3) pose map, got {target_pose.shape}")
        # a reference without a figure mask (or pose) is standardized without FBDM (or RPIM), and says so;
        # the others keep them: batches are runs of references with the same inputs
        kinds = [(r.mask is not None, r.pose_map is not None) for r in refs]
        for r, (mask, pose) in zip(refs, kinds, strict=True):
            if config.fbdm and not mask:
                r.notes.append("no figure mask: standardized without FBDM (foreground-background distinction)")
            if config.rpim and not pose:
                r.notes.append("no reference pose: standardized without RPIM (reference pose injection)")
        generator = torch.Generator().manual_seed(seed)
        images, k = [], 0
        while k < len(refs):
            end = k + 1
            while end < len(refs) and end - k < batch_size and kinds[end] == kinds[k]:
                end += 1
            images += self._standardize(refs[k:end], num_inference_steps, guidance_scale, generator, target_pose, start,
                                        strength)
            k = end
        return StandardizeOutput(images, refs)

    def _standardize(self, refs: list[Reference], num_inference_steps: int, guidance_scale: float,
                     generator: torch.Generator, target_pose: np.ndarray | None, start: str,
                     strength: float = 1.0) -> list[Image.Image]:
        """One batch of prepared references -> their standardized images."""
        w, h = self.size
        n = len(refs)
        cfg = guidance_scale > 1.0
        device, dtype = self.device, self.dtype

        # 2. Encode the reference: VAE latent, CLIP image embedding, FBDM mask, RPIM pose
        pixels = to_tensor(np.stack([r.image for r in refs]))  # (N, 3, H, W)
        ref_latents, embeds = self.encode_images(pixels)
        masks = [r.mask for r in refs]
        background = None
        if all(m is not None for m in masks):
            background = 1.0 - torch.from_numpy(np.stack(masks)).float()[:, None].to(device, dtype)  # (N, 1, H, W)
        poses = [r.pose_map for r in refs]
        ref_pose = to_tensor(np.stack(poses)).to(device, dtype) if all(p is not None for p in poses) else None

        # 3. The ReferenceNet bank, once for the whole call
        bank = self.standardizer.encode_reference(ref_latents, embeds, background, ref_pose)
        if cfg:
            bank.keep = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(device)
            embeds = torch.cat([torch.zeros_like(embeds), embeds])  # (2N, 1, D)

        # 4. Target pose features (with the colour prior: each reference's colour silhouette at its pose), once
        prior = self.standardizer.config.colour_prior
        keypoints = self.target_keypoints(refs) if target_pose is None and (start == "silhouette" or prior) else None
        pose = target_pose if target_pose is not None else self.target_poses(refs, keypoints)  # (H, W, 3) or (N, H, W, 3)
        pose_pixels = to_tensor(pose if pose.ndim == 4 else pose[None]).to(device, dtype)  # (N or 1, 3, H, W)
        if prior:
            silhouettes = to_tensor(self.colour_silhouettes(refs, keypoints)).to(device, dtype)  # (N, 3, H, W)
            pose_features = self.standardizer.pose_features(pose_pixels.expand(n, -1, -1, -1), silhouettes)
        else:
            pose_features = self.standardizer.pose_features(pose_pixels).expand(n, -1, -1, -1)  # (N, C0, h, w)
        if cfg:
            pose_features = torch.cat([pose_features, pose_features])

        # 5. Timesteps and initial latents
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        noise = torch.randn(ref_latents.shape, generator=generator, dtype=torch.float32).to(device, dtype)
        if start == "canvas":
            latents = self.start_latents(noise, pose)
        elif start == "silhouette":
            timesteps = timesteps[num_inference_steps - max(1, round(strength * num_inference_steps)):]
            noise = noise - noise.mean(dim=(-2, -1), keepdim=True)  # as start_latents: no offset read as colour
            latents = self.scheduler.add_noise(self.silhouette_latents(refs, keypoints), noise, timesteps[:1])
        else:
            latents = noise * self.scheduler.init_noise_sigma
        cond = {"reference": bank, "pose": pose_features, "image": embeds}

        # 6. Denoising loop: one UNet call per step, guidance halves batched
        for t in tqdm(timesteps, desc="standardize", disable=not self.progress, leave=False):
            x = torch.cat([latents, latents]) if cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            eps = self.standardizer(x, t.expand(len(x)), cond)
            if cfg:
                uncond, cond_eps = eps.chunk(2)
                eps = uncond + guidance_scale * (cond_eps - uncond)
            latents = self.scheduler.step(eps, t, latents).prev_sample

        # 7. Decode
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return to_images(images)
