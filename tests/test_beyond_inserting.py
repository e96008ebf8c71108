"""Beyond Inserting as a serialgen method, on tiny models in the published layouts: the identity's
tokens, their save and load, the attention loss (it moves only the key features), the guidance
half without the identity, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.models.attention import PlainProcessor
from serialgen.models.identity_embedding import (
    IdentityCrossAttnProcessor,
    IdentityEmbedding,
    IdentityState,
    base_digest,
    identity_attention_loss,
)
from serialgen.pipelines.beyond_inserting import BeyondInsertingPipeline, Optimization
from serialgen.preprocess import Reference

PROMPTS = ["a character, waving, front view", "a character, running, side view"]


def _reference() -> Reference:
    image = np.full((192, 128, 3), 230, np.uint8)
    image[40:170, 40:90] = (150, 40, 160)
    mask = np.zeros((192, 128), np.float32)
    mask[40:170, 40:90] = 1
    return Reference(image=image, mask=mask, pose_map=None)


@pytest.fixture(scope="module")
def serial(tiny_serial):
    return tiny_serial


def test_zero_attention_weight_is_plain_token_optimization_and_embeddings_round_trip(serial, tmp_path):
    pipe = BeyondInsertingPipeline(serial)
    plain = pipe.optimize([_reference()], optimization=Optimization(steps=3, attention_weight=None))
    zero = pipe.optimize([_reference()], optimization=Optimization(steps=3, attention_weight=0.0))
    # the same steps (each moves a feature by up to lr = 0.1), to the fused kernel's rounding
    torch.testing.assert_close(zero.key, plain.key, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(zero.value, plain.value, atol=2e-4, rtol=1e-3)
    start = pipe.optimize([_reference()], optimization=Optimization(steps=1, lr=1e-12))
    assert (plain.key - start.key).abs().max() > 1e-3  # the steps moved it
    weighted = pipe.optimize([_reference()], optimization=Optimization(steps=3, attention_weight=10.0))
    assert (weighted.key - plain.key).abs().max() > 1e-4  # the loss is felt
    path = plain.save(tmp_path / "identity.safetensors")
    back = IdentityEmbedding.load(path, serial.personalize.unet)
    assert torch.equal(back.key, plain.key) and torch.equal(back.value, plain.value) and back.base == plain.base
    assert back.stages == 4 and back.key.shape[1] == 2


def test_an_embedding_for_another_base_is_refused(serial, tmp_path):
    unet = serial.personalize.unet
    embedding = IdentityEmbedding.initial(torch.ones(unet.config.cross_attention_dim), 2, 1, "0" * 32)
    path = embedding.save(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="made for another text-to-image base"):
        IdentityEmbedding.load(path, unet)
    with pytest.raises(ValueError, match="made for another text-to-image base"):
        BeyondInsertingPipeline(serial)(prompts=PROMPTS, embedding=embedding)
    (tmp_path / "pickle.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match="safetensors"):
        IdentityEmbedding.load(tmp_path / "pickle.bin")
    assert base_digest(unet) == base_digest(unet)  # weights only: stable


def test_the_attention_loss_moves_only_the_key_features_and_is_zero_on_the_mask():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    attn = Attention(16, cross_attention_dim=12, heads=2, dim_head=8)
    embedding = IdentityEmbedding.initial(torch.randn(12), 3, 2, "base")
    state = IdentityState(embedding)
    state.set(torch.tensor([10, 900]), [True, True])
    state.probabilities = []
    x, text = torch.randn(2, 6 * 4, 16), torch.randn(2, 5, 12)
    IdentityCrossAttnProcessor(state)(attn, x, text)
    mask = torch.zeros(2, 1, 12, 8)
    mask[:, :, :6] = 1
    identity_attention_loss(state.probabilities, mask, 2).backward()
    assert embedding.key.grad.abs().sum() > 0 and embedding.value.grad is None  # where, not what
    assert embedding.key.grad[1].abs().sum() == 0  # timestep 10 and 900: stages 0 and 2 only
    assert embedding.stage_of(torch.tensor([0, 333, 334, 999])).tolist() == [0, 0, 1, 2]
    exact = torch.zeros(1, 2, 6, 2)
    exact[..., :3, :] = 1.0  # attention exactly on the upper half of a 3x2 layer
    assert identity_attention_loss([exact], torch.cat([torch.ones(1, 1, 6, 4), torch.zeros(1, 1, 6, 4)], 2), 2) == 0


def test_rows_without_the_identity_are_the_prompt_alone():
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(1)
    attn = Attention(16, cross_attention_dim=12, heads=2, dim_head=8)
    state = IdentityState(IdentityEmbedding.initial(torch.randn(12), 2, 3, "base"))
    x, text = torch.randn(4, 24, 16), torch.randn(4, 5, 12)
    state.set(torch.full((4,), 500), [False, False, True, True])
    out = IdentityCrossAttnProcessor(state)(attn, x, text)
    torch.testing.assert_close(out[:2], PlainProcessor()(attn, x[:2], text[:2]))
    assert (out[2:] - PlainProcessor()(attn, x[2:], text[2:])).abs().max() > 1e-4


def test_a_series_optimizes_once_per_reference_and_the_cli_makes_and_uses_an_embedding(serial, folders, tmp_path):
    from serialgen.cli import main as cli

    pipe = BeyondInsertingPipeline(serial, Optimization(steps=2))
    processors = {k: type(v) for k, v in serial.personalize.unet.attn_processors.items()}
    first = pipe(_reference(), PROMPTS, num_inference_steps=2, seed=1)
    kept = pipe._kept[1]
    again = pipe(_reference(), PROMPTS, num_inference_steps=2, seed=1)
    assert pipe._kept[1] is kept and len(first.images) == 2 and first.standardized is None
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first.images, again.images, strict=True))
    assert {k: type(v) for k, v in serial.personalize.unet.attn_processors.items()} == processors

    Image.fromarray(_reference().image).save(tmp_path / "ref.png")
    models = ["--base", str(folders / "sd15")]
    assert cli(["personalize", "--method", "beyond-inserting", "--images", str(tmp_path / "ref.png"), "--out",
                str(tmp_path / "id.safetensors"), "--steps", "2", "--no-pose"] + models) == 0
    assert IdentityEmbedding.load(tmp_path / "id.safetensors").stages == 4
    generate = ["generate", "--method", "beyond-inserting", "--embedding", str(tmp_path / "id.safetensors"),
                "--out", str(tmp_path / "series"), "--prompt", PROMPTS[0], "--steps", "2"]
    assert cli(generate + models) == 0
    record = json.loads((tmp_path / "series" / "series.json").read_text())
    assert record["method"] == "beyond-inserting" and record["files"] == ["01.png"]
    assert cli(["generate", "--embedding", str(tmp_path / "id.safetensors"), "--out", str(tmp_path / "x"),
                "--prompt", PROMPTS[0]] + models) == 2  # --embedding without its method
    assert cli(generate[:-4] + ["--out", str(tmp_path / "y"), "--prompt", PROMPTS[0], "--adapter", "x"] + models) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_command_line_knows_every_method():
    from serialgen.cli import METHOD_NAMES
    from serialgen.pipelines import METHODS

    assert METHOD_NAMES == METHODS
