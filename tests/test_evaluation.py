"""Evaluation: the judge against the world's truth, the adapter loss gap, the paper's protocol with
intervals, and `serialgen eval`, on tiny models and a tiny judge."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.cli import main as cli
from serialgen.data.memory import WorldArrays
from serialgen.evaluation import adapter_loss_gap, protocol_scenes
from serialgen.pipelines.personalize import PersonalizePipeline
from serialgen.pipelines.serial import SerialGenPipeline

from .tiny import saved_adapter


def test_adapter_loss_gap_compares_own_other_and_no_reference(dataset, folders):
    personalize = PersonalizePipeline.from_pretrained(saved_adapter(folders), base=folders / "sd15",
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

    adapter = saved_adapter(folders)
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
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders),
                                               one_stage=False)  # two stages, whatever the adapter's record says
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


def test_protocol_resumes_character_by_character(dataset, folders, judge_folder, tmp_path):
    from serialgen.evaluation import Judge, Protocol, evaluate_series

    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders),
                                               one_stage=False)
    serial.progress = False
    calls = []
    serial.standardize.standardizer.reference_net.register_forward_hook(lambda *_: calls.append(1))
    train = WorldArrays.load(dataset, "train", keys=("image", "foreground"), per_character=("standard_image",),
                             progress=False)
    judge, kept = Judge.from_pretrained(judge_folder), tmp_path / "kept"
    two = Protocol(characters=2, prompts=4, seeds=2, steps=2, bootstrap=200)
    first = evaluate_series(serial, judge, train, two, standardize=True, progress=False, resume=kept)
    assert len(calls) == 2 and sorted(p.name for p in kept.iterdir()) == ["0000.npz", "0001.npz"]
    again = evaluate_series(serial, judge, train, two, standardize=True, progress=False, resume=kept)
    assert len(calls) == 2  # everything read back: nothing standardized or drawn again
    for key in ("clip_t", "clip_i", "ap_clip_i", "stage1_psnr", "layout_diversity", "per_character", "appearance"):
        assert again[key] == first[key], key
    for (ref, std, ims, _), (ref2, std2, ims2, _) in zip(first["sheets"], again["sheets"], strict=True):
        assert np.array_equal(ref, ref2) and np.array_equal(np.asarray(std), np.asarray(std2))
        assert all(np.array_equal(a, b) for a, b in zip(ims, ims2, strict=True))
    more = evaluate_series(serial, judge, train, dataclasses.replace(two, characters=3), standardize=True,
                           progress=False, resume=kept)
    assert len(calls) == 3 and more["characters"] == 3  # only the new character was scored
    assert more["per_character"]["clip_i"][:2] == first["per_character"]["clip_i"]
    # the oracle: the adapter reads each character's true standard render, and Stage I never runs
    oracle = evaluate_series(serial, judge, train, dataclasses.replace(two, characters=1), standardize=True,
                             progress=False, oracle=True)
    assert len(calls) == 3 and "stage1_psnr" not in oracle
    truth = train.characters["standard_image"][train.character_row[train.first_of_each_character()[0]]]
    assert np.array_equal(np.asarray(oracle["sheets"][0][1]), truth)
    assert oracle["per_character"]["clip_i"] != first["per_character"]["clip_i"][:1]

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


def test_layout_diversity_is_one_minus_the_mask_iou_across_seeds():
    from serialgen.evaluation.series import layout_diversity

    a = np.zeros((2, 8, 8), bool)  # (prompts, H, W)
    a[:, 2:6, 2:6] = True
    same = np.stack([a, a])  # two seeds, the same layouts
    assert layout_diversity(same) == 0.0
    b = np.zeros_like(a)
    b[:, :2, :2] = True  # disjoint: IoU 0
    assert layout_diversity(np.stack([a, b])) == 1.0
    c = a.copy()
    c[:, 2:6, 2:4] = False  # half of a: IoU 0.5
    assert layout_diversity(np.stack([a, c])) == 0.5
    empty = np.zeros((2, 2, 8, 8), bool)
    assert layout_diversity(empty) == 0.0  # no figure in either: the same (empty) layout
    assert np.isnan(layout_diversity(same[:1]))  # one seed: no pair
