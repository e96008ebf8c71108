"""The contract every pipeline keeps (docs/ARCHITECTURE.md, "Adding a method"), on tiny random
components: `seed=` makes a call repeatable and a different seed changes it; one PIL image per
input, at the model's size; and bad inputs (no input, zero steps, a NaN or negative guidance)
raise ValueError."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from serialgen.diffusion import sampling_scheduler
from serialgen.models.ip_adapter import IPAdapter
from serialgen.models.standardizer import Standardizer, StandardizerConfig
from serialgen.pipelines import PersonalizePipeline, SerialGenPipeline, StandardizePipeline
from serialgen.preprocess import Reference

from .tiny import TINY_UNET, TINY_VAE, tiny_image_encoder, tiny_sd_pipeline, tiny_tokenizer

TEMPLATE = tuple((0.5, 0.1 + 0.04 * k, 1.0) for k in range(18))
PROMPTS = ["a character, waving, on a beach", "a character, running, in a forest", "a character, sitting"]


def _reference(seed: int) -> Reference:
    rng = np.random.default_rng(seed)
    mask = np.zeros((192, 128), np.float32)
    mask[40:180, 30:100] = 1
    return Reference(rng.integers(0, 255, (192, 128, 3), dtype=np.uint8), mask, None,
                     rng.integers(0, 255, (192, 128, 3), dtype=np.uint8))


def _standardize() -> StandardizePipeline:
    torch.manual_seed(0)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                             num_attention_heads=2, image_size=32, patch_size=8,
                                                             projection_dim=32)).eval()
    config = StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16), template_keypoints=TEMPLATE)
    pipe = StandardizePipeline(TINY_VAE.build().eval(), encoder, Standardizer.from_unet(TINY_UNET.build(), config).eval(),
                               sampling_scheduler())
    pipe.progress = False
    return pipe


def _personalize(tmp_path_factory) -> PersonalizePipeline:
    base = tiny_sd_pipeline(tiny_tokenizer(tmp_path_factory.mktemp("tok"), PROMPTS))
    torch.manual_seed(2)
    adapter = IPAdapter.for_unet(base.unet, 24)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.3 * torch.randn_like(p))
    pipe = PersonalizePipeline(base, tiny_image_encoder(), adapter)
    pipe.progress = False
    return pipe


@dataclass
class Case:
    """call(seed, **overrides) -> the pipeline's output; `count` images of `size` (W, H)."""
    call: Callable
    empty: Callable  # a call with no input at all
    count: int
    size: tuple[int, int]


@pytest.fixture(scope="module", params=["standardize", "personalize", "serial"])
def case(request, tmp_path_factory) -> Case:
    refs = [_reference(0), _reference(1)]
    if request.param == "standardize":
        pipe = _standardize()
        return Case(lambda seed, **kw: pipe(refs, num_inference_steps=kw.get("steps", 2),
                                            guidance_scale=kw.get("guidance", 2.5), seed=seed),
                    lambda: pipe([], num_inference_steps=2), 2, (128, 192))
    personalize = _personalize(tmp_path_factory)
    w, h = personalize.default_size()
    if request.param == "personalize":
        return Case(lambda seed, **kw: personalize(refs[0].image[:h, :w], PROMPTS, num_inference_steps=kw.get("steps", 2),
                                                   guidance_scale=kw.get("guidance", 5.0), seed=seed),
                    lambda: personalize(refs[0].image[:h, :w], [], num_inference_steps=2), len(PROMPTS), (w, h))
    serial = SerialGenPipeline(_standardize(), personalize)
    serial.progress = False
    return Case(lambda seed, **kw: serial(refs[0], PROMPTS, num_inference_steps=kw.get("steps", 2), seed=seed,
                                          guidance_scale=kw.get("guidance", 5.0), standardize_steps=2),
                lambda: serial(None, PROMPTS), len(PROMPTS), (w, h))


def _arrays(out) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in out.images])


def test_one_image_per_input_at_the_models_size(case):
    out = case.call(0)
    assert len(out.images) == case.count
    assert all(im.size == case.size and im.mode == "RGB" for im in out.images)


def test_a_seed_repeats_a_call_and_another_seed_changes_it(case):
    a, b, c = _arrays(case.call(3)), _arrays(case.call(3)), _arrays(case.call(4))
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0


@pytest.mark.parametrize("bad", [{"steps": 0}, {"guidance": math.nan}, {"guidance": -1.0}, {"guidance": math.inf}])
def test_bad_settings_are_refused_with_a_value_error(case, bad):
    with pytest.raises(ValueError):
        case.call(0, **bad)


def test_no_input_is_refused_with_a_value_error(case):
    with pytest.raises(ValueError):
        case.empty()
