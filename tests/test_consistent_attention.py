"""Consistent self-attention (StoryDiffusion) as a serialgen method, on tiny models in the
published layouts: a batch of one is ordinary sampling, the identity images share their tokens and
the later images read them, and the UNet is given back as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.models.consistent_attention import ConsistentAttentionState
from serialgen.pipelines.consistent import ConsistentAttentionPipeline

from .tiny import saved_adapter

PROMPTS = [f"a character, waving, {v} view" for v in ("front", "side", "back")]


@pytest.fixture(scope="module")
def serial(tiny_serial):
    return tiny_serial


def _pixels(images) -> list[np.ndarray]:
    return [np.asarray(im, np.int16) for im in images]


REFERENCE = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
OPTIONS = dict(num_inference_steps=3, standardize_steps=2, use_pose=False, seed=4)


def test_one_image_is_ordinary_sampling_and_the_unet_is_given_back(serial):
    processors = {k: type(v) for k, v in serial.personalize.unet.attn_processors.items()}
    plain = serial(REFERENCE, PROMPTS[:1], **OPTIONS)
    consistent = ConsistentAttentionPipeline(serial)(REFERENCE, PROMPTS[:1], **OPTIONS)
    assert np.array_equal(_pixels(plain.images)[0], _pixels(consistent.images)[0])
    assert {k: type(v) for k, v in serial.personalize.unet.attn_processors.items()} == processors
    # a lone identity image shares with no one: the first image of a longer series is still ordinary
    series = ConsistentAttentionPipeline(serial, identity_images=1)(REFERENCE, PROMPTS, **OPTIONS)
    ordinary = serial(REFERENCE, PROMPTS, **OPTIONS)
    first, rest = _pixels(series.images), _pixels(ordinary.images)
    assert np.abs(first[0] - rest[0]).max() <= 2  # batched alone or with the others (float order only)
    assert all(np.abs(a - b).max() > 2 for a, b in zip(first[1:], rest[1:]))


def test_the_identity_images_share_and_the_rest_read_what_they_kept(serial):
    ordinary = _pixels(serial(REFERENCE, PROMPTS, **OPTIONS).images)
    shared = ConsistentAttentionPipeline(serial, identity_images=2)(REFERENCE, PROMPTS, batch_size=1, **OPTIONS)
    made = _pixels(shared.images)
    assert len(made) == 3 and all(np.abs(a - b).max() > 0 for a, b in zip(made, ordinary))
    again = _pixels(ConsistentAttentionPipeline(serial, identity_images=2)(REFERENCE, PROMPTS, batch_size=2,
                                                                           **OPTIONS).images)
    assert all(np.array_equal(a, b) for a, b in zip(made, again))  # seeded; the later batching does not matter
    assert any("consistent self-attention" in n for n in shared.notes)


def test_alone_it_is_the_base_model_with_shared_attention(serial):
    alone = ConsistentAttentionPipeline(serial, identity_images=3)(None, PROMPTS, num_inference_steps=3, seed=1)
    assert alone.standardized is None and len(alone.images) == 3
    assert any("base alone" in n for n in alone.notes)


def test_the_state_keeps_a_sample_of_the_identity_tokens_and_refuses_reading_nothing():
    state = ConsistentAttentionState(sample_rate=0.25)
    with pytest.raises(ValueError, match="write"):
        state.start("read")
    with pytest.raises(ValueError, match="sample_rate"):
        ConsistentAttentionState(sample_rate=0)
    from diffusers.models.attention_processor import Attention

    from serialgen.models.consistent_attention import ConsistentSelfAttnProcessor

    torch.manual_seed(0)
    attn = Attention(8, heads=2, dim_head=4)
    processor = ConsistentSelfAttnProcessor("layer", state)
    x = torch.randn(4, 6, 8)  # 2 guidance halves x 2 images, 6 tokens each
    state.start("write", seed=0)
    processor(attn, x)
    assert {k: v.shape for k, v in state.memory.items()} == {("layer", 0, 0): (3, 8), ("layer", 0, 1): (3, 8)}
    kept = state.memory[("layer", 0, 1)]
    assert all(any(torch.equal(row, token) for token in x[2:].reshape(-1, 8)) for row in kept)  # the second half's
    state.start("read")
    assert processor(attn, x[:2]).shape == (2, 6, 8)


def test_generate_takes_the_method(folders, tmp_path):
    from serialgen.cli import main as cli

    REFERENCE.save(tmp_path / "ref.png")
    models = ["--standardizer", str(folders / "stage1"), "--base", str(folders / "sd15"), "--image-encoder",
              str(folders / "image_encoder"), "--adapter", str(saved_adapter(folders)), "--steps", "2"]
    prompts = sum((["--prompt", p] for p in PROMPTS), [])
    assert cli(["generate", "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "a"),
                "--method", "consistent-attention", "--identity-images", "2", "--no-pose"] + prompts + models) == 0
    record = __import__("json").loads((tmp_path / "a" / "series.json").read_text())
    assert record["method"] == "consistent-attention" and len(record["files"]) == 3
    assert any("consistent self-attention" in n for n in record["notes"])
    assert cli(["generate", "--out", str(tmp_path / "b"), "--method", "consistent-attention"] + prompts + models) == 0
    assert not (tmp_path / "b" / "standardized.png").exists()  # no reference: the base alone
    assert cli(["generate", "--out", str(tmp_path / "c")] + prompts + models) == 2  # serialgen needs a reference
    assert cli(["generate", "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "d"),
                "--method", "consistent-attention", "--identity-images", "0"] + prompts + models) == 2


def test_a_tail_in_several_batches_reads_the_kept_tokens_step_by_step(serial):
    prompts = PROMPTS + ["a character, jumping, front view", "a character, sitting, side view"]
    pipe = ConsistentAttentionPipeline(serial, identity_images=2)
    one_by_one = _pixels(pipe(REFERENCE, prompts, batch_size=1, **OPTIONS).images)  # the tail: three batches
    together = _pixels(pipe(REFERENCE, prompts, batch_size=3, **OPTIONS).images)  # the tail: one batch
    assert len(one_by_one) == 5
    assert all(np.abs(a - b).max() <= 2 for a, b in zip(one_by_one, together, strict=True))  # float order only
