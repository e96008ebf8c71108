"""LayoutRetouchPipeline: Layout-and-Retouch (Kim et al. 2024, arXiv 2407.09779) as a serialgen
method, training-free, on the bundled text-to-image base and image adapter. The paper released no
code; this follows its two stages as described:

1. Layout, step-blended inference: the vanilla text-to-image model (the image adapter at scale 0)
   denoises the first `switch` share of the steps, where an image's layout is decided, so the
   layout keeps the base model's diversity and prompt fidelity; the personalized model (the
   adapter at `scale`) denoises the rest.
2. Retouch, multi-source attention swapping: the layout image's latent is inverted with DDIM
   (`retouch_strength` of the way into the schedule) and denoised again by the personalized model
   while every self-attention of the retouched image takes its keys and values from two sources
   that are denoised in the same batch: the layout image (its reconstruction: the structure) and
   the character's reference (its own inversion and reconstruction: the appearance). Attention
   processors (models/attention_swap.py), not UNet edits.

The reference is the standardized one (Stage I, as SerialGen's), so this composes with the rest of
the library; with `standardized=` a given image is used as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..models.attention import processors_on
from ..models.attention_swap import AttentionSwapState, SwapSelfAttnProcessor
from ..models.loading import add_time_ids
from .personalize import prompt_list
from .serial import SerialGenOutput, SerialGenPipeline, SerialMethod


@dataclass
class LayoutRetouchOutput(SerialGenOutput):
    layouts: list[Image.Image] = field(default_factory=list)  # the layout stage's images, before the retouch


class LayoutRetouchPipeline(SerialMethod):
    """Components: serial (`SerialGenPipeline`: Stage I and the personalized model). switch: the share
    of the steps the vanilla base denoises in the layout stage; retouch_strength: the share of the
    schedule the layout is inverted and denoised again (0: no retouch)."""

    # the defaults, chosen on 8 validation characters x 8 prompts x 2 seeds by a rule stated before the
    # run (the most diverse layout with judge appearance within 0.03 of the serialgen method's):
    # scripts/layout_retouch_sweep.py, README "Other methods"
    SWITCH, RETOUCH_STRENGTH = 0.2, 0.5

    def __init__(self, serial: SerialGenPipeline, switch: float = SWITCH, retouch_strength: float = RETOUCH_STRENGTH):
        self.serial = serial
        self.switch, self.retouch_strength = _share("switch", switch), _share("retouch_strength", retouch_strength)

    @classmethod
    def from_pretrained(cls, *, switch: float = SWITCH, retouch_strength: float = RETOUCH_STRENGTH,
                        **serial: str | Path | None) -> "LayoutRetouchPipeline":
        """serial: SerialGenPipeline.from_pretrained's arguments (every one None: the bundled models)."""
        return cls(SerialGenPipeline.from_pretrained(**serial), switch, retouch_strength)

    @torch.no_grad()
    def __call__(self, reference=None, prompts: list[str] | str = (), *, standardized=None,
                 standardize: bool | None = None, seed: int = 0,
                 batch_size: int = 8, num_inference_steps: int = 20, guidance_scale: float = 5.0, scale: float = 1.0,
                 negative_prompt: str = "", standardize_steps: int = 20, standardize_guidance: float = 2.5,
                 use_pose: bool = True, detector=None, switch: float | None = None,
                 retouch_strength: float | None = None, reference_source: bool = True,
                 first_index: int = 0) -> LayoutRetouchOutput:
        """reference, standardized, standardize, seed, ...: as SerialGenPipeline's (image i starts from
        the same noise there). switch, retouch_strength: this call's, default the pipeline's.
        reference_source=False: the retouch reads the layout alone (a DDIM reconstruction of it)."""
        prompts = prompt_list(prompts, batch_size=batch_size, num_inference_steps=num_inference_steps)
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0 and math.isfinite(scale) and scale >= 0):
            raise ValueError(f"guidance_scale and scale must be finite numbers >= 0, got {guidance_scale} and {scale}")
        switch = self.switch if switch is None else _share("switch", switch)
        strength = self.retouch_strength if retouch_strength is None else _share("retouch_strength", retouch_strength)
        serial, personalize = self.serial, self.serial.personalize
        standardize = serial.standardize is not None if standardize is None else standardize
        image, prepared, notes = serial.reference_image(
            reference, standardized, standardize, seed=seed, steps=standardize_steps,
            guidance=standardize_guidance, use_pose=use_pose, detector=detector)
        width, height = personalize.default_size()
        tokens, negative = personalize.image_tokens(np.asarray(image.convert("RGB")))
        tokens, negative = tokens.to(personalize.device), negative.to(personalize.device)
        reference_latent = personalize.encode([image.convert("RGB").resize((width, height), Image.BICUBIC)])
        empty = personalize._encode_prompts([""], "")
        previous = personalize.adapter.scale
        images, layouts = [], []
        try:
            for start in range(0, len(prompts), batch_size):
                batch = prompts[start:start + batch_size]
                text = personalize._encode_prompts(batch, negative_prompt)
                noise = personalize.initial_noise(range(first_index + start, first_index + start + len(batch)), seed,
                                                  width, height)
                layout = self.layout(noise, text, tokens, negative, num_inference_steps, guidance_scale, scale,
                                     switch, (width, height))
                layouts += personalize.decode(layout)
                if strength > 0:
                    layout = self.retouch(layout, reference_latent if reference_source else None, text, empty, tokens,
                                          negative, num_inference_steps, guidance_scale, scale, strength,
                                          (width, height))
                images += personalize.decode(layout)
        finally:
            personalize.adapter.scale = previous
        notes = notes + [f"layout-and-retouch: the base alone drew the first {switch:.0%} of the steps; "
                         + (f"the retouch re-denoised the last {strength:.0%}, reading "
                            + ("the layout and the reference" if reference_source else "the layout alone")
                            if strength > 0 else "no retouch")]
        return LayoutRetouchOutput(images, image if (standardize or standardized is not None) else None,
                                   prepared, notes, layouts)

    # -- the two stages, on latents -------------------------------------------------------------

    def _cond(self, text: torch.Tensor, tokens: torch.Tensor, pooled, size) -> dict:
        personalize = self.serial.personalize
        unet = personalize.unet
        added = None
        if personalize.is_sdxl:
            added = {"text_embeds": pooled.to(unet.dtype),
                     "time_ids": add_time_ids(personalize.base, size[1], size[0]).to(personalize.device, unet.dtype)
                     .repeat(len(text), 1)}
        return {"text": text.to(unet.dtype), "tokens": tokens.to(unet.dtype), "added": added}

    def layout(self, noise, text, tokens, negative, steps: int, guidance: float, scale: float, switch: float,
               size) -> torch.Tensor:
        """Step-blended sampling: the first round(switch x steps) steps with the adapter at scale 0
        (the vanilla base), the rest at `scale`. noise (B, C, h, w); text: _encode_prompts' 4-tuple.
        -> clean latents (B, C, h, w)."""
        personalize = self.serial.personalize
        scheduler, b = personalize.base.scheduler, len(noise)
        pe, npe, pooled, npooled = text
        cond = self._cond(torch.cat([npe, pe]), torch.cat([negative.expand(b, -1, -1), tokens.expand(b, -1, -1)]),
                          None if pooled is None else torch.cat([npooled, pooled]), size)
        scheduler.set_timesteps(steps, device=personalize.device)
        latents = noise * scheduler.init_noise_sigma
        vanilla = round(switch * steps)
        for i, t in enumerate(tqdm(scheduler.timesteps, desc="layout", disable=not personalize.progress, leave=False)):
            personalize.adapter.scale = 0.0 if i < vanilla else scale
            x = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            uncond, conditional = personalize.model(x, t, cond).chunk(2)
            latents = scheduler.step(uncond + guidance * (conditional - uncond), t, latents).prev_sample
        return latents

    def invert(self, latents, cond: dict, steps: int, strength: float) -> torch.Tensor:
        """DDIM inversion (diffusers' DDIMInverseScheduler, no guidance) of clean latents, the first
        round(strength x steps) steps of the schedule. -> the latents at the timestep where the
        sampler's last round(strength x steps) steps begin."""
        from diffusers import DDIMInverseScheduler

        personalize = self.serial.personalize
        inverse = DDIMInverseScheduler.from_config(personalize.base.scheduler.config)
        inverse.set_timesteps(steps, device=personalize.device)
        for t in tqdm(inverse.timesteps[:_count(strength, steps)], desc="invert", disable=not personalize.progress,
                      leave=False):
            eps = personalize.model(inverse.scale_model_input(latents, t), t, cond)
            latents = inverse.step(eps, t, latents).prev_sample
        return latents

    def retouch(self, layout, reference_latent, text, empty, tokens, negative, steps: int, guidance: float,
                scale: float, strength: float, size) -> torch.Tensor:
        """Invert the layout latents (B, C, h, w) (and the reference's (1, C, h, w), unless None), then
        denoise the last round(strength x steps) steps in one batch: the layouts' and the reference's
        reconstructions, and each retouched image (guidance halves) whose self-attention keys and
        values come from its own layout's row and the reference's row. -> clean latents (B, C, h, w)."""
        personalize = self.serial.personalize
        scheduler, b = personalize.base.scheduler, len(layout)
        personalize.adapter.scale = scale
        pe, npe, pooled, npooled = text
        epe, _, epooled, _ = empty
        sources = [layout] + ([reference_latent] if reference_latent is not None else [])
        r = len(torch.cat(sources))  # source rows: the B layouts, then the reference
        source_text = torch.cat([pe] + ([epe] if reference_latent is not None else []))
        source_pooled = None if pooled is None else torch.cat([pooled] + ([epooled] if reference_latent is not None else []))
        source_cond = self._cond(source_text, tokens.expand(r, -1, -1), source_pooled, size)
        noised = self.invert(torch.cat(sources), source_cond, steps, strength)  # (R, C, h, w)
        cond = self._cond(torch.cat([source_text, npe, pe]),
                          torch.cat([tokens.expand(r, -1, -1), negative.expand(b, -1, -1), tokens.expand(b, -1, -1)]),
                          None if pooled is None else torch.cat([source_pooled, npooled, pooled]), size)
        rows = torch.arange(b)
        reads = torch.stack([rows] + ([torch.full((b,), b)] if reference_latent is not None else []), 1)  # (B, S)
        state = AttentionSwapState()
        state.set(torch.cat([r + rows, r + b + rows]), torch.cat([reads, reads]))  # both guidance halves swap
        unet = personalize.unet
        scheduler.set_timesteps(steps, device=personalize.device)
        source, target = noised, noised[:b].clone()
        with processors_on(unet, "attn1", lambda name: SwapSelfAttnProcessor(state)):
            for t in tqdm(scheduler.timesteps[steps - _count(strength, steps):], desc="retouch",
                          disable=not personalize.progress, leave=False):
                x = scheduler.scale_model_input(torch.cat([source, target, target]), t)
                eps = personalize.model(x, t, cond)
                uncond, conditional = eps[r:r + b], eps[r + b:]
                source = scheduler.step(eps[:r], t, source).prev_sample
                target = scheduler.step(uncond + guidance * (conditional - uncond), t, target).prev_sample
        return target


def _share(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be a share of the steps in [0, 1], got {value}")
    return float(value)


def _count(strength: float, steps: int) -> int:
    """Steps of the retouch: round(strength x steps), at least one."""
    return max(1, round(strength * steps))
