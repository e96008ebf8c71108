"""Layout-and-Retouch as a serialgen method, on tiny models in the published layouts: its limits
are the base model and SerialGen, the retouch reading only the layout is a DDIM reconstruction of
it, the reference changes it, and the UNet is given back as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.models.attention import PlainProcessor
from serialgen.models.attention_swap import AttentionSwapState, SwapSelfAttnProcessor
from serialgen.pipelines import compose_method
from serialgen.pipelines.layout_retouch import LayoutRetouchPipeline

from .tiny import saved_adapter

PROMPTS = ["a character, waving, front view", "a character, running, side view"]
REFERENCE = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
OPTIONS = {"num_inference_steps": 4, "standardize_steps": 2, "use_pose": False, "seed": 5}


@pytest.fixture(scope="module")
def serial(tiny_serial):
    return tiny_serial


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, np.int16) for im in images])


def test_without_retouch_the_switch_spans_serialgen_and_the_base_alone(serial):
    pipe = LayoutRetouchPipeline(serial)
    processors = {k: type(v) for k, v in serial.personalize.unet.attn_processors.items()}
    personalized = pipe(REFERENCE, PROMPTS, switch=0.0, retouch_strength=0.0, **OPTIONS)
    assert np.array_equal(_pixels(personalized.images), _pixels(serial(REFERENCE, PROMPTS, **OPTIONS).images))
    assert np.array_equal(_pixels(personalized.images), _pixels(personalized.layouts))
    vanilla = pipe(REFERENCE, PROMPTS, switch=1.0, retouch_strength=0.0, **OPTIONS)
    assert np.array_equal(_pixels(vanilla.images), _pixels(serial(REFERENCE, PROMPTS, scale=0.0, **OPTIONS).images))
    blended = pipe(REFERENCE, PROMPTS, switch=0.5, retouch_strength=0.0, **OPTIONS)
    for other in (personalized, vanilla):  # half the steps each: neither limit
        assert np.abs(_pixels(blended.images) - _pixels(other.images)).max() > 0
    assert serial.personalize.adapter.scale == 1.0
    assert {k: type(v) for k, v in serial.personalize.unet.attn_processors.items()} == processors


def test_retouching_from_the_layout_alone_is_its_ddim_reconstruction_and_the_reference_changes_it(serial):
    pipe = LayoutRetouchPipeline(serial)
    personalize = serial.personalize
    tokens, negative = personalize.image_tokens(np.asarray(REFERENCE))
    text = personalize._encode_prompts(PROMPTS, "")
    empty = personalize._encode_prompts([""], "")
    size = personalize.default_size()
    torch.manual_seed(0)
    layout = torch.randn(2, 4, size[1] // 8, size[0] // 8)
    steps, strength = 6, 0.5
    # plain: invert, then denoise the same steps with the same conditioning, no attention swap
    cond = pipe._cond(text[0], tokens.expand(2, -1, -1), None, size)
    latents = pipe.invert(layout, cond, steps, strength)
    scheduler = personalize.base.scheduler
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps[steps - 3:]:
        latents = scheduler.step(personalize.model(latents, t, cond), t, latents).prev_sample
    assert (latents - layout).abs().mean() < (layout.abs().mean() * 0.5)  # a reconstruction, if a rough one
    alone = pipe.retouch(layout, None, text, empty, tokens, negative, steps, 1.0, 1.0, strength, size)
    torch.testing.assert_close(alone, latents, atol=1e-4, rtol=1e-4)
    with_reference = pipe.retouch(layout, personalize.encode([REFERENCE]), text, empty, tokens, negative, steps, 1.0,
                                  1.0, strength, size)
    assert (with_reference - latents).abs().max() > 1e-3


def test_a_series_has_its_notes_and_bad_settings_are_refused(serial):
    out = compose_method(serial, "layout-retouch", switch=0.25, retouch_strength=0.5)(REFERENCE, PROMPTS, **OPTIONS)
    assert len(out.images) == len(out.layouts) == 2 and out.standardized is not None
    assert any("first 25% of the steps" in note and "the layout and the reference" in note for note in out.notes)
    for bad in ({"switch": 1.5}, {"retouch_strength": -0.1}, {"switch": float("nan")}):
        with pytest.raises(ValueError, match="share of the steps"):
            LayoutRetouchPipeline(serial, **bad)
    with pytest.raises(ValueError, match="Give a reference image"):
        LayoutRetouchPipeline(serial)(None, PROMPTS)
    with pytest.raises(ValueError, match="method must be one of"):
        compose_method(serial, "dreambooth")


def test_the_swap_processor_is_plain_attention_until_told_and_refuses_bad_rows():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8)
    x = torch.randn(4, 6, 16)
    state = AttentionSwapState()
    swap = SwapSelfAttnProcessor(state)
    torch.testing.assert_close(swap(attn, x), PlainProcessor()(attn, x))
    state.set([2], [[0, 1]])  # row 2 reads rows 0 and 1; the others attend to themselves
    out = swap(attn, x)
    torch.testing.assert_close(out[[0, 1, 3]], PlainProcessor()(attn, x)[[0, 1, 3]])
    x2 = x.clone()
    x2[2] = x[0]  # with one source equal to itself, a row reading [itself] is its own attention
    state.set([2], [[0]])
    torch.testing.assert_close(swap(attn, x2)[2], PlainProcessor()(attn, x2)[2])
    assert (out[2] - PlainProcessor()(attn, x)[2]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="both a target and a source"):
        state.set([1], [[1]])
    state.set([5], [[0]])
    with pytest.raises(ValueError, match="the batch has 4"):
        swap(attn, x)


def test_generate_takes_the_method_and_its_options(folders, tmp_path):
    import json

    from serialgen.cli import main as cli

    REFERENCE.save(tmp_path / "ref.png")
    models = ["--standardizer", str(folders / "stage1"), "--base", str(folders / "sd15"), "--image-encoder",
              str(folders / "image_encoder"), "--adapter", str(saved_adapter(folders)), "--steps", "2", "--no-pose"]
    prompts = [arg for p in PROMPTS for arg in ("--prompt", p)]
    assert cli(["generate", "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "a"), "--method",
                "layout-retouch", "--switch", "0.5", "--retouch-strength", "1"] + prompts + models) == 0
    record = json.loads((tmp_path / "a" / "series.json").read_text())
    assert record["method"] == "layout-retouch" and len(record["files"]) == 2
    assert any("first 50% of the steps" in n and "last 100%" in n for n in record["notes"])
    assert cli(["generate", "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "b"), "--switch", "0.5"]
               + prompts + models) == 2  # a layout-retouch option without the method
    assert cli(["generate", "--out", str(tmp_path / "c"), "--method", "layout-retouch"] + prompts + models) == 2
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
