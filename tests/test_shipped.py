"""The bundled mini weights: each loads and meets a reduced version of its quality bar on a small
sample of characters no model has seen (a world of another seed, rendered here).

A model not bundled yet is skipped by name. The checks that take more than about 20 s are marked
`slow` (`make test-all` runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from serialgen.models.loading import bundled

HELD_OUT = [(c, p) for c in range(16) for p in (0,)]  # characters of the seed-3 world, first pose


def needs(*names):
    missing = [n for n in names if not (bundled(n) / "training.json").exists()]
    return pytest.mark.skipif(bool(missing), reason=f"bundled weights not shipped yet: {', '.join(missing)}")


@pytest.fixture(scope="module")
def samples(small_world):
    return [small_world.sample(c, p) for c, p in HELD_OUT]


@needs("vae")
def test_vae_reconstructs_unseen_renders(samples):
    from serialgen.data.memory import to_float, to_uint8
    from serialgen.metrics import psnr
    from serialgen.models.loading import load_vae

    vae = load_vae().float().eval()
    images = np.stack([s["image"] for s in samples])
    with torch.no_grad():
        recon = vae.decode(vae.encode(to_float(images)).latent_dist.mode()).sample
    scores = psnr(list(to_uint8(recon)), images)
    # 27.0 dB on the training run's 256 held-out crops; 25.3 dB measured on these 16 whole frames
    assert scores.mean() >= 24.5
    assert 0.1 < vae.config.scaling_factor < 2.0  # measured on the latents after training, not SD's default


@needs("clip")
def test_clip_retrieves_captions_of_unseen_renders(samples):
    from serialgen.models.loading import load_clip
    from serialgen.train.clip import embed_images, embed_texts

    model, tokenizer = load_clip()
    model = model.float().eval()
    img = embed_images(model, np.stack([s["image"] for s in samples]), model.config.vision_config.image_size)
    txt = embed_texts(model, tokenizer, [s["meta"]["caption"] for s in samples], tokenizer.model_max_length)
    ranks = (img @ txt.T).argsort(dim=1, descending=True)
    top5 = (ranks[:, :5] == torch.arange(len(samples))[:, None]).any(1).float().mean().item()
    assert top5 >= 0.6  # chance is 5/16


@needs("judge")
def test_judge_reads_attributes_of_unseen_renders(samples):
    from serialgen.evaluation import Judge, attribute_accuracy

    judge = Judge.from_pretrained()
    reads = judge.read([s["image"] for s in samples])
    scores = attribute_accuracy(reads, [s["meta"] for s in samples], ("top_color", "background", "view", "action"))
    # measured on these 16: background 0.94, shirt colour 0.69, view 0.69, action 0.44 (chance 0.10,
    # 0.07, 0.25, 0.07); the first judge read action from held-out renders at 0.17
    assert scores["background"] >= 0.75 and scores["top_color"] >= 0.5
    assert scores["view"] >= 0.5 and scores["action"] >= 0.3


@needs("t2i", "vae", "clip", "judge")
def test_t2i_draws_the_prompted_background(samples):
    from serialgen.evaluation import Judge, attribute_accuracy
    from serialgen.models.loading import load_base

    base = load_base()
    prompts = [s["meta"]["caption"] for s in samples[:8]]
    images = base(prompts, height=192, width=128, num_inference_steps=20, guidance_scale=5.0,
                  generator=torch.Generator().manual_seed(0), output_type="np").images
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    judge = Judge.from_pretrained()
    scores = attribute_accuracy(judge.read(images), [s["meta"] for s in samples[:8]], ("background",))
    assert scores["background"] >= 0.5  # chance 0.1


@pytest.mark.slow  # about 25 s on 2 cores
@needs("stage1", "vae", "clip", "judge")
def test_standardizer_keeps_the_clothes_of_unseen_characters(samples):
    from serialgen.evaluation import Judge, attribute_accuracy
    from serialgen.pipelines import StandardizePipeline
    from serialgen.preprocess import Reference

    pipe = StandardizePipeline.from_pretrained()
    pipe.progress = False
    refs = [Reference.from_world(s["image"], s["foreground"], s["keypoints"]) for s in samples]
    out = pipe(refs, seed=0)
    assert len(out.images) == 16 and np.asarray(out.images[0]).shape == (192, 128, 3)
    judge = Judge.from_pretrained()
    scores = attribute_accuracy(judge.read(list(out.images)), [s["meta"] for s in samples], ("top_color",))
    # The shirt colour read back from the standardized image: 0.31 (5 of 16) with the fourth phase; the true
    # standard renders read 0.63, a white canvas 0, chance 0.07. Whole-frame SSIM is no test here:
    # a blank white canvas scores 0.77 against these standard renders, this standardizer 0.68.
    assert scores["top_color"] >= 4 / 16


@needs("stage1", "judge")
@pytest.mark.xfail(strict=True, reason="the fifth-phase mini standardizer gets the top's colour family of 2 of the 4 "
                                       "photos (the green dress reads beige, the red jacket grey; the fourth phase also "
                                       "2, the third 3); strict: a standardizer that reaches 3 must drop this")
def test_standardizer_keeps_the_top_colour_of_real_photos():
    """The four real photos of tests/assets/images, standardized through the real preprocessing
    (MediaPipe pose and mask): the judge's top colour of each standardized image must fall in the
    colour family a person sees in the photo (looks.json) for at least 3 of 4."""
    import json

    from serialgen.evaluation import COLOUR_FAMILIES, Judge
    from serialgen.pipelines import StandardizePipeline

    folder = Path(__file__).parent / "assets" / "images"
    looks = {k: v for k, v in json.loads((folder / "looks.json").read_text()).items() if not k.startswith("_")}
    pipe = StandardizePipeline.from_pretrained()
    pipe.progress = False
    images = [pipe(str(folder / name), seed=0).images[0] for name in looks]
    reads = Judge.from_pretrained().read(images)["top_color"]
    right = [read in COLOUR_FAMILIES[look["top"]] for read, look in zip(reads, looks.values(), strict=True)]
    assert sum(right) >= 3, dict(zip(looks, reads, strict=True))


@pytest.mark.slow  # about 20 s on 2 cores
@needs("stage1", "stage2", "t2i", "vae", "clip", "judge")
def test_serial_pipeline_keeps_the_reference_look(samples):
    """The series keeps the reference's shirt colour well above chance (0.07). Measured on 32
    validation characters x these two prompts: 0.30 with the shipped models (fifth-phase Stage I,
    the eq. 5 adapter trained on its outputs), 0.34 with the earlier pair (difference -0.05
    [-0.16, +0.06]); on these 4 characters 2 of 8 images (the earlier pair 4 of 8). Eight images
    cannot tell those apart: this guards against the look collapsing to chance."""
    from serialgen.evaluation import APPEARANCE, Judge, attribute_accuracy
    from serialgen.pipelines import SerialGenPipeline
    from serialgen.preprocess import Reference
    from serialgen.world.attributes import scene_caption
    from serialgen.world.generator import BACKGROUND_PHRASE

    pipe = SerialGenPipeline.from_pretrained()
    pipe.progress = False
    judge = Judge.from_pretrained()
    metas, images = [], []
    for s in samples[:4]:
        ref = Reference.from_world(s["image"], s["foreground"], s["keypoints"])
        here = BACKGROUND_PHRASE[s["meta"]["background"]]
        prompts = [scene_caption(s["meta"]).replace(here, BACKGROUND_PHRASE[b]) for b in ("beach", "forest")]
        images += pipe(ref, prompts, seed=0).images
        metas += [s["meta"], s["meta"]]
    scores = attribute_accuracy(judge.read(images), metas, APPEARANCE)
    assert scores["top_color"] >= 2 / 8  # the reference's clothes come through; chance 0.07


def test_demo_runs_the_whole_pipeline(tmp_path):
    from serialgen.cli import main as cli

    assert cli(["demo", "--out", str(tmp_path), "--steps", "4"]) == 0
    names = ["reference.png", "standardized.png", "sheet.png", "series.json"] + [f"{k:02d}.png" for k in range(1, 5)]
    assert all((tmp_path / n).exists() for n in names)
    assert json.loads((tmp_path / "series.json").read_text())["steps"] == 4
    assert cli(["demo", "--out", str(tmp_path / "lr"), "--steps", "2", "--method", "layout-retouch"]) == 0
    record = json.loads((tmp_path / "lr" / "series.json").read_text())
    assert record["method"] == "layout-retouch" and len(record["files"]) == 4


def test_demo_without_weights_says_how_to_make_them(tmp_path, capsys, monkeypatch):
    from serialgen.cli import main as cli
    from serialgen.models import loading

    monkeypatch.setattr(loading, "bundled", lambda name: tmp_path / "no-weights" / name)
    assert cli(["demo", "--out", str(tmp_path / "out"), "--steps", "2"]) == 2
    assert "serialgen train" in capsys.readouterr().err


def _ship_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_weights", Path(__file__).parents[1] / "scripts/ship_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ship_weights_stores_fp16_keeps_the_bundled_readme_and_refuses_pickles(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    ship = _ship_module()
    bundled = tmp_path / "weights" / "stage2"
    bundled.mkdir(parents=True)
    (bundled / "README.md").write_text("what these weights can do\n")
    (bundled / "stale.txt").write_text("from the previous weights\n")
    monkeypatch.setattr(ship, "bundled", lambda name: bundled)
    run = tmp_path / "run"
    run.mkdir()
    (run / "training.json").write_text("{}")
    (run / "README.md").write_text("a run's folder\n")
    weight = torch.randn(4, 3)
    save_file({"w": weight, "step": torch.tensor([7])}, str(run / "ip-adapter.safetensors"))

    ship.ship("stage2", run)
    shipped = load_file(str(bundled / "ip-adapter.safetensors"))
    assert shipped["w"].dtype == torch.float16 and torch.allclose(shipped["w"].float(), weight, atol=1e-3)
    assert shipped["step"].dtype == torch.int64 and shipped["step"].item() == 7
    assert (bundled / "README.md").read_text() == "what these weights can do\n"
    assert not (bundled / "stale.txt").exists()  # the folder is replaced, not merged

    (run / "model.bin").write_bytes(b"pickle")
    with pytest.raises(SystemExit, match="pickle"):
        ship.ship("stage2", run)
    assert (bundled / "ip-adapter.safetensors").exists()  # a refused ship leaves the old weights


def test_keep_stores_a_runs_model_under_models_in_fp16(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    ship = _ship_module()
    monkeypatch.setattr(ship, "ROOT", tmp_path)
    model = tmp_path / "runs" / "stage2-paired-seed2" / "model"
    model.mkdir(parents=True)
    weight = torch.randn(5, 2)
    save_file({"w": weight}, str(model / "ip-adapter.safetensors"))
    with pytest.raises(SystemExit, match="training.json"):  # an unfinished run is not kept
        ship.keep("stage2-paired-seed2")
    assert not (tmp_path / "models" / "stage2-paired-seed2").exists()

    (model / "training.json").write_text('{"command": "serialgen train stage2"}')
    (model / "README.md").write_text("load with `from_pretrained('runs/stage2-paired-seed2/model')`.\n")
    kept = ship.keep("stage2-paired-seed2")
    assert kept == tmp_path / "models" / "stage2-paired-seed2"
    stored = load_file(str(kept / "ip-adapter.safetensors"))
    assert stored["w"].dtype == torch.float16 and torch.allclose(stored["w"].float(), weight, atol=1e-3)
    assert (kept / "training.json").read_text() == '{"command": "serialgen train stage2"}'
    assert (kept / "README.md").read_text() == "load with `from_pretrained('models/stage2-paired-seed2')`.\n"
    assert sorted(p.name for p in kept.parent.iterdir()) == ["stage2-paired-seed2"]  # no temporary left


def test_keep_keeps_a_token_study_adapters_token_grid(tmp_path, monkeypatch):
    """A kept adapter reads as many image tokens as it was trained on: its file's token_grid survives
    the fp16 copy (without it the adapter would load reading every token)."""
    from serialgen.models.ip_adapter import IPAdapter

    from .tiny import TINY_UNET

    ship = _ship_module()
    monkeypatch.setattr(ship, "ROOT", tmp_path)
    unet = TINY_UNET.build()
    model = tmp_path / "runs" / "stage2-tokens-g2" / "model"
    IPAdapter.for_unet(unet, 24, token_grid=2).save(model / "ip-adapter.safetensors")
    (model / "training.json").write_text("{}")
    kept = ship.keep("stage2-tokens-g2")
    back = IPAdapter.load(kept / "ip-adapter.safetensors", unet)
    assert back.token_grid == 2
    assert back.tokens(torch.randn(1, 1 + 4 * 4, 24)).shape[1] == 1 + 2 * 2
    assert back.image_proj.proj[0].weight.dtype == torch.float16
