"""Models for the speed benchmarks: the bundled mini weights when they are installed, else the
same mini architectures with random weights (wall time does not depend on the weights' values)."""

from __future__ import annotations

import numpy as np
import torch


def world_reference(seed: int = 0):
    """A held-out world sample as a prepared Reference, and the standard pose map of the world."""
    from serialgen.preprocess import Reference
    from serialgen.world.generator import CharacterWorld

    world = CharacterWorld(128, 192, seed=seed)
    s = world.sample(4, 0)  # character 4 is in the test split
    return Reference.from_world(s["image"], s["foreground"], s["keypoints"]), s["standard_pose_map"]


def _mini_vision(projection_dim: int = 256):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from serialgen.models.backbones import CLIP_PRESETS

    c = CLIP_PRESETS["mini"]
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=c.vision_hidden, intermediate_size=4 * c.vision_hidden, num_hidden_layers=c.vision_layers,
        num_attention_heads=c.vision_heads, image_size=c.image_size, patch_size=c.patch_size,
        projection_dim=projection_dim)).eval()


def standardize_pipeline(random: bool = False):
    """-> (StandardizePipeline, description)."""
    from serialgen.diffusion import sampling_scheduler
    from serialgen.models.backbones import UNET_PRESETS, VAE_PRESETS
    from serialgen.models.standardizer import Standardizer, StandardizerConfig
    from serialgen.pipelines.standardize import StandardizePipeline

    if not random:
        try:
            return StandardizePipeline.from_pretrained(), "bundled mini weights"
        except FileNotFoundError:
            pass
    from serialgen.world.generator import CharacterWorld

    kp = CharacterWorld(128, 192, seed=0).standard(4)["keypoints"]  # a world A-pose as the template
    template = tuple((float(x) / 128, float(y) / 192, float(v)) for x, y, v in kp)
    torch.manual_seed(0)
    model = Standardizer.from_unet(UNET_PRESETS["mini"].build(),
                                   StandardizerConfig(width=128, height=192, template_keypoints=template))
    pipe = StandardizePipeline(VAE_PRESETS["mini"].build().eval(), _mini_vision(), model.eval(), sampling_scheduler())
    return pipe, "mini architectures, random weights (no bundled weights installed)"


def personalize_pipeline(random: bool = False):
    """-> (PersonalizePipeline, description)."""
    from serialgen.models.backbones import CLIP_PRESETS, UNET_PRESETS, VAE_PRESETS
    from serialgen.models.ip_adapter import IPAdapter
    from serialgen.models.loading import sd_pipeline
    from serialgen.models.tokenizer import build_tokenizer
    from serialgen.pipelines.personalize import PersonalizePipeline

    if not random:
        try:
            return PersonalizePipeline.from_pretrained(), "bundled mini weights"
        except FileNotFoundError:
            pass
    torch.manual_seed(0)
    words = ["a character, waving, side view, smiling, on a beach, full body shot", "running in a forest, back view"]
    tokenizer = build_tokenizer(words * 8, vocab_size=600, model_max_length=64)
    clip = CLIP_PRESETS["mini"].build(tokenizer)
    unet = UNET_PRESETS["mini"].build().eval()
    base = sd_pipeline(unet, VAE_PRESETS["mini"].build().eval(), clip.text_model.eval(), tokenizer)
    encoder = _mini_vision()
    return (PersonalizePipeline(base, encoder, IPAdapter.for_unet(unet, encoder.config.hidden_size).eval()),
            "mini architectures, random weights (no bundled weights installed)")


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs, after one warm-up run."""
    import time

    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
