"""The text-to-image base on held-out captions: attribute accuracies and CLIP-T."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from ..data.memory import WorldArrays
from .judge import APPEARANCE, TEXT_CONTROL, Judge, attribute_accuracy, chance


@torch.no_grad()
def evaluate_t2i(base, judge: Judge, test: WorldArrays, count: int = 64, steps: int = 20, guidance: float = 5.0,
                 seed: int = 0, batch: int = 16) -> dict:
    """Generate from `count` held-out captions (one per sample, characters in turn) and grade."""
    picks = np.linspace(0, len(test) - 1, count).round().astype(int)
    metas = [test.meta[i] for i in picks]
    prompts = [m["caption"] for m in metas]
    h, w = test.images["image"].shape[1:3]
    images = []
    for k in tqdm(range(0, count, batch), desc="t2i samples", leave=False):
        g = torch.Generator().manual_seed(seed * 1000 + k)
        out = base(prompts[k:k + batch], height=h, width=w, num_inference_steps=steps, guidance_scale=guidance,
                   generator=g, output_type="np").images
        images += list((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    features = judge.image_features(images)
    text = judge.text_features(prompts)
    attributes = TEXT_CONTROL + APPEARANCE
    real = test.images["image"][picks]
    return {"count": count, "clip_t": float(100 * (features * text).sum(1).mean()),
            "clip_t_real_images": float(100 * (judge.image_features(real) * text).sum(1).mean()),
            "accuracy": attribute_accuracy(judge.read(images), metas, attributes),
            "accuracy_real_images": attribute_accuracy(judge.read(real), metas, attributes),
            "chance": chance(attributes), "images": images}
