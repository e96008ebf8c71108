"""BeyondInsertingPipeline: Beyond Inserting (Li et al. 2024, arXiv 2402.00631) as a serialgen
method. Per character, an identity embedding (models/identity_embedding.py: per-stage tokens, each
a key feature and a value feature) is optimized on the character's images with the diffusion loss
of the frozen text-to-image base plus the region attention loss that keeps the identity tokens'
cross-attention inside the character. Then the base draws each prompt with the identity's tokens
appended to the prompt's in every cross-attention layer. No image adapter is involved (its scale is
0): this is the per-character optimization family, next to SerialGen's encoder.

The paper fits the identity's attention to the face; the mini renders' faces are a few pixels at
128x192, so the region is the whole figure (the reference's mask). The paper released no code;
its stage count, token count and loss weight are not all stated, so they are options here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..models.attention import processors_on
from ..models.identity_embedding import (
    IdentityCrossAttnProcessor,
    IdentityEmbedding,
    IdentityState,
    base_digest,
    identity_attention_loss,
)
from ..models.loading import add_time_ids
from .personalize import prompt_list
from .serial import SerialGenOutput, SerialGenPipeline, SerialMethod

CAPTION = "a character, full body shot"  # what the optimization's images are described as


@dataclass(frozen=True)
class Optimization:
    """How an identity is optimized: steps of batch_size noised copies of the images at random
    timesteps, AdamW at lr; stages x tokens identity tokens; attention_weight on the region
    attention loss (None: plain token optimization, no attention read)."""

    steps: int = 150
    batch_size: int = 4
    lr: float = 0.1  # 5e-3 and 3e-2 left the base's images nearly unchanged on a validation character
    stages: int = 4
    tokens: int = 2
    attention_weight: float | None = 0.1
    seed: int = 0

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.stages, self.tokens) < 1:
            raise ValueError("steps, batch_size, stages and tokens must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.attention_weight is not None and not (math.isfinite(self.attention_weight) and self.attention_weight >= 0):
            raise ValueError(f"attention_weight must be a finite number >= 0 (or None), got {self.attention_weight}")


class BeyondInsertingPipeline(SerialMethod):
    """Components: serial (`SerialGenPipeline`: its text-to-image base runs; its Stage I and image
    adapter do not). optimization: the `Optimization` an identity gets when a call is given a
    reference instead of an embedding."""

    def __init__(self, serial: SerialGenPipeline, optimization: Optimization = Optimization()):
        self.serial, self.optimization = serial, optimization
        self._kept: tuple[str, IdentityEmbedding] | None = None  # the last reference's embedding

    @classmethod
    def from_pretrained(cls, base: str | Path | None = None, optimization: Optimization = Optimization(), *,
                        allow_pickle: bool = False) -> "BeyondInsertingPipeline":
        """The text-to-image base at `base` (None: the bundled mini one), the only model this method
        runs. (Its pipeline still holds an image encoder and a fresh image adapter, never called.)"""
        from ..models.ip_adapter import IPAdapter
        from ..models.loading import load_base, load_image_encoder
        from .personalize import PersonalizePipeline

        pipe = load_base(base, allow_pickle=allow_pickle)
        encoder = load_image_encoder(None).eval()
        adapter = IPAdapter.for_unet(pipe.unet, encoder.config.hidden_size).eval()
        return cls(SerialGenPipeline(None, PersonalizePipeline(pipe, encoder, adapter), "unpaired"), optimization)

    # -- optimization --------------------------------------------------------------------------

    def optimize(self, images, masks=None, optimization: Optimization | None = None) -> IdentityEmbedding:
        """Optimize an identity on a character's images (PIL images or paths, or `Reference`s),
        resized to the base's size; masks (H, W) in [0, 1] of the character in each (None: the
        references' own masks, else a person detector's). -> the embedding."""
        from ..preprocess import Reference, load_image

        cfg = optimization or self.optimization
        personalize = self.serial.personalize
        unet, device = personalize.unet, personalize.device
        width, height = personalize.default_size()
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise ValueError("Give at least one image of the character")
        pictures, found = [], []
        for item in items:
            if isinstance(item, Reference):
                pictures.append(Image.fromarray(item.image))
                found.append(item.mask)
            else:
                pictures.append(item.convert("RGB") if isinstance(item, Image.Image) else load_image(item))
                found.append(None)
        pictures = [p.resize((width, height), Image.BICUBIC) for p in pictures]
        if masks is None:
            masks = [m if m is not None else self._detect(p) for m, p in zip(found, pictures, strict=True)]
        if len(masks) != len(pictures):
            raise ValueError(f"Give one mask per image: {len(masks)} masks for {len(pictures)} images")
        mask = torch.from_numpy(np.stack([np.asarray(Image.fromarray((np.asarray(m, np.float32) * 255).astype(np.uint8))
                                                     .resize((width, height), Image.BILINEAR), np.float32) / 255
                                          for m in masks]))[:, None].to(device)  # (K, 1, H, W)

        with torch.no_grad():
            latents = personalize.encode(pictures).float()  # (K, C, h, w)
            pe, _, pooled, _ = personalize._encode_prompts([CAPTION], "")
        tokenizer = personalize.base.tokenizer
        ids = tokenizer(CAPTION).input_ids
        word = pe[0, ids.index(tokenizer("character", add_special_tokens=False).input_ids[0])]  # the class word
        embedding = IdentityEmbedding.initial(word, cfg.stages, cfg.tokens, base_digest(unet)).to(device)
        optimizer = torch.optim.AdamW(embedding.parameters(), lr=cfg.lr, weight_decay=0.0)
        scheduler = personalize.base.scheduler
        state = IdentityState(embedding)
        frozen = [p.requires_grad for p in unet.parameters()]
        unet.requires_grad_(False)
        rng = np.random.default_rng([cfg.seed, 0xB1])
        generator = torch.Generator().manual_seed(cfg.seed)
        added = None  # SDXL's pooled text and size ids: the same for every step
        if personalize.is_sdxl:
            added = {"text_embeds": pooled.expand(cfg.batch_size, -1).to(unet.dtype),
                     "time_ids": add_time_ids(personalize.base, height, width).to(device, unet.dtype)
                     .repeat(cfg.batch_size, 1)}
        try:
            with processors_on(unet, "attn2", lambda name: IdentityCrossAttnProcessor(state)):
                for _ in tqdm(range(cfg.steps), desc="identity", disable=not personalize.progress, leave=False):
                    idx = rng.integers(len(latents), size=cfg.batch_size)
                    t = torch.from_numpy(rng.integers(scheduler.config.num_train_timesteps, size=cfg.batch_size)).long()
                    noise = torch.randn(latents[idx].shape, generator=generator).to(device)
                    x_t = scheduler.add_noise(latents[idx], noise, t.to(device))
                    state.set(t, torch.ones(cfg.batch_size, dtype=torch.bool))
                    state.probabilities = [] if cfg.attention_weight is not None else None
                    eps = unet(x_t.to(unet.dtype), t.to(device), pe.expand(cfg.batch_size, -1, -1).to(unet.dtype),
                               added_cond_kwargs=added).sample
                    loss = F.mse_loss(eps.float(), noise)
                    if cfg.attention_weight is not None:
                        loss = loss + cfg.attention_weight * identity_attention_loss(state.probabilities, mask[idx],
                                                                                     cfg.tokens)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        finally:
            state.probabilities = None
            for p, flag in zip(unet.parameters(), frozen, strict=True):
                p.requires_grad_(flag)
        return embedding.requires_grad_(False)

    def _detect(self, picture: Image.Image) -> np.ndarray:
        from ..preprocess import PersonDetector

        mask = PersonDetector().segment(np.asarray(picture))
        if mask.mean() < 0.01:
            raise ValueError("No person found in an image to optimize the identity on: give its mask")
        return mask

    # -- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, reference=None, prompts: list[str] | str = (), *, embedding: IdentityEmbedding | None = None,
                 standardized=None, standardize: bool | None = None, seed: int = 0, batch_size: int = 8,
                 num_inference_steps: int = 20, guidance_scale: float = 5.0, negative_prompt: str = "",
                 use_pose: bool = True, first_index: int = 0, scale: float | None = None) -> SerialGenOutput:
        """Draw `prompts` with the base and an identity: `embedding`, or one optimized on `reference`
        (an image, path or `Reference`; kept for the next call with the same reference). Image i starts
        from the noise SerialGenPipeline gives it. standardized, standardize and scale (the image
        adapter's) are accepted for the common protocol and unused: this method reads the reference
        as is and runs no adapter."""
        from ..preprocess import Reference, prepare_reference

        prompts = prompt_list(prompts, batch_size=batch_size, num_inference_steps=num_inference_steps)
        personalize = self.serial.personalize
        unet = personalize.unet
        notes, prepared = [], None
        if embedding is None:
            if reference is None:
                raise ValueError("Give a reference image (its identity is optimized) or an identity embedding")
            prepared = reference if isinstance(reference, Reference) else prepare_reference(
                reference, personalize.default_size(), use_pose=use_pose)
            key = hashlib.sha256(np.ascontiguousarray(prepared.image).tobytes()).hexdigest()
            if self._kept is None or self._kept[0] != key:
                with torch.enable_grad():
                    self._kept = (key, self.optimize([prepared]))
            embedding = self._kept[1]
            notes.append(f"beyond-inserting: an identity of {embedding.stages} stages x {embedding.key.shape[1]} "
                         f"tokens optimized on the reference ({self.optimization.steps} steps)")
        else:
            embedding.check_base(unet)
        width, height = personalize.default_size()
        scheduler = personalize.base.scheduler
        state = IdentityState(embedding.to(personalize.device))
        images = []
        with processors_on(unet, "attn2", lambda name: IdentityCrossAttnProcessor(state)):
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                b = len(batch)
                pe, npe, pooled, npooled = personalize._encode_prompts(batch, negative_prompt)
                text = torch.cat([npe, pe]).to(unet.dtype)
                added = None
                if personalize.is_sdxl:
                    added = {"text_embeds": torch.cat([npooled, pooled]).to(unet.dtype),
                             "time_ids": add_time_ids(personalize.base, height, width).to(personalize.device, unet.dtype)
                             .repeat(2 * b, 1)}
                latents = personalize.initial_noise(range(first_index + start, first_index + start + b), seed, width,
                                                    height)
                scheduler.set_timesteps(num_inference_steps, device=personalize.device)
                latents = latents * scheduler.init_noise_sigma
                for t in tqdm(scheduler.timesteps, desc=f"generate {start + 1}-{start + b}/{len(prompts)}",
                              disable=not personalize.progress, leave=False):
                    state.set(t.expand(2 * b), torch.arange(2 * b) >= b)  # the unconditional half: the prompt alone
                    x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                    uncond, cond = unet(x, t, text, added_cond_kwargs=added).sample.chunk(2)
                    latents = scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
                images += personalize.decode(latents)
        return SerialGenOutput(images, None, prepared, notes)

