"""PersonalizePipeline: a reference image + prompts -> images of that character (SerialGen §3.4).

A text-to-image base (a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline: the
mini T2I model, SD1.5, SDXL) whose cross-attentions get the IP-Adapter image tokens. The
reference is encoded once per call (CLIP penultimate hidden states -> projector), each prompt
batch runs classifier-free guidance in one UNet call per step (unconditional half: empty
prompt and the tokens of a zero image, as IP-Adapter), and every image's initial noise comes
from (seed, its index in the series), so a series does not depend on how it is batched.
Text encoding reuses the base pipeline's own `encode_prompt`.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..models.clip import preprocess as clip_preprocess
from ..models.ip_adapter import IPAdapter
from ..models.loading import add_time_ids
from ..models.personalizer import Personalizer


def prompt_list(prompts: list[str] | str, *, batch_size: int = 1, num_inference_steps: int = 1) -> list[str]:
    """A prompt or prompts as a non-empty list, with the batch size and step count every series
    pipeline checks the same way."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("Give at least one prompt")
    if batch_size < 1 or num_inference_steps < 1:
        raise ValueError(f"batch_size and num_inference_steps must be at least 1, got {batch_size} and "
                         f"{num_inference_steps}")
    return prompts


@dataclass
class PersonalizeOutput:
    images: list[Image.Image]


def _pixels(image) -> torch.Tensor:
    """PIL image or uint8 (H, W, 3) array -> (1, 3, H, W) in [-1, 1]."""
    a = np.array(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32, copy=True)
    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1.0


ADAPTER_FILE = "ip-adapter.safetensors"


class PersonalizePipeline:
    """Components: base (a diffusers SD or SDXL pipeline), image_encoder (CLIP vision tower),
    adapter (`IPAdapter`, attached to the base UNet's cross-attentions here)."""

    def __init__(self, base, image_encoder, adapter: IPAdapter):
        clip_dim = adapter.image_proj.proj[0].in_features
        if image_encoder.config.hidden_size != clip_dim:
            raise ValueError(f"The image adapter reads {clip_dim}-d CLIP hidden states; this image encoder gives "
                             f"{image_encoder.config.hidden_size}-d: pair an adapter with the encoder it was trained on")
        self.base, self.image_encoder, self.adapter = base, image_encoder, adapter
        adapter.to(base.unet.device, base.unet.dtype)
        self.model = Personalizer(base.unet, adapter)  # (x_t, t, cond) -> epsilon
        self.progress = True
        self._offload = None  # ModelOffload, when enable_model_cpu_offload was called

    @classmethod
    def from_pretrained(cls, adapter: str | Path | None = None, *, base: str | Path | None = None,
                        image_encoder: str | Path | None = None, allow_pickle: bool = False) -> "PersonalizePipeline":
        """adapter: an IP-Adapter file, or a folder holding ip-adapter.safetensors (None = the bundled
        mini adapter). base: a SD1.5/SDXL pipeline folder (None = the bundled mini text-to-image
        model). image_encoder: a CLIP vision folder (None = the bundled mini CLIP)."""
        from ..models.loading import bundled, load_base, load_image_encoder, record_digest

        path = Path(adapter) if adapter is not None else bundled("stage2")
        if path.is_dir():
            found = path / ADAPTER_FILE
            pickled = path / "ip-adapter.bin"
            path = pickled if not found.exists() and pickled.exists() else found  # refused below unless allowed
        if not path.exists():
            raise FileNotFoundError(f"No image adapter at {path}: train one with `serialgen train stage2` or give an "
                                    "IP-Adapter .safetensors file")
        record = path.parent / "training.json"
        trained_on = json.loads(record.read_text()).get("base_made_by") if record.is_file() else None
        if trained_on and trained_on != record_digest(base, "t2i"):
            warnings.warn(f"{path} was trained on another text-to-image base than "
                          f"{base or 'the bundled one'}; its images may not show the reference (train an adapter "
                          "for this base with `serialgen train stage2 --base`)", stacklevel=2)
        pipe = load_base(base, allow_pickle=allow_pickle)
        encoder = load_image_encoder(image_encoder, allow_pickle=allow_pickle).eval()
        return cls(pipe, encoder, IPAdapter.load(path, pipe.unet, allow_pickle=allow_pickle).eval())

    def to(self, device=None, dtype=None) -> "PersonalizePipeline":
        """Move (and cast) the base, the image encoder and the adapter."""
        self.base.to(device=device, dtype=dtype)
        for module in (self.image_encoder, self.adapter):
            module.to(device=device, dtype=dtype)
        return self

    @property
    def unet(self):
        return self.base.unet

    def enable_model_cpu_offload(self, device="cuda", offload=None) -> "PersonalizePipeline":
        """Keep the models in CPU memory, each moved to `device` only while it runs (`ModelOffload`):
        the image encoder, the text encoder(s), the UNet with its adapter, the VAE. offload: one
        shared with other pipelines."""
        from ..devices import ModelOffload

        base = self.base
        self._offload = (offload or ModelOffload(device)).attach(
            self.image_encoder, base.text_encoder, getattr(base, "text_encoder_2", None), self.model, self.adapter,
            base.unet, base.vae)
        return self

    @property
    def device(self) -> torch.device:
        """Where the computation runs: the UNet's device, or the offload's execution device."""
        return self._offload.device if self._offload is not None else self.base.unet.device

    @property
    def is_sdxl(self) -> bool:
        return getattr(self.base, "text_encoder_2", None) is not None

    def default_size(self) -> tuple[int, int]:
        """(width, height) the base UNet was trained at."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        factor = self.base.vae_scale_factor
        return w * factor, h * factor

    @torch.no_grad()
    def clip_hidden_states(self, images) -> torch.Tensor:
        """Reference image(s) -> CLIP penultimate hidden states (N, T, d): patch tokens + CLS."""
        pixels = torch.cat([_pixels(im) for im in images]) if isinstance(images, (list, tuple)) else _pixels(images)
        size = self.image_encoder.config.image_size
        x = clip_preprocess(pixels, size).to(self.device, self.image_encoder.dtype)
        return self.image_encoder(pixel_values=x, output_hidden_states=True).hidden_states[-2]

    @torch.no_grad()
    def negative_hidden_states(self) -> torch.Tensor:
        """The unconditional image: CLIP of an all-zero (normalised) image, as IP-Adapter does."""
        size = self.image_encoder.config.image_size
        zeros = torch.zeros(1, 3, size, size, device=self.device, dtype=self.image_encoder.dtype)
        return self.image_encoder(pixel_values=zeros, output_hidden_states=True).hidden_states[-2]

    @torch.no_grad()
    def image_tokens(self, reference) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens, negative tokens), each (1, T, cross_dim)."""
        hidden, negative = self.clip_hidden_states(reference), self.negative_hidden_states()  # CLIP, then the adapter
        return self.adapter.tokens(hidden), self.adapter.tokens(negative)

    def initial_noise(self, indices, seed: int, width: int, height: int) -> torch.Tensor:
        """The starting noise (B, C, h, w) of the series' images `indices`: image i's from (seed, i),
        whatever the batching, so a series drawn in any batches or calls is the same series."""
        unet, factor = self.unet, self.base.vae_scale_factor
        shape = (unet.config.in_channels, height // factor, width // factor)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed * 100_003 + i))
                            for i in indices]).to(self.device, unet.dtype)

    def _encode_prompts(self, prompts: list[str], negative: str):
        """Text embeddings as the base pipeline makes them; an empty negative prompt is left to the
        base's own convention (SDXL: zeros), so scale 0 reproduces the base model."""
        device = self.device
        negative = [negative] * len(prompts) if negative else None
        if self.is_sdxl:
            pe, npe, pooled, npooled = self.base.encode_prompt(prompts, device=device, num_images_per_prompt=1,
                                                               do_classifier_free_guidance=True,
                                                               negative_prompt=negative)
            return pe, npe, pooled, npooled
        pe, npe = self.base.encode_prompt(prompts, device, 1, True, negative_prompt=negative)
        return pe, npe, None, None

    @torch.no_grad()
    def __call__(self, reference=None, prompts: list[str] | str = (), *, image_tokens=None, negative_prompt: str = "",
                 num_inference_steps: int = 20, guidance_scale: float = 5.0, scale: float = 1.0, seed: int = 0,
                 batch_size: int = 8, width: int | None = None, height: int | None = None,
                 first_index: int = 0) -> PersonalizeOutput:
        """reference: PIL image or uint8 array, or a list of them, one per prompt (many characters
        in one call); or image_tokens=(tokens, negative tokens) from `image_tokens()` to skip
        encoding, tokens (1, T, cross_dim) or one row per prompt. Image i of the series starts from
        noise seeded (seed, i); first_index: the series index of the first prompt (a series drawn
        in several calls)."""
        # 1. Check inputs
        prompts = prompt_list(prompts, batch_size=batch_size, num_inference_steps=num_inference_steps)
        if (reference is None) == (image_tokens is None):
            raise ValueError("Give either a reference image or precomputed image_tokens")
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0 and math.isfinite(scale) and scale >= 0):
            raise ValueError(f"guidance_scale and scale must be finite numbers >= 0, got {guidance_scale} and {scale}")
        count = len(reference) if isinstance(reference, (list, tuple)) else \
            len(image_tokens[0]) if image_tokens is not None else 1
        if count not in (1, len(prompts)):
            raise ValueError(f"Give one reference, or one per prompt: got {count} for {len(prompts)} prompts")
        dw, dh = self.default_size()
        width, height = width or dw, height or dh
        factor = self.base.vae_scale_factor
        if width % factor or height % factor:
            raise ValueError(f"width and height must be multiples of {factor}, got {width}x{height}")
        previous, self.adapter.scale = self.adapter.scale, scale
        try:
            return self._generate(prompts, reference, image_tokens, negative_prompt, num_inference_steps,
                                  guidance_scale, seed, batch_size, width, height, first_index)
        finally:
            self.adapter.scale = previous  # the scale is this call's, not the pipeline's

    def _generate(self, prompts, reference, image_tokens, negative_prompt, num_inference_steps, guidance_scale, seed,
                  batch_size, width, height, first_index=0) -> PersonalizeOutput:
        unet, scheduler, device = self.unet, self.base.scheduler, self.device

        # 2. The reference, once for the whole series
        tokens, negative = image_tokens if image_tokens is not None else self.image_tokens(reference)
        tokens, negative = tokens.to(device, unet.dtype), negative.to(device, unet.dtype)

        images: list[Image.Image] = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            b = len(batch)
            # 3. Prompts, guidance halves stacked: [unconditional; conditional]
            pe, npe, pooled, npooled = self._encode_prompts(batch, negative_prompt)
            text = torch.cat([npe, pe]).to(unet.dtype)  # (2B, L, D)
            own = tokens[start:start + b] if len(tokens) > 1 else tokens.expand(b, -1, -1)  # a reference per prompt
            ip = torch.cat([negative.expand(b, -1, -1), own])  # (2B, T, cross)
            added = None
            if self.is_sdxl:
                added = {"text_embeds": torch.cat([npooled, pooled]).to(unet.dtype),
                         "time_ids": add_time_ids(self.base, height, width).to(device, unet.dtype).repeat(2 * b, 1)}
            # 4. Noise per image from (seed, index)
            latents = self.initial_noise(range(first_index + start, first_index + start + b), seed, width, height)
            scheduler.set_timesteps(num_inference_steps, device=device)
            latents = latents * scheduler.init_noise_sigma
            # 5. Denoising loop: one UNet call per step
            for t in tqdm(scheduler.timesteps, desc=f"generate {start + 1}-{start + b}/{len(prompts)}",
                          disable=not self.progress, leave=False):
                x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                eps = self.model(x, t, {"text": text, "tokens": ip, "added": added})
                uncond, cond = eps.chunk(2)
                latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
            images += self.decode(latents)  # 6. Decode
        return PersonalizeOutput(images)

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Scaled latents (B, C, h, w) -> B images."""
        vae = self.base.vae
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        a = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(im) for im in a]

    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        """Images -> scaled latents (B, C, h, w) at the size they are (the VAE's mode)."""
        vae = self.base.vae
        pixels = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), np.float32)).permute(2, 0, 1)
                              for im in images]) / 127.5 - 1
        latents = vae.encode(pixels.to(self.device, vae.dtype)).latent_dist.mode()
        return (latents * vae.config.scaling_factor).to(self.unet.dtype)
