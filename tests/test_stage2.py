"""Stage II training under the three pairings, the serial pipeline (each stage's expensive part
once per series), and `serialgen generate`, on tiny models saved in the published layouts."""

from __future__ import annotations

import argparse
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from serialgen.cli import main as cli
from serialgen.data.memory import WorldArrays
from serialgen.evaluation import adapter_loss_gap, protocol_scenes
from serialgen.models.ip_adapter import IPAdapter
from serialgen.models.loading import load_base, record_digest
from serialgen.pipelines.personalize import PersonalizePipeline
from serialgen.pipelines.serial import SerialGenPipeline
from serialgen.pipelines.standardize import StandardizePipeline
from serialgen.train import stage2

from .tiny import tiny_sdxl_pipeline, tiny_serial_models, tiny_tokenizer


@pytest.fixture(scope="module")
def folders(tmp_path_factory, dataset):
    return tiny_serial_models(tmp_path_factory.mktemp("stage2_models"), dataset)


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
    assert stage2.main(_args(dataset, run, config, pairing)) == 0
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
    assert stage2.main(_args(dataset, tmp_path / "run", config, "standard")) == 0
    train = WorldArrays.load(dataset, "train", keys=("image", "standard_image"), progress=False)
    cfg = stage2.load_config(stage2.Stage2TrainConfig, str(config), pairing="standard")
    for step in range(cfg.steps):
        idx = batch_indices(len(train), cfg.batch_size, step, cfg.seed, 0, 1)
        expected = to_float(train.images["standard_image"][idx])
        assert torch.equal(seen[step].cpu(), expected)
        assert not torch.equal(expected, to_float(train.images["image"][idx]))


def test_own_reference_feeds_each_target_its_own_standardization(dataset, folders, tmp_path, monkeypatch):
    """SerialGen eq. 5: the reference of target x is phi(x), the standardization of x itself, and
    the targets are the standardized images."""
    from serialgen.data.memory import batch_indices, to_float

    config = _config(folders, tmp_path / "c.toml", own_reference=True, standardized_per_character=2)
    seen = _spy_on_references(monkeypatch)
    run = tmp_path / "run"
    assert stage2.main(_args(dataset, run, config, "standardized")) == 0
    train = WorldArrays.load(dataset, "train", progress=False)
    cfg = stage2.load_config(stage2.Stage2TrainConfig, str(config), pairing="standardized")
    sources = stage2.standardized_sources(train, cfg.standardized_per_character, cfg.seed)
    assert len(sources) == 2 * len(np.unique(train.character_row)) < len(train)
    standardized = stage2.load_standardized(run / "standardized", sources)
    for step in range(cfg.steps):
        idx = sources[batch_indices(len(sources), cfg.batch_size, step, cfg.seed, 0, 1)]
        assert torch.equal(seen[step].cpu(), to_float(standardized[np.searchsorted(sources, idx)]))
    with pytest.raises(ValueError, match="own_reference needs pairing = standardized"):
        stage2.main(_args(dataset, tmp_path / "bad", config, "paired"))


def test_stage2_resumes_exactly(dataset, folders, tmp_path, monkeypatch):
    config = _config(folders, tmp_path / "c.toml", steps=4, sample_every=100)
    assert stage2.main(_args(dataset, tmp_path / "straight", config, "unpaired")) == 0
    real_save = stage2.save_checkpoint

    def save_then_die(out, *, step, **kw):
        real_save(out, step=step, **kw)
        if step == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(stage2, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        stage2.main(_args(dataset, tmp_path / "split", config, "unpaired"))
    monkeypatch.setattr(stage2, "save_checkpoint", real_save)
    assert stage2.main(_args(dataset, tmp_path / "split", config, "unpaired", resume=True)) == 0
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_target_cache_is_rebuilt_for_other_captions(dataset, folders, tmp_path):
    run = tmp_path / "run"
    look = _config(folders, tmp_path / "a.toml", steps=1, sample_every=100, scene_captions=0.0)
    assert stage2.main(_args(dataset, run, look, "unpaired")) == 0
    first = load_file(str(run / "cache.safetensors"))
    shutil.rmtree(run / "checkpoint")  # a new run in the same folder, captions naming the scene only
    scene = _config(folders, tmp_path / "b.toml", steps=1, sample_every=100, scene_captions=1.0)
    assert stage2.main(_args(dataset, run, scene, "unpaired")) == 0
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
    assert stage2.main(_args(dataset, tmp_path / "run", config, "paired")) == 0
    pipe = PersonalizePipeline.from_pretrained(tmp_path / "run" / "model", base=tmp_path / "sdxl",
                                               image_encoder=folders / "image_encoder")
    assert pipe.is_sdxl
    pipe.progress = False
    images = pipe(np.full((96, 64, 3), 200, np.uint8), ["a character, waving"], num_inference_steps=2).images
    assert images[0].size == (128, 192)


def _count_calls(module, counter: list):
    return module.register_forward_hook(lambda *_: counter.append(1))


def test_an_adapter_says_when_it_was_trained_on_another_base(folders, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(folders / "sd15", base)
    (base / "training.json").write_text(json.dumps({"run": "this base"}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "ip-adapter.safetensors").write_bytes(_saved_adapter(folders).read_bytes())
    (adapter / "training.json").write_text(json.dumps({"base_made_by": record_digest(base, "t2i")}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PersonalizePipeline.from_pretrained(adapter, base=base, image_encoder=folders / "image_encoder")
    (base / "training.json").write_text(json.dumps({"run": "the base retrained"}))
    with pytest.warns(UserWarning, match="trained on another text-to-image base"):
        PersonalizePipeline.from_pretrained(adapter, base=base, image_encoder=folders / "image_encoder")


def test_serial_pipeline_standardizes_once_and_batches_the_series(folders):
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder",
                                               adapter=_saved_adapter(folders))
    serial.progress = False
    references, encodes, unet_calls = [], [], []
    serial.standardize.standardizer.reference_net.register_forward_hook(lambda *_: references.append(1))
    _count_calls(serial.personalize.image_encoder, encodes)
    _count_calls(serial.personalize.unet, unet_calls)
    prompts = [f"a character, waving, {v} view" for v in ("front", "side", "back", "three-quarter", "front")]
    reference = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
    out = serial(reference, prompts, num_inference_steps=3, batch_size=2, standardize_steps=2, use_pose=False, seed=4)
    assert len(out.images) == 5 and out.standardized.size == (128, 192)
    assert len(references) == 1  # one ReferenceNet pass for the whole series
    assert len(encodes) == 2  # the reference and the zero image, once each
    assert len(unet_calls) == 3 * 3  # steps x batches: guidance halves share a call
    again = serial(reference, prompts, num_inference_steps=3, batch_size=5, standardize_steps=2, use_pose=False, seed=4)
    assert len(unet_calls) == 3 * 3 + 3  # all five in one batch: one call per step
    for a, b in zip(again.images, out.images, strict=True):  # the series does not depend on the batching
        assert np.abs(np.asarray(a, float) - np.asarray(b, float)).max() <= 2
    one_stage = serial(reference, prompts[:1], standardize=False, num_inference_steps=2)
    assert one_stage.standardized is None and len(references) == 2


def test_adapter_loss_gap_compares_own_other_and_no_reference(dataset, folders):
    personalize = PersonalizePipeline.from_pretrained(_saved_adapter(folders), base=folders / "sd15",
                                                      image_encoder=folders / "image_encoder")
    test = WorldArrays.load(dataset, "train", keys=("image",), progress=False)  # the split with two characters
    firsts = test.first_of_each_character()[:2]
    assert len(firsts) == 2
    references, targets = test.images["image"][firsts], firsts + 1
    with pytest.raises(ValueError, match="as many references as targets"):
        adapter_loss_gap(personalize, test, references[:1], targets)
    personalize.adapter.scale = 0.0  # no image branch: every image row is the base model's loss
    off = adapter_loss_gap(personalize, test, references, targets, timesteps=(300, 700))
    assert off["reference"] == off["other"] == off["negative"] and off["gap"] == 0.0
    assert off["look_caption"] != off["negative"]  # the captions differ (they name the look)
    personalize.adapter.scale = 1.0
    on = adapter_loss_gap(personalize, test, references, targets, timesteps=(300, 700))
    assert on["targets"] == 2 and on["look_caption"] != on["negative"] != off["negative"]
    assert on["reference"] != on["other"] and on["gap"] == pytest.approx(1 - on["reference"] / on["other"])
    assert on["reference"] == pytest.approx(np.mean(on["per_target"]["reference"]), rel=1e-5)
    assert on["gap_per_target"] == pytest.approx([1 - a / b for a, b in zip(on["per_target"]["reference"],
                                                                              on["per_target"]["other"])], rel=1e-4)


def _saved_adapter(folders):
    return folders / "adapter" / "ip-adapter.safetensors"


def test_generate_writes_the_series_and_a_sheet(dataset, folders, tmp_path, capsys):
    test = WorldArrays.load(dataset, "test", limit=1, progress=False)
    Image.fromarray(test.images["image"][0]).save(tmp_path / "ref.png")
    (tmp_path / "prompts.txt").write_text("# scenes\na character, running, side view\n\na character, sitting\n")
    models = ["--standardizer", str(folders / "stage1"), "--base", str(folders / "sd15"), "--image-encoder",
              str(folders / "image_encoder"), "--adapter", str(_saved_adapter(folders))]
    out = tmp_path / "series"
    code = cli(["generate", "--reference", str(tmp_path / "ref.png"), "--prompt", "a character, waving",
                "--prompts-file", str(tmp_path / "prompts.txt"), "--out", str(out), "--steps", "2", "--no-pose", *models])
    assert code == 0
    record = json.loads((out / "series.json").read_text())
    assert record["prompts"] == ["a character, waving", "a character, running, side view", "a character, sitting"]
    assert record["files"] == ["01.png", "02.png", "03.png"]
    assert all((out / f).exists() for f in record["files"] + ["standardized.png", "sheet.png"])
    sheet = Image.open(out / "sheet.png")
    assert sheet.height >= 192 and sheet.width > 4 * 128  # reference column + three images

    for bad, message in [([], "at least one --prompt"), (["--prompt", "  "], "empty"),
                         (["--prompt", "x", "--one-stage", "--standardized", str(tmp_path / "ref.png")], "exclude")]:
        assert cli(["generate", "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "o"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert cli(["generate", "--reference", str(tmp_path / "missing.png"), "--prompt", "x", "--out",
                str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["train", "vae", "--data", str(dataset), "--out", str(tmp_path / "v"), "--pairing", "paired"]) == 2
    assert "--pairing" in capsys.readouterr().err


@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory):
    """A tiny judge in its saved layout: CLIPModel + tokenizer, and classifier/ whose heads always
    answer the same value ("front" for the view, the first value otherwise)."""
    from serialgen.models.judge import AttributeClassifier

    from .tiny import TINY_CLIP

    root = tmp_path_factory.mktemp("judge")
    tokenizer = tiny_tokenizer(root)
    torch.manual_seed(2)
    TINY_CLIP.build(tokenizer).save_pretrained(root)
    classifier = AttributeClassifier.build(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1))
    with torch.no_grad():
        for attribute, head in classifier.heads.items():
            head.weight.zero_()
            head.bias.zero_()
            values = classifier.values[attribute]
            head.bias[values.index("front" if attribute == "view" else values[0])] = 1.0  # a constant guess
    classifier.save_pretrained(root / "classifier")
    return root


def test_judge_scores_attributes_against_the_world_truth(dataset, judge_folder):
    from serialgen.evaluation import Judge, attribute_accuracy

    judge = Judge.from_pretrained(judge_folder)
    test = WorldArrays.load(dataset, "train", progress=False)
    features = judge.image_features(test.images["image"])
    assert features.shape == (len(test), 16) and torch.allclose(features.norm(dim=1), torch.ones(len(test)), atol=1e-5)
    reads = judge.read(test.images["image"])
    assert reads["view"][:2] == ["front", "front"] and len(reads["action"]) == len(test)
    scores = attribute_accuracy(reads, test.meta, ("view", "bottom_color"))
    assert scores["view"] == pytest.approx(np.mean([m["view"] == "front" for m in test.meta]))
    with_bottom = [m for m in test.meta if m["attributes"]["bottom"]]  # dresses have no bottom: skipped
    first = judge.values["bottom_color"][0]
    assert scores["bottom_color"] == pytest.approx(np.mean([m["attributes"]["bottom"]["color"] == first
                                                            for m in with_bottom]))
    with pytest.raises(FileNotFoundError, match="No judge"):
        Judge.from_pretrained(dataset)


def test_eval_commands_write_tables_scores_and_sheets(dataset, folders, judge_folder, tmp_path, capsys):
    assert cli(["eval", "stage1", "--data", str(dataset), "--weights", str(folders / "stage1"), "--samples", "2",
                "--steps", "2", "--out", str(tmp_path / "s1.json"), "--sheet", str(tmp_path / "s1.png")]) == 0
    table = capsys.readouterr().out
    assert "| stage1 |" in table and "PSNR" in table
    scores = json.loads((tmp_path / "s1.json").read_text())["stage1"]
    # sheet rows: references, the model's output, the colour-silhouette baseline, the truth
    assert scores["psnr"] > 0 and 0 < scores["ssim"] <= 1 and Image.open(tmp_path / "s1.png").height == 4 * 192
    assert "| white canvas (floor) |" in table and 0 < scores["blank"]["ssim"] <= 1
    assert "| colour silhouette (trivial) |" in table and "height within 5%" in table
    assert set(scores["baselines"]) == {"white", "silhouette"} and "figure_psnr_gain_ci" in scores["baselines"]["white"]
    assert scores["figure_ssim_ci"]["n"] == scores["count"] and 0 <= scores["appearance"]["mean"] <= 1

    adapter = _saved_adapter(folders)
    (adapter.parent / "training.json").write_text(json.dumps({"pairing": "paired"}))
    args = ["eval", "stage2", "--data", str(dataset), "--adapter", str(adapter), "--base", str(folders / "sd15"),
            "--judge", str(judge_folder), "--samples", "2", "--prompts", "2", "--seeds", "2", "--steps", "2"]
    assert cli(args + ["--out", str(tmp_path / "s2.json"), "--image-encoder", str(folders / "image_encoder")]) == 0
    table = capsys.readouterr().out
    assert "| adapter (paired) |" in table and "1 held-out characters x 2 prompts x 2 seeds" in table
    scores = json.loads((tmp_path / "s2.json").read_text())["adapter (paired)"]
    assert scores["images"] == 4 and scores["characters"] == 1  # the tiny world holds one test character
    assert -100 <= scores["clip_i"]["mean"] <= 100 and scores["clip_i"]["n"] == 1
    assert "stage1_psnr" not in scores  # one-stage: no standardized reference to score
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=32, patch_size=8)
                                  ).save_pretrained(tmp_path / "wide_encoder")
    assert cli(args + ["--image-encoder", str(tmp_path / "wide_encoder")]) == 2  # not this adapter's encoder
    assert "24-d CLIP hidden states" in capsys.readouterr().err

    assert cli(["eval", "t2i", "--data", str(dataset), "--base", str(folders / "sd15"), "--judge", str(judge_folder),
                "--samples", "3", "--steps", "2", "--out", str(tmp_path / "t2i.json")]) == 0
    scores = json.loads((tmp_path / "t2i.json").read_text())["sd15"]
    assert scores["accuracy"]["view"] in (0.0, 1 / 3, 2 / 3, 1.0) and scores["chance"]["view"] == 0.25
    assert cli(["eval", "stage1", "--data", str(tmp_path), "--weights", "x"]) == 2
    assert "no test/ shards" in capsys.readouterr().err


def test_protocol_scores_each_character_with_intervals(dataset, folders, judge_folder):
    from serialgen.evaluation import Judge, Protocol, evaluate_series
    from serialgen.face import DlibFaceEmbedder

    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=_saved_adapter(folders))
    serial.progress = False
    calls = []
    serial.standardize.standardizer.reference_net.register_forward_hook(lambda *_: calls.append(1))
    train = WorldArrays.load(dataset, "train", keys=("image", "foreground"), per_character=("standard_image",),
                             progress=False)
    protocol = Protocol(characters=3, prompts=4, seeds=2, steps=2, bootstrap=200)
    scores = evaluate_series(serial, Judge.from_pretrained(judge_folder), train, protocol, standardize=True,
                             face=DlibFaceEmbedder(), progress=False)
    assert len(calls) == 3  # Stage I once per character, whatever the seeds
    assert scores["characters"] == 3 and scores["images"] == 3 * 4 * 2
    for key in ("clip_t", "clip_i", "ap_clip_i", "stage1_psnr", "stage1_ssim"):
        ci = scores[key]
        assert ci["n"] == 3 and ci["lo"] <= ci["mean"] <= ci["hi"], key
    assert 0 < scores["stage1_ssim"]["mean"] <= 1 and scores["stage1_psnr"]["mean"] > 0
    # the constant probe says "front": a character's view accuracy is the share of front-view prompts
    fronts = np.mean([s["view"] == "front" for s in protocol_scenes(4)])
    assert scores["text_control"]["view"]["mean"] == pytest.approx(fronts)
    assert scores["per_category"]["view"]["accuracy"]["mean"] == pytest.approx(
        float(protocol_scenes(4)[2]["view"] == "front"))
    assert 0.0 <= scores["face_found"] <= 1.0 and 0.0 <= scores["mask_found"] <= 1.0
    assert len(scores["sheets"]) == 3 and len(scores["sheets"][0][2]) == 4


def test_report_writes_tables_claims_and_figures_and_reuses_scores(dataset, folders, judge_folder, tmp_path,
                                                                   monkeypatch):
    import serialgen.evaluation as evaluation

    adapters = []
    for name, pairing in (("u", "unpaired"), ("p", "paired"), ("s", "standardized")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "ip-adapter.safetensors").write_bytes(_saved_adapter(folders).read_bytes())
        (folder / "training.json").write_text(json.dumps({"pairing": pairing}))
        adapters.append(folder)
    monkeypatch.setattr("serialgen.evaluation.report.PAIRINGS", ())  # never the bundled ones in a test
    base = ["report", "--data", str(dataset), "--out", str(tmp_path / "docs" / "REPRODUCTION.md"),
            "--characters", "1", "--prompts", "4", "--seeds", "1", "--steps", "2", "--stage1-samples", "2",
            "--standardizer", str(folders / "stage1"), "--judge", str(judge_folder), "--base", str(folders / "sd15"),
            "--image-encoder", str(folders / "image_encoder")]
    rows = [f"--stage1={n}={folders / 'stage1'}" for n in ("full", "no FBDM", "no RPIM", "neither")]
    rows += [f"--adapter={n}={a}" for n, a in zip(("unpaired one-stage", "paired one-stage", "SerialGen (two-stage)"),
                                                   adapters, strict=True)]
    assert cli(base + rows) == 0
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert "## Table 2" in text and "## Table 3" in text and "| paper: unpaired one-stage | 16.08 | 89.62 |" in text
    assert "| Standardization raises series consistency over paired one-stage (AP-CLIP-I) | 83.17 vs 77.74 |" in text
    # the four Stage I rows are one model: its differences are exactly zero; one character is too few to judge
    assert "PSNR full - no FBDM +0.00 [+0.00, +0.00]" in text and "**too few characters (under 5)**" in text
    assert "SSIM full - no FBDM +0.0000 [+0.0000, +0.0000]" in text  # SSIM differences with four digits
    scores = tmp_path / "docs" / "reproduction"
    assert (scores / "pairings.png").exists() and (scores / "stage1_ablation.png").exists()
    # each adapter's sheet is kept, and the figure holds one row per adapter for the one character
    assert all((scores / f"sheet_{s}.png").exists() for s in ("unpaired-one-stage", "paired-one-stage",
                                                               "serialgen-two-stage"))
    assert Image.open(scores / "pairings.png").size[1] == 3 * 192
    pairings = json.loads((scores / "pairings.json").read_text())
    assert pairings["SerialGen (two-stage)"]["images"] == 4 and "stage1_psnr" in pairings["SerialGen (two-stage)"]
    assert "stage1_psnr" not in pairings["paired one-stage"]

    (scores / "discussion.md").write_text("Our honest reading.")
    real_series, real_stage1 = evaluation.evaluate_series, evaluation.evaluate_stage1
    monkeypatch.setattr(evaluation, "evaluate_series", lambda *a, **k: pytest.fail("scores should be reused"))
    monkeypatch.setattr(evaluation, "evaluate_stage1", lambda *a, **k: pytest.fail("scores should be reused"))
    assert cli(base + rows[:4][::-1] + rows[4:]) == 0  # the same rows asked for in another order
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert "Our honest reading." in text
    table3 = text[text.index("## Table 3"):]
    assert [table3.index(f"| {n} |") for n in ("neither", "no RPIM", "no FBDM", "full")] == \
        sorted(table3.index(f"| {n} |") for n in ("neither", "no RPIM", "no FBDM", "full"))
    # a model not trained yet leaves its row out and keeps the others' scores
    missing = [f"--stage1=ghost={tmp_path / 'untrained'}", f"--adapter=ghost adapter={tmp_path / 'untrained'}"]
    assert cli(base + rows + missing) == 0
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert "| ghost" not in text and "| full |" in text and "| SerialGen (two-stage) |" in text
    # one adapter retrained: only it is scored again, and the figure is redrawn with the others' sheets
    (adapters[2] / "training.json").write_text(json.dumps({"pairing": "standardized", "run": 2}))
    figure = (scores / "pairings.png").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(evaluation, "evaluate_series", lambda *a, **k: calls.append(1) or real_series(*a, **k))
    assert cli(base + rows) == 0
    assert calls == [1] and (scores / "pairings.png").stat().st_mtime_ns != figure
    assert Image.open(scores / "pairings.png").size[1] == 3 * 192
    # another standardizer makes only the two-stage row stale: the one-stage rows never use it
    stage1b = tmp_path / "stage1b"
    shutil.copytree(folders / "stage1", stage1b)
    (stage1b / "training.json").write_text(json.dumps({"run": "another standardizer"}))
    calls.clear()
    assert cli([str(stage1b) if a == str(folders / "stage1") else a for a in base] + rows) == 0
    assert calls == [1]
    # another judge makes every kept score stale: all rows are scored again
    judge2 = tmp_path / "judge2"
    shutil.copytree(judge_folder, judge2)
    (judge2 / "training.json").write_text(json.dumps({"run": "another judge"}))
    stage1_calls = []
    monkeypatch.setattr(evaluation, "evaluate_stage1", lambda *a, **k: stage1_calls.append(1) or real_stage1(*a, **k))
    calls.clear()
    assert cli([str(judge2) if a == str(judge_folder) else a for a in base] + rows) == 0
    assert calls == [1, 1, 1] and stage1_calls == [1, 1, 1, 1]
    # an adapter trained on another base than the report's is left out, its kept scores dropped
    (adapters[0] / "training.json").write_text(json.dumps({"pairing": "unpaired", "base_made_by": "0123456789abcdef"}))
    calls.clear()
    assert cli([str(judge2) if a == str(judge_folder) else a for a in base] + rows) == 0
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert calls == [] and "| unpaired one-stage |" not in text and "| paired one-stage |" in text
    assert "unpaired one-stage" not in json.loads((scores / "pairings.json").read_text())
    assert Image.open(scores / "pairings.png").size[1] == 2 * 192
    assert cli(base + ["--adapter", "no-equals-sign"]) == 2


def test_claim_verdicts_need_the_interval_clear_of_zero():
    from serialgen.evaluation.report import verdict

    up, down, spans = ({"mean": m, "lo": lo, "hi": hi, "n": 8} for m, lo, hi in ((2, 1, 3), (-2, -3, -1), (1, -1, 3)))
    assert verdict([up], [+1]) == "supported" and verdict([down], [-1]) == "supported"
    assert verdict([down], [+1]) == "contradicted" and verdict([up, down], [+1, +1]) == "contradicted"
    assert verdict([up, spans], [+1, +1]) == "not resolved"
    assert verdict([dict(up, n=3)], [+1]).startswith("too few")
    assert verdict([dict(up, n=0)], [+1]) == "not measured"


def test_figure_box_bounds_the_figure_of_a_standard_render():
    from serialgen.evaluation import figure_box

    canvas = np.full((40, 30, 3), 255, np.uint8)
    canvas[10:20, 5:9] = (200, 30, 30)
    ys, xs = figure_box(canvas, pad=2)
    assert (ys.start, ys.stop, xs.start, xs.stop) == (8, 22, 3, 11)
    canvas[0, 29] = 0  # a figure touching the corner: the box is clipped to the canvas
    ys, xs = figure_box(canvas, pad=2)
    assert (ys.start, ys.stop, xs.start, xs.stop) == (0, 22, 3, 30)
    assert figure_box(np.full((4, 4, 3), 255, np.uint8)) == (slice(None), slice(None))
