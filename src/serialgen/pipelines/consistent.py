"""ConsistentAttentionPipeline: StoryDiffusion's consistent self-attention as a serialgen method.

The series' first `identity_images` prompts are denoised together, each image's self-attention
also reading a sample of the others' tokens; the rest of the series, in batches, reads the tokens
kept from them (models/consistent_attention.py). Training-free, and composed with the existing
pipelines rather than threaded through them:

- alone (no reference): the text-to-image base (the image adapter at scale 0), as StoryDiffusion;
- on top of SerialGen: a `SerialGenPipeline` (Stage I, then the standardized-reference adapter)
  draws the series while the images share their self-attention.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.attention import processors_on
from ..models.consistent_attention import ConsistentAttentionState, ConsistentSelfAttnProcessor
from .personalize import prompt_list
from .serial import SerialGenOutput, SerialGenPipeline, SerialMethod


class ConsistentAttentionPipeline(SerialMethod):
    """Components: serial (`SerialGenPipeline`). sample_rate: the share of the other images' tokens
    each image attends to (StoryDiffusion: 0.5); identity_images: how many of the series' first
    images are denoised together and shared with the rest."""

    def __init__(self, serial: SerialGenPipeline, sample_rate: float = 0.5, identity_images: int = 4):
        if not 0 < sample_rate <= 1 or identity_images < 1:
            raise ValueError(f"sample_rate must be in (0, 1] and identity_images at least 1, got {sample_rate} "
                             f"and {identity_images}")
        self.serial, self.sample_rate, self.identity_images = serial, sample_rate, identity_images

    @classmethod
    def from_pretrained(cls, *, sample_rate: float = 0.5, identity_images: int = 4, **serial: str | Path | None
                        ) -> "ConsistentAttentionPipeline":
        """serial: SerialGenPipeline.from_pretrained's arguments (every one None: the bundled models)."""
        return cls(SerialGenPipeline.from_pretrained(**serial), sample_rate, identity_images)

    @torch.no_grad()
    def __call__(self, reference=None, prompts: list[str] | str = (), *, seed: int = 0, batch_size: int = 8,
                 standardized=None, **options) -> SerialGenOutput:
        """reference: as SerialGenPipeline's, or None for the base model alone; options: the rest of
        SerialGenPipeline's arguments (guidance_scale, scale, num_inference_steps, ...). Image i
        starts from the noise SerialGenPipeline gives it, so with one prompt this is that pipeline."""
        prompts = prompt_list(prompts, batch_size=batch_size)
        first = min(self.identity_images, len(prompts))
        unet = self.serial.personalize.unet
        state = ConsistentAttentionState(self.sample_rate)
        with processors_on(unet, "attn1", lambda name: ConsistentSelfAttnProcessor(name, state)):
            state.start("write", seed)
            head = self._draw(reference, prompts[:first], seed, first, standardized, 0, options)
            images, seen = list(head.images), head.standardized
            if len(prompts) > first:
                state.start("read")
                tail = self._draw(reference, prompts[first:], seed, batch_size, seen if seen is not None else standardized,
                                  first, options)
                images += tail.images
        notes = head.notes + [f"consistent self-attention: images 1-{first} shared their self-attention tokens, "
                              "the rest read them"]
        return SerialGenOutput(images, head.standardized, head.reference, notes)

    def _draw(self, reference, prompts, seed, batch_size, standardized, first_index, options) -> SerialGenOutput:
        if reference is None and standardized is None:  # alone: the base model, no image conditioning
            personalize = self.serial.personalize
            negative = personalize.adapter.tokens(personalize.negative_hidden_states())
            kept = {k: v for k, v in options.items() if k in ("negative_prompt", "num_inference_steps", "guidance_scale")}
            out = personalize(image_tokens=(negative, negative), prompts=prompts, scale=0.0, seed=seed,
                              batch_size=batch_size, first_index=first_index, **kept)
            return SerialGenOutput(out.images, None, None, ["no reference: the text-to-image base alone"])
        return self.serial(reference, prompts, seed=seed, batch_size=batch_size, standardized=standardized,
                           first_index=first_index, **options)
