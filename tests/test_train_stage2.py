"""Stage II training under each pairing (the paper's Table 2 rows and the standard-render bound),
eq. 5's own reference, exact resume, caches and SDXL, on tiny models saved in the published layouts."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from serialgen.data.memory import WorldArrays
from serialgen.models.ip_adapter import IPAdapter
from serialgen.models.loading import load_base
from serialgen.pipelines.personalize import PersonalizePipeline
from serialgen.pipelines.standardize import StandardizePipeline
from serialgen.train import stage2
from serialgen.train.config import load_config

from .tiny import tiny_sdxl_pipeline, tiny_tokenizer, train_killed_after_checkpoint, train_with


def _config(folders, path, **extra):
    values = dict(base=str(folders / "sd15"), image_encoder=str(folders / "image_encoder"),
                  standardizer=str(folders / "stage1"), steps=3, batch_size=2, warmup=1, lr=1e-3, checkpoint_every=2,
                  sample_every=3, sample_steps=2, standardize_steps=2, standardized_per_character=1) | extra
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n")
    return path

def _args(data, out, config, pairing, resume=False):
    return argparse.Namespace(data=str(data), out=str(out), config=str(config), resume=resume, pairing=pairing)

@pytest.mark.parametrize("pairing", ["standardized", "paired", "unpaired", "standard"])
def test_each_pairing_trains_only_the_adapter_and_exports_the_official_layout(pairing, dataset, folders, tmp_path):
    config = _config(folders, tmp_path / "c.toml")
    run = tmp_path / pairing
    assert train_with(stage2, _args(dataset, run, config, pairing)) == 0
    adapter_file = run / "model" / "ip-adapter.safetensors"
    keys = set(load_file(str(adapter_file)))
    assert keys and all(k.startswith(("image_proj.", "ip_adapter.")) for k in keys)
    info = json.loads((run / "model" / "training.json").read_text())
    assert info["pairing"] == pairing and info["steps"] == 3
    assert info["base_made_by"] is None  # the tiny SD folder has no training record
    assert (run / "samples" / "samples_000003.png").exists()

    pipe = PersonalizePipeline.from_pretrained(run / "model", base=folders / "sd15", image_encoder=folders / "image_encoder")
    base = load_base(folders / "sd15")
    fresh = IPAdapter.for_unet(base.unet, 24)  # training moved the adapter, and nothing else
    moved = [not torch.equal(a, b) for a, b in zip(pipe.adapter.official_state_dict().values(),
                                                    fresh.official_state_dict().values())]
    assert any(moved)
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), base.unet.state_dict().values()))
    if pairing == "standardized":
        shards = sorted((run / "standardized").glob("*.safetensors"))
        train = WorldArrays.load(dataset, "train", progress=False)
        stored = load_file(str(shards[0]))
        assert len(np.unique(train.character_row)) == sum(len(load_file(str(s))["sources"]) for s in shards)
        assert stored["images"].shape[1:] == (192, 128, 3) and stored["images"].dtype == torch.uint8

def _spy_on_references(monkeypatch) -> list[torch.Tensor]:
    """Record the reference pixels the trainer hands the CLIP image encoder, one batch per step."""
    seen = []
    real = stage2.clip_hidden_states

    def spy(encoder, pixels):
        seen.append(pixels.detach().clone())
        return real(encoder, pixels)

    monkeypatch.setattr(stage2, "clip_hidden_states", spy)
    return seen

def test_standard_pairing_feeds_the_true_standard_render_of_each_targets_character(dataset, folders, tmp_path,
                                                                                   monkeypatch):
    from serialgen.data.memory import batch_indices, to_float

    config = _config(folders, tmp_path / "c.toml")
    seen = _spy_on_references(monkeypatch)
    assert train_with(stage2, _args(dataset, tmp_path / "run", config, "standard")) == 0
    train = WorldArrays.load(dataset, "train", keys=("image", "standard_image"), progress=False)
    cfg = load_config(stage2.Stage2TrainConfig, stage2.PRESETS, "mini", str(config), pairing="standard")
    for step in range(cfg.steps):
        idx = batch_indices(len(train), cfg.batch_size, step, cfg.seed, 0, 1)
        expected = to_float(train.images["standard_image"][idx])
        assert torch.equal(seen[step].cpu(), expected)
        assert not torch.equal(expected, to_float(train.images["image"][idx]))

def _assert_each_target_fed(seen: list[torch.Tensor], cfg, sources: np.ndarray, references: np.ndarray) -> None:
    """Every step's targets are drawn from `sources` alone, and each was fed its own row of
    `references` (uint8, in `sources` order)."""
    from serialgen.data.memory import batch_indices, to_float

    for step in range(cfg.steps):
        idx = sources[batch_indices(len(sources), cfg.batch_size, step, cfg.seed, 0, 1)]
        assert torch.equal(seen[step].cpu(), to_float(references[np.searchsorted(sources, idx)]))

def test_own_reference_feeds_each_target_its_own_standardization(dataset, folders, tmp_path, monkeypatch):
    """SerialGen eq. 5: the reference of target x is phi(x), the standardization of x itself, and
    the targets are the standardized images."""
    config = _config(folders, tmp_path / "c.toml", own_reference=True, standardized_per_character=2)
    seen = _spy_on_references(monkeypatch)
    run = tmp_path / "run"
    assert train_with(stage2, _args(dataset, run, config, "standardized")) == 0
    train = WorldArrays.load(dataset, "train", progress=False)
    cfg = load_config(stage2.Stage2TrainConfig, stage2.PRESETS, "mini", str(config), pairing="standardized")
    sources = stage2.standardized_sources(train, cfg.standardized_per_character, cfg.seed)
    assert len(sources) == 2 * len(np.unique(train.character_row)) < len(train)
    _assert_each_target_fed(seen, cfg, sources, stage2.load_standardized(run / "standardized", sources))
    with pytest.raises(ValueError, match="own_reference needs pairing = standardized"):
        train_with(stage2, _args(dataset, tmp_path / "bad", config, "paired"))

def test_seed_replicas_share_the_first_runs_references_through_reference_seed(dataset, folders, tmp_path, monkeypatch):
    """reference_seed fixes the cached references (which images, their sampling noise) while the
    training seed varies: a replica given the first run's cache standardizes nothing and trains
    another adapter on the same references; without it the replica's own seed picks other images."""
    calls = []
    real = StandardizePipeline.__call__

    def counting(self, refs, **kw):
        if isinstance(refs, list):  # the cache's batches (the progress samples standardize one reference)
            calls.append(len(refs))
        return real(self, refs, **kw)

    monkeypatch.setattr(StandardizePipeline, "__call__", counting)
    first, replica, own = tmp_path / "first", tmp_path / "replica", tmp_path / "own"
    assert train_with(stage2, _args(dataset, first, _config(folders, tmp_path / "a.toml", own_reference=True),
                                    "standardized")) == 0
    made = sum(calls)
    assert made > 0
    shutil.copytree(first / "standardized", replica / "standardized")
    calls.clear()
    config = _config(folders, tmp_path / "b.toml", own_reference=True, seed=1, reference_seed=0)
    assert train_with(stage2, _args(dataset, replica, config, "standardized")) == 0
    assert calls == []  # every shard kept: same images, same standardizer, same noise
    a, b = (load_file(str(r / "model" / "ip-adapter.safetensors")) for r in (first, replica))
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)  # another training seed
    shutil.copytree(first / "standardized", own / "standardized")
    assert train_with(stage2, _args(dataset, own, _config(folders, tmp_path / "c.toml", own_reference=True, seed=1),
                                    "standardized")) == 0
    assert sum(calls) == made  # seed 1's own references: every shard made again
    train = WorldArrays.load(dataset, "train", progress=False)
    assert not np.array_equal(stage2.standardized_sources(train, 1, 0), stage2.standardized_sources(train, 1, 1))
    with pytest.raises(ValueError, match="reference_seed must be"):
        stage2.Stage2TrainConfig(reference_seed=-2)

def test_generated_pairing_feeds_each_target_the_two_stage_models_drawing_of_it(dataset, folders, tmp_path,
                                                                              monkeypatch):
    """The paper's paired one-stage baseline (§4.3.1): pairs made by applying the two-stage model to
    the data. Target x's reference is the two-stage adapter's drawing, from phi(x), of x's character
    in a random scene; the trained adapter is one-stage."""
    from serialgen.pipelines.serial import SerialGenPipeline

    from .tiny import saved_adapter

    config = _config(folders, tmp_path / "c.toml", standardized_per_character=2, generator=str(saved_adapter(folders)),
                     generate_steps=2)
    seen = _spy_on_references(monkeypatch)
    run = tmp_path / "run"
    assert train_with(stage2, _args(dataset, run, config, "generated")) == 0
    train = WorldArrays.load(dataset, "train", progress=False)
    cfg = load_config(stage2.Stage2TrainConfig, stage2.PRESETS, "mini", str(config), pairing="generated")
    sources = stage2.standardized_sources(train, cfg.standardized_per_character, cfg.seed)
    standardized = stage2.load_standardized(run / "standardized", sources)
    drawn = stage2.load_standardized(run / "generated", sources)
    assert drawn.shape == standardized.shape and np.abs(drawn.astype(int) - standardized).mean() > 5
    _assert_each_target_fed(seen, cfg, sources, drawn)  # the targets are the standardized images, each its drawing
    # the drawings are the generator's images of phi(x) in the scene prompts, seeded per shard
    drawer = PersonalizePipeline.from_pretrained(saved_adapter(folders), base=folders / "sd15",
                                                 image_encoder=folders / "image_encoder")
    drawer.progress = False
    prompts = stage2.generation_prompts(train, sources, cfg.seed)
    assert all(p.startswith("a character") for p in prompts) and len(set(prompts)) > 1
    again = drawer(list(standardized[:3]), prompts[:3], num_inference_steps=2, guidance_scale=cfg.generate_guidance,
                   seed=cfg.seed * 7919).images
    assert np.abs(np.stack([np.asarray(im) for im in again]).astype(int) - drawn[:3]).max() <= 2
    info = json.loads((run / "model" / "training.json").read_text())
    assert info["pairing"] == "generated" and info["generator"].endswith("ip-adapter.safetensors")
    serial = SerialGenPipeline.from_pretrained(adapter=run / "model", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder")
    assert serial.standardize is None  # one stage at inference


def test_token_grid_trains_a_weaker_encoder_and_bad_grids_fail_before_training(dataset, folders, tmp_path):
    """The paper's token study: an unpaired adapter reading CLS + a 2x2 grid of pooled patch tokens."""
    from serialgen.models.loading import load_base

    run = tmp_path / "run"
    assert train_with(stage2, _args(dataset, run, _config(folders, tmp_path / "c.toml", token_grid=2), "unpaired")) == 0
    adapter = IPAdapter.load(run / "model" / "ip-adapter.safetensors", load_base(folders / "sd15").unet)
    assert adapter.token_grid == 2
    assert "(the CLS token and the patch tokens pooled to 2x2: 5 tokens)" in (run / "model" / "README.md").read_text()
    with pytest.raises(ValueError, match="finer than the image encoder's 4x4 patch grid"):
        train_with(stage2, _args(dataset, tmp_path / "fine", _config(folders, tmp_path / "f.toml", token_grid=9),
                                 "unpaired"))
    assert not (tmp_path / "fine" / "model").exists()
    with pytest.raises(ValueError, match="token_grid must be -1"):
        load_config(stage2.Stage2TrainConfig, stage2.PRESETS, "mini", str(_config(folders, tmp_path / "b.toml",
                                                                                     token_grid=-3)))


def test_stage2_resumes_exactly(dataset, folders, tmp_path, monkeypatch):
    config = _config(folders, tmp_path / "c.toml", steps=4, sample_every=100)
    assert train_with(stage2, _args(dataset, tmp_path / "straight", config, "unpaired")) == 0
    train_killed_after_checkpoint(monkeypatch, stage2, _args(dataset, tmp_path / "split", config, "unpaired"),
                                  step=2)
    assert train_with(stage2, _args(dataset, tmp_path / "split", config, "unpaired", resume=True)) == 0
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def test_the_target_cache_is_rebuilt_for_other_captions(dataset, folders, tmp_path):
    run = tmp_path / "run"
    look = _config(folders, tmp_path / "a.toml", steps=1, sample_every=100, scene_captions=0.0)
    assert train_with(stage2, _args(dataset, run, look, "unpaired")) == 0
    first = load_file(str(run / "cache.safetensors"))
    shutil.rmtree(run / "checkpoint")  # a new run in the same folder, captions naming the scene only
    scene = _config(folders, tmp_path / "b.toml", steps=1, sample_every=100, scene_captions=1.0)
    assert train_with(stage2, _args(dataset, run, scene, "unpaired")) == 0
    second = load_file(str(run / "cache.safetensors"))
    assert torch.equal(first["latents"], second["latents"]) and not torch.equal(first["text"], second["text"])

def test_standardized_shards_resume_and_are_checked(dataset, folders, tmp_path):
    cfg = stage2.Stage2TrainConfig(standardize_steps=1)
    train = WorldArrays.load(dataset, "train", keys=("image", "foreground"), progress=False)
    sources = stage2.standardized_sources(train, 2, seed=0)
    assert len(sources) == 2 * len(np.unique(train.character_row))
    pipe = StandardizePipeline.from_pretrained(folders / "stage1")
    calls = []
    real = pipe.__call__

    class Counting:
        progress = False

        def __call__(self, refs, **kw):
            calls.append(len(refs))
            return real(refs, **kw)

    stage2.precompute_standardized(train, sources, tmp_path, Counting(), cfg, shard_size=4, progress=False)
    shards = sorted(tmp_path.glob("*.safetensors"))
    assert len(shards) == -(-len(sources) // 4) and sum(calls) == len(sources)
    shards[1].unlink()  # as if killed before the second shard was written
    calls.clear()
    stage2.precompute_standardized(train, sources, tmp_path, Counting(), cfg, shard_size=4, progress=False)
    assert calls == [4]
    calls.clear()  # shards made by another standardizer or sampler are made again
    stage2.precompute_standardized(train, sources, tmp_path, Counting(), cfg, shard_size=4, progress=False,
                                   made_by="another standardizer")
    assert sum(calls) == len(sources)
    calls.clear()
    stage2.precompute_standardized(train, sources, tmp_path, Counting(), cfg, shard_size=4, progress=False,
                                   made_by="another standardizer")
    assert calls == []
    assert stage2.load_standardized(tmp_path, sources).shape == (len(sources), 192, 128, 3)
    with pytest.raises(ValueError, match="does not hold"):
        stage2.load_standardized(tmp_path, sources[:-1])

def test_unpaired_augmentation_crops_and_flips():
    images = np.zeros((64, 24, 16, 3), np.uint8)
    images[:, :, :8] = 255  # left half white
    out = stage2.augment(images, np.random.default_rng(0), smallest=0.7)
    assert out.shape == (64, 3, 24, 16) and out.min() >= -1 and out.max() <= 1
    left = out[:, 0, :, :4].mean((1, 2))
    assert (left > 0.5).any() and (left < -0.5).any()  # some flipped, some not

def test_sdxl_base_trains_with_pooled_text_and_time_ids(dataset, folders, tmp_path):
    tiny_sdxl_pipeline(tiny_tokenizer(tmp_path / "tok")).save_pretrained(tmp_path / "sdxl")
    config = _config(folders, tmp_path / "c.toml", base=str(tmp_path / "sdxl"), steps=2, sample_every=100)
    assert train_with(stage2, _args(dataset, tmp_path / "run", config, "paired")) == 0
    pipe = PersonalizePipeline.from_pretrained(tmp_path / "run" / "model", base=tmp_path / "sdxl",
                                               image_encoder=folders / "image_encoder")
    assert pipe.is_sdxl
    pipe.progress = False
    images = pipe(np.full((96, 64, 3), 200, np.uint8), ["a character, waving"], num_inference_steps=2).images
    assert images[0].size == (128, 192)
