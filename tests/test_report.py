"""`serialgen report`: the paper's tables and claims, cached scores reused, and the verdict rule."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.cli import main as cli
from serialgen.evaluation.report import OTHER_METHODS, _cached_characters, _present, cost_lines

from .tiny import saved_adapter


def test_report_writes_tables_claims_and_figures_and_reuses_scores(dataset, folders, judge_folder, tmp_path,
                                                                   monkeypatch):
    import serialgen.evaluation as evaluation

    adapters = []
    for name, pairing in (("u", "unpaired"), ("p", "paired"), ("s", "standardized")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "ip-adapter.safetensors").write_bytes(saved_adapter(folders).read_bytes())
        (folder / "training.json").write_text(json.dumps({"pairing": pairing}))
        adapters.append(folder)
    # the token study's weaker encoder: the tiny CLIP's CLS + its 4x4 patches pooled to 2x2 (5 tokens of 17)
    from serialgen.models.ip_adapter import IPAdapter
    from serialgen.models.loading import load_base

    weak = tmp_path / "weak"
    IPAdapter.for_unet(load_base(folders / "sd15").unet, 24, token_grid=2).save(weak / "ip-adapter.safetensors")
    (weak / "training.json").write_text(json.dumps({"pairing": "unpaired"}))
    monkeypatch.setattr("serialgen.evaluation.report.PAIRINGS", ())  # never the bundled ones in a test
    base = ["report", "--data", str(dataset), "--out", str(tmp_path / "docs" / "REPRODUCTION.md"),
            "--characters", "1", "--prompts", "4", "--seeds", "1", "--steps", "2", "--stage1-samples", "2",
            "--standardizer", str(folders / "stage1"), "--judge", str(judge_folder), "--base", str(folders / "sd15"),
            "--image-encoder", str(folders / "image_encoder")]
    rows = [f"--stage1={n}={folders / 'stage1'}" for n in ("full", "no FBDM", "no RPIM", "neither")]
    rows += [f"--adapter={n}={a}" for n, a in zip(("unpaired one-stage", "paired one-stage", "SerialGen (two-stage)"),
                                                   adapters, strict=True)]
    assert cli(base + rows + [f"--adapter=unpaired one-stage, 5 image tokens={weak}"]) == 0
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    study = text[text.index("## Token study"):]
    assert "| 5 |" in study and "| 17 |" in study and study.index("| 5 |") < study.index("| 17 |")
    assert "More image tokens copy the reference" in study and (tmp_path / "docs" / "reproduction" / "tokens.png").exists()
    assert "5 image tokens" not in text[text.index("## Table 2"):text.index("## Token study")]  # not a Table 2 row
    assert "## Table 2" in text and "## Table 3" in text and "| paper: unpaired one-stage | 16.08 | 89.62 |" in text
    assert "| Standardization raises series consistency over paired one-stage (AP-CLIP-I) | 83.17 vs 77.74 |" in text
    # the four Stage I rows are one model: its differences are exactly zero; one character is too few to judge
    assert "PSNR full - no FBDM +0.00 (no interval from 1 character)" in text
    assert "**too few characters (under 5)**" in text
    assert "SSIM full - no FBDM +0.0000 (no interval" in text  # SSIM differences with four digits
    scores = tmp_path / "docs" / "reproduction"
    assert (scores / "pairings.png").exists() and (scores / "stage1_ablation.png").exists()
    # each adapter's sheet is kept, and the figure holds one row per adapter for the one character
    assert all((scores / f"sheet_{s}.png").exists() for s in ("unpaired-one-stage", "paired-one-stage",
                                                               "serialgen-two-stage"))
    assert Image.open(scores / "pairings.png").size[1] == 3 * 192
    assert "one row per model (unpaired one-stage, paired one-stage, SerialGen (two-stage)):" in text  # its order
    pairings = json.loads((scores / "pairings.json").read_text())
    assert pairings["SerialGen (two-stage)"]["images"] == 4 and "stage1_psnr" in pairings["SerialGen (two-stage)"]
    assert "stage1_psnr" not in pairings["paired one-stage"]
    assert "## Other methods" in text and "| Layout-and-Retouch |" in text and "| Beyond Inserting |" in text
    methods = json.loads((scores / "methods.json").read_text())
    assert set(methods) == {name for name, _, _ in OTHER_METHODS}
    assert all(m["images"] == 4 and m["seconds_per_character"]["mean"] > 0 for m in methods.values())
    assert "The attention loss raises identity accuracy over plain token optimization" in text
    assert "Cost: scoring took" in text and "SerialGen (two-stage) " in text[text.index("Cost: scoring"):]
    assert "Cost: scoring took at least" not in text  # nothing resumed: every time is whole
    assert pairings["paired one-stage"]["cost"] | {"seconds": 0} == {
        "seconds": 0, "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "characters": 1, "resumed": 0}
    floor = methods["text-to-image base alone (no reference: the floor)"]
    assert floor["images"] == 4 and "stage1_psnr" in floor  # Stage I ran; the adapter read it at scale 0
    # every row kept its one character's scores as they were measured (an interrupted report resumes there)
    kept = sorted((scores / "characters").iterdir())
    assert len(kept) == 4 + len(OTHER_METHODS) and all((k / "0000.npz").exists() for k in kept)
    assert any(k.name.startswith("serialgen-two-stage-") for k in kept)

    (scores / "discussion.md").write_text("Our honest reading.")
    real_series, real_stage1 = evaluation.evaluate_series, evaluation.evaluate_stage1
    monkeypatch.setattr(evaluation, "evaluate_series", lambda *a, **k: pytest.fail("scores should be reused"))
    monkeypatch.setattr(evaluation, "evaluate_stage1", lambda *a, **k: pytest.fail("scores should be reused"))
    # a Table 3 row's images are kept beside its scores: the figure is drawn from every row's, and a
    # row whose images are missing has them drawn again without scoring it
    assert all((scores / f"stage1_{s}.png").exists() for s in ("full", "no-fbdm", "no-rpim", "neither"))
    (scores / "stage1_no-fbdm.png").unlink()
    (scores / "stage1_ablation.png").unlink()
    assert cli(base + rows[:4][::-1] + rows[4:]) == 0  # the same rows asked for in another order
    assert (scores / "stage1_no-fbdm.png").exists() and Image.open(scores / "stage1_ablation.png").size[1] == 6 * 192
    # (the four rows are one model: the images drawn again are the ones its scoring drew)
    assert np.array_equal(np.asarray(Image.open(scores / "stage1_no-fbdm.png")),
                          np.asarray(Image.open(scores / "stage1_full.png")))
    assert json.loads((scores / "stage1_ablation_rows.json").read_text())["rows"] == \
        ["neither", "no RPIM", "no FBDM", "full"]
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
    # --kept-only writes the same tables from the kept scores, scoring nothing; every kept fingerprint
    # is what this checkout gives (the methods' too, checked against the kept two-stage row's model)
    before = text[text.index("## The claims"):text.index("## What the runs support")]
    (scores / "pairings.png").unlink()
    (scores / "stage1_ablation.png").unlink()
    assert cli(base + ["--kept-only"]) == 0  # no rows named: the kept ones
    # and both figures drawn again from the kept sheets and strips
    assert Image.open(scores / "pairings.png").size[1] == 3 * 192
    assert Image.open(scores / "stage1_ablation.png").size[1] == 6 * 192
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert text[text.index("## The claims"):text.index("## What the runs support")] == before and "‡" not in text
    # (the other methods, which run on the two-stage row's models, are left out from here: --no-methods)
    base.append("--no-methods")
    # one adapter retrained: --kept-only marks its kept row (and does not judge its claims), then a
    # report scores only it again, and the figure is redrawn with the others' sheets
    (adapters[2] / "training.json").write_text(json.dumps({"pairing": "standardized", "run": 2}))
    assert cli(base + ["--kept-only"]) == 0
    text = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    assert "| SerialGen (two-stage) ‡ |" in text and "| paired one-stage |" in text and "by other scoring code" in text
    claimed = [line for line in text[text.index("## The claims"):text.index("## Table 2")].splitlines()
               if line.startswith("| ") and "| verdict |" not in line]
    with_it = [line for line in claimed if "Unpaired one-stage training copies" not in line and "FBDM" not in line]
    assert len(with_it) >= 5 and all(line.endswith("| – | **not judged: a row was scored by other code or models "
                                                   "than this checkout's (‡)** |") for line in with_it)
    assert not any("(‡)" in line for line in claimed if line not in with_it)  # claims without the row are judged
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
    small = {"mean": 0.1, "lo": -0.4, "hi": 0.6, "n": 40}
    assert verdict([small], [+1], [1.0]) == "no effect within +-1"  # inside the margin stated in advance
    assert verdict([small], [+1], [0.5]) == "not resolved" and verdict([small], [+1]) == "not resolved"
    # clear of zero but inside the margin: real, and too small to count
    tiny = {"mean": 0.02, "lo": 0.01, "hi": 0.04, "n": 64}
    assert verdict([tiny], [+1], [0.2]) == "supported, but negligible (within +-0.2)"
    assert verdict([tiny], [-1], [0.2]) == "contradicted, but negligible (within +-0.2)"
    assert verdict([tiny, up], [+1, +1], [0.2, 0.5]) == "supported"  # one interval beyond its margin


def test_a_rows_training_seeds_are_merged_and_compared_over_seeds_and_characters():
    """A name given twice is one row of two independently trained models: its intervals and its
    differences take both seeds and the paired characters."""
    from serialgen.evaluation.report import PAIRING_METRICS, difference, grouped, merge_runs
    from serialgen.evaluation.stats import seed_character_ci

    assert grouped([("a", "x"), ("b", "y"), ("a", "z")]) == {"a": ["x", "z"], "b": ["y"]}
    rng = np.random.default_rng(0)
    character = rng.normal(size=12)

    def run(offset):
        return {"per_character": {"clip_i": list(60 + 5 * character + offset + rng.normal(size=12)),
                                  "appearance": [None] + list(rng.uniform(size=11))}, "clip_i": {"mean": 0.0}}

    two = merge_runs([run(1.0), run(3.0)], PAIRING_METRICS)
    one = merge_runs([run(0.0)], PAIRING_METRICS)
    assert two["seeds"] == 2 and len(two["runs"]) == 2 and np.array(two["per_seed"]["clip_i"]).shape == (2, 12)
    table = np.array(two["per_seed"]["clip_i"])
    assert two["clip_i"] == seed_character_ci(table) and two["clip_i"]["mean"] == pytest.approx(table.mean())
    assert two["appearance"]["mean"]["n"] == 11  # the character without a value is left out
    d = difference(two, one, "clip_i")
    assert d == seed_character_ci(table, np.array(one["per_seed"]["clip_i"])) and d["seeds"] == [2, 1]
    assert d["lo"] < 2.0 < d["hi"]  # the truth (+2) inside
    # the two seeds differ by 2 points: the seed part widens the interval beyond the characters' alone
    alone = seed_character_ci(table.mean(0, keepdims=True), np.array(one["per_seed"]["clip_i"]))
    assert d["hi"] - d["lo"] > 2 * (alone["hi"] - alone["lo"])


def test_kept_scores_are_keyed_by_what_made_them_not_by_names(tmp_path):
    """A model's files, the data's samples and the code: a renamed folder keeps the key, an edited
    config or one changed pixel does not."""
    from serialgen.data.memory import WorldArrays
    from serialgen.evaluation.report import data_digest, files_digest, source_digest

    model = tmp_path / "a" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"start": "canvas"}')
    (model / "weights.safetensors").write_bytes(b"\x00" * 64)
    key = files_digest(model)
    moved = tmp_path / "b" / "renamed"
    moved.parent.mkdir()
    model.rename(moved)
    assert files_digest(moved) == key
    (moved / "config.json").write_text('{"start": "silhouette"}')
    assert files_digest(moved) != key

    images = np.zeros((2, 4, 4, 3), np.uint8)
    arrays = WorldArrays({"image": images}, [{"character_id": 9}, {"character_id": 9}])
    before = data_digest(arrays)
    arrays.images["image"][1, 2, 2, 0] = 1
    assert data_digest(arrays) != before
    assert len(source_digest()) == 32 and source_digest() == source_digest()


def test_kept_scores_go_stale_when_scoring_code_changes_and_only_then(tmp_path):
    """The code key: a digest of every scoring and sampling module of the package; an edit to one
    changes it (and so every kept score's fingerprint), an edit to the CLI or the report's layout
    does not, and the package's place on disk does not enter it."""
    import serialgen
    from serialgen.evaluation.report import source_digest

    package = tmp_path / "serialgen"
    shutil.copytree(Path(serialgen.__file__).parent, package, ignore=shutil.ignore_patterns("weights", "__pycache__"))
    key = source_digest(package)
    assert key == source_digest()

    def edited(rel: str) -> str:
        f = package / rel
        original = f.read_text()
        f.write_text(original + "\n# an edit\n")
        try:
            return source_digest(package)
        finally:
            f.write_text(original)

    for scoring in ("evaluation/stats.py", "evaluation/series.py", "pipelines/serial.py"):
        assert edited(scoring) != key, scoring
    for layout in ("cli.py", "evaluation/report.py", "train/loop.py"):
        assert edited(layout) == key, layout
    assert source_digest(package) == key


def test_the_loss_gap_is_split_into_its_parts_against_no_image():
    from serialgen.evaluation.gap import loss_gap_parts

    gap = {"per_target": {"reference": [0.9, 0.8], "other": [1.0, 1.0], "negative": [0.95, 0.8],
                          "look_caption": [0.5, 0.4]}}
    parts = loss_gap_parts(gap)
    np.testing.assert_allclose(parts["loss_gap"], [10.0, 20.0])
    np.testing.assert_allclose(parts["own_vs_none"], [100 * (1 - 0.9 / 0.95), 0.0])
    np.testing.assert_allclose(parts["other_vs_none"], [100 * (1 - 1 / 0.95), -25.0])  # a wrong reference hurts
    np.testing.assert_allclose(parts["look_vs_none"], [100 * (1 - 0.5 / 0.95), 50.0])


def test_rows_measured_on_other_characters_are_marked_and_not_judged():
    from serialgen.evaluation.report import ReportConfig, claims, write_markdown

    def row(data, offset):
        values = list(np.linspace(0, 1, 10) + offset)
        return {"per_character": {"psnr": values, "ssim": values}, "psnr_ci": {"mean": offset, "lo": 0, "hi": 1, "n": 10},
                "ssim_ci": {"mean": 0.5, "lo": 0, "hi": 1, "n": 10}, "count": 10, "data": data}

    stage1 = {"full": row("now", 1.0), "no FBDM": row("before", 0.0)}
    found = claims(stage1, {}, data="now")
    assert found[0]["verdict"].startswith("not judged") and found[0]["ours"] == "–"
    assert claims(stage1, {}, data=None)[0]["verdict"].startswith("supported")  # without the check, a (wrong) comparison
    text = write_markdown(ReportConfig(data="world"), stage1, {}, "serialgen report", data="now")
    assert "| no FBDM † |" in text and "| full |" in text and "† measured on other characters" in text

    # the trivial bounds come from a row measured on this report's characters, not the first row
    def ci(mean):
        return {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1, "n": 10}

    stage1 = {"no FBDM": row("before", 0.0) | {"blank": {"psnr": 1.0, "ssim": 0.1}},
              "full": row("now", 1.0) | {"blank": {"psnr": 13.94, "ssim": 0.7814}, "silhouette_appearance": {"mean": 0.3},
                                         "baselines": {"white": {"figure_psnr_ci": ci(11.5), "figure_ssim_ci": ci(0.6)},
                                                       "silhouette": {"ssim_ci": ci(0.785), "figure_psnr_ci": ci(13.3),
                                                                      "figure_ssim_ci": ci(0.65)}}}}
    text = write_markdown(ReportConfig(data="world"), stage1, {}, "serialgen report", data="now")
    assert "| white canvas | 13.94 | 0.7814 | 11.50 [11.40, 11.60] | 0.6000 [0.5000, 0.7000] | | |" in text
    assert "| colour silhouette | – | 0.7850 [0.6850, 0.8850] | 13.30 [13.20, 13.40] | 0.6500 [0.5500, 0.7500] | 0.30 | |" \
        in text


def test_the_papers_paired_baseline_gets_its_own_claims_against_the_two_stage_row():
    """With the paper's paired one-stage (references drawn by the two-stage model) scored, the
    two-stage row is compared with it too; the true-render paired row keeps its own claims."""
    from serialgen.evaluation.report import PAIRING_METRICS, PAPER_PAIRED, claims, merge_runs

    rng = np.random.default_rng(1)

    def row(offset):
        base = rng.normal(size=10)
        return merge_runs([{"per_character": {m: list(50 + base + offset + 0.1 * rng.normal(size=10))
                                              for m in ("clip_i", "ap_clip_i", "appearance", "clip_t",
                                                        "text_control")}}], PAIRING_METRICS)

    two_stage, drawn = row(3.0), row(0.0)
    found = {c["claim"]: c for c in claims({}, {"SerialGen (two-stage)": two_stage, PAPER_PAIRED: drawn})}
    mine = [c for name, c in found.items() if "the paper's paired one-stage" in name]
    assert len(mine) == 3 and all(c["verdict"] == "supported; a row has one training seed: its interval leaves "
                                  "out the seeds' variance" for c in mine)
    assert "CLIP-I two-stage - paired (drawn) +3" in mine[0]["ours"]
    assert not claims({}, {"SerialGen (two-stage)": two_stage})  # without the baseline, nothing to compare
    worse = {c["claim"]: c for c in claims({}, {"SerialGen (two-stage)": drawn, PAPER_PAIRED: two_stage})}
    assert all(c["verdict"].startswith("contradicted;") for name, c in worse.items() if "paper's paired" in name)


def test_the_other_methods_can_be_scored_on_the_first_of_table_2s_characters(monkeypatch, tmp_path, capsys):
    """--method-characters N: the other methods are scored on the first N characters only, and their
    claims compare with the SerialGen row on those N (its first N columns), not on misaligned ones."""
    import types

    import serialgen.evaluation as evaluation
    import serialgen.evaluation.report as report
    import serialgen.face
    import serialgen.pipelines
    from serialgen.evaluation import Protocol
    from serialgen.pipelines.serial import SerialGenPipeline

    scored = []

    def fake_series(runner, judge, test, protocol, *args, **kwargs):
        scored.append(protocol.characters)
        values = [10.0 * (k + 1) for k in range(protocol.characters)]
        return {"per_character": {"ap_clip_i": values}, "characters": protocol.characters, "sheets": []}

    monkeypatch.setattr(evaluation, "evaluate_series", fake_series)
    monkeypatch.setattr(evaluation.Judge, "from_pretrained", staticmethod(lambda *a, **k: None))
    monkeypatch.setattr(serialgen.face, "face_embedder", lambda *a, **k: None)
    monkeypatch.setattr(SerialGenPipeline, "from_pretrained", staticmethod(lambda *a, **k: types.SimpleNamespace()))
    monkeypatch.setattr(serialgen.pipelines, "compose_method", lambda serial, method, **k: serial)
    monkeypatch.setattr(report, "save_image", lambda *a, **k: None)
    monkeypatch.setattr(report, "sheet_rows", lambda *a, **k: None)
    name = "consistent self-attention (StoryDiffusion)"
    cfg = report.ReportConfig(data="world", out=str(tmp_path / "REPRODUCTION.md"), protocol=Protocol(characters=6),
                              methods=((name, "consistent-attention", {}),), method_characters=4)
    assert cfg.method_protocol.characters == 4 and cfg.protocol.characters == 6
    cfg.scores_dir().mkdir()  # make_report makes it
    methods = report.run_methods(cfg, None, made={"code": "c", "data": "d", "mediapipe": "m"})
    assert scored == [4] and methods[name]["characters"] == 4
    assert np.array(methods[name]["per_seed"]["ap_clip_i"]).shape == (1, 4)
    # the SerialGen row over all six characters: the first four score 1 above the method, the last two 100 below
    serial = report.merge_runs([{"per_character": {"ap_clip_i": [11.0, 21.0, 31.0, 41.0, -100.0, -100.0]},
                                 "characters": 6}], report.PAIRING_METRICS)
    d = report.difference(methods[name], serial, "ap_clip_i")
    assert d["n"] == 4 and d["mean"] == pytest.approx(-1.0)
    found = report.method_claims({"SerialGen (two-stage)": serial}, methods)
    assert found[0]["ours"].startswith("AP-CLIP-I consistent - SerialGen -1.00")
    assert "first 4 of the 6 test characters" in report._fewer_characters({"SerialGen (two-stage)": serial} | methods)
    assert report._fewer_characters(methods) == ""
    # the whole-report default scores them on every character, and a count beyond Table 2's is refused
    assert report.ReportConfig(data="world", protocol=Protocol(characters=6)).method_protocol.characters == 6
    (tmp_path / "world" / "test").mkdir(parents=True)
    assert cli(["report", "--data", str(tmp_path / "world"), "--characters", "3", "--method-characters", "5"]) == 2
    assert "--method-characters must be between 1 and --characters (3)" in capsys.readouterr().err


def test_a_row_is_stored_without_losing_rows_another_report_stored_meanwhile(tmp_path):
    import multiprocessing

    from serialgen.evaluation.report import _load_json, _store_row

    path = tmp_path / "scores" / "pairings.json"
    _store_row(path, "paired one-stage", {"clip_i": 1.0})
    stale = _load_json(path)  # what a report read before another one stored its row
    with multiprocessing.get_context("spawn").Pool(4) as pool:  # reports scoring other rows at once
        pool.starmap(_store_row, [(path, f"row {k}", {"clip_i": float(k)}) for k in range(8)])
    rows = _store_row(path, "unpaired one-stage", {"clip_i": 2.0})
    assert set(stale) == {"paired one-stage"}
    assert rows == json.loads(path.read_text())
    assert set(rows) == {"paired one-stage", "unpaired one-stage"} | {f"row {k}" for k in range(8)}
    assert rows["row 5"] == {"clip_i": 5.0}
    assert set(_store_row(path, "row 3", None)) == set(rows) - {"row 3"}  # None drops the row


def test_no_pairings_scores_only_stage1_and_keeps_table_2s_scores(monkeypatch, tmp_path):
    import dataclasses

    import serialgen.data.memory as memory
    import serialgen.evaluation.report as report

    kept = {"paired one-stage": {"characters": 40, "clip_i": {"mean": 56.0}}}
    (tmp_path / "reproduction").mkdir()
    (tmp_path / "reproduction" / "pairings.json").write_text(json.dumps(kept))
    calls, written, seen = [], {}, []
    monkeypatch.setattr(memory.WorldArrays, "load", staticmethod(lambda *a, **k: None))
    monkeypatch.setattr(report, "provenance", lambda test: {"code": "c", "data": "d", "mediapipe": "m"})
    monkeypatch.setattr(report, "run_stage1", lambda cfg, test, made: calls.append("stage1") or {"full": {}})
    monkeypatch.setattr(report, "run_pairings", lambda cfg, test, made: calls.append("pairings") or {})
    monkeypatch.setattr(report, "write_markdown",
                        lambda cfg, stage1, pairings, *a: written.update(pairings=pairings) or "report\n")
    make_report = report.make_report
    monkeypatch.setattr(report, "make_report", lambda cfg, command: seen.append(cfg) or tmp_path / "R.md")

    (tmp_path / "world" / "test").mkdir(parents=True)
    assert cli(["report", "--data", str(tmp_path / "world"), "--no-pairings", "--no-methods",
                "--out", str(tmp_path / "REPRODUCTION.md")]) == 0
    cfg = seen[0]
    assert cfg.pairings is False and cfg.stage1 and not cfg.methods  # the ablation rows are still scored
    make_report(cfg)
    assert calls == ["stage1"] and written["pairings"] == kept  # Table 2 from the kept scores
    make_report(dataclasses.replace(cfg, pairings=True))
    assert calls == ["stage1", "stage1", "pairings"] and written["pairings"] == {}


def test_the_token_study_can_be_scored_on_the_first_of_table_2s_characters(monkeypatch, tmp_path, capsys):
    import dataclasses
    import types

    import torch

    import serialgen.evaluation as evaluation
    import serialgen.evaluation.report as report
    import serialgen.face
    from serialgen.evaluation import Protocol
    from serialgen.pipelines.serial import SerialGenPipeline

    scored = []

    def fake_series(runner, judge, test, protocol, *args, **kwargs):
        scored.append(protocol.characters)
        return {"per_character": {"clip_i": [50.0 + k for k in range(protocol.characters)]},
                "characters": protocol.characters, "sheets": []}

    adapter = types.SimpleNamespace(tokens=lambda negative: torch.zeros(1, 5, 8))
    serial = types.SimpleNamespace(personalize=types.SimpleNamespace(adapter=adapter, negative_hidden_states=lambda: None))
    monkeypatch.setattr(evaluation, "evaluate_series", fake_series)
    monkeypatch.setattr(evaluation.Judge, "from_pretrained", staticmethod(lambda *a, **k: None))
    monkeypatch.setattr(serialgen.face, "face_embedder", lambda *a, **k: None)
    monkeypatch.setattr(SerialGenPipeline, "from_pretrained", staticmethod(lambda *a, **k: serial))
    monkeypatch.setattr(report, "loss_gap", lambda *a, **k: {})
    monkeypatch.setattr(report, "sheet_rows", lambda *a, **k: np.zeros((4, 4, 3), np.uint8))
    monkeypatch.setattr(report, "pairings_figure", lambda sheets, height: np.zeros((4, 4, 3), np.uint8))
    test = types.SimpleNamespace(images={"image": np.zeros((1, 4, 4, 3), np.uint8)})
    folders = {}
    for name in ("every", "few"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "ip-adapter.safetensors").write_bytes(name.encode())
        (folders[name] / "training.json").write_text(json.dumps({"pairing": "unpaired"}))
    rows = (("unpaired one-stage", str(folders["every"])), ("unpaired one-stage, 5 image tokens", str(folders["few"])))
    cfg = report.ReportConfig(data="world", out=str(tmp_path / "REPRODUCTION.md"), protocol=Protocol(characters=6),
                              adapters=rows, token_characters=4)
    assert cfg.row_protocol(rows[1][0]).characters == 4 and cfg.row_protocol(rows[0][0]).characters == 6
    cfg.scores_dir().mkdir()
    made = {"code": "c", "data": "d", "mediapipe": "m"}
    pairings = report.run_pairings(cfg, test, made)
    assert scored == [6, 4] and pairings[rows[1][0]]["characters"] == 4
    assert "first 4 of its 6 characters" in report._token_characters(pairings)
    assert report._token_characters({rows[0][0]: pairings[rows[0][0]]}) == ""
    # the every-token row's kept scores are the same whether or not the token rows take fewer characters
    scored.clear()
    assert report.run_pairings(dataclasses.replace(cfg, token_characters=0, adapters=rows[:1]), test, made) and scored == []
    (tmp_path / "world" / "test").mkdir(parents=True)
    assert cli(["report", "--data", str(tmp_path / "world"), "--characters", "3", "--token-characters", "5"]) == 2
    assert "--token-characters must be between 1 and --characters (3)" in capsys.readouterr().err


def test_the_cost_line_says_which_times_leave_out_characters_resumed_from_a_cache(tmp_path):
    def cost(minutes, **counts):
        return {"cost": {"seconds": 60.0 * minutes, "threads": 1, "cpus": 2} | counts}

    whole = {"full": cost(30)}  # Table 3: scored in one run, never resumed
    fresh = {"two-stage": {"runs": [cost(90, characters=40, resumed=0), cost(80, characters=40, resumed=0)]}}
    line = cost_lines(fresh, whole=(whole,))[1]
    assert line.startswith("Cost: scoring took 3.3 h of wall time for the models timed, each on 1 thread (")
    assert "(two-stage 90 + 80 min; full 30 min)" in line and "(the times given" not in line  # seeds together
    resumed = {"paired": {"runs": [cost(39, characters=40, resumed=29)]}}
    line = cost_lines(fresh, resumed, whole=(whole,))[1]
    assert line.startswith("Cost: scoring took at least 4.0 h")
    assert "paired 39 (11 of its 40 characters) min" in line and "marked *" not in line
    old = {"unpaired": cost(75)}  # a row timed before resumed characters were counted
    line = cost_lines(old)[1]
    assert "at least 1.2 h" in line and "unpaired 75* min" in line and "those marked *, timed before" in line
    two = {"a": cost(10), "b": {"cost": {"seconds": 600.0, "threads": 2, "cpus": 2}}, "c": cost(5)}
    line = cost_lines(whole=(two,))[1]  # threads differ: the usual count once, the other where it ran
    assert "each on 1 thread unless its time names another count (a 10 min; b 10 (2 threads) min; c 5 min)" in line
    assert cost_lines({"x": {"runs": [{}]}}, whole=({},)) == []

    folder = tmp_path / "row"
    folder.mkdir()
    for c in (0, 2, 40):
        (folder / f"{c:04d}.npz").write_bytes(b"")
    assert _cached_characters(folder, 40) == 2 and _cached_characters(folder, 41) == 3
    assert _cached_characters(tmp_path / "never-scored", 40) == 0


def test_a_model_that_is_not_here_keeps_only_the_scores_of_its_own_path(tmp_path, capsys, monkeypatch):
    """Kept runs are matched to a row's models by path: an absent model never takes the run kept at
    its seed's place from another model (an earlier recipe's, or seed 0's when seed 1 is given alone)."""
    s0, s1, old = (str(tmp_path / n) for n in ("abl-full-s0", "abl-full-s1", "stage1-full"))
    (tmp_path / "abl-full-s1").mkdir()  # only seed 1 is here
    cache = {"full": {"runs": [{"model": s0, "psnr": 15.0}]}}
    runs: list[dict] = []
    # seed 0 is not here: its own kept run goes into the row; seed 1 is here and offered no run of its own path
    # but the one at its place (none: the row kept one run), to be scored
    assert list(_present("full", [s0, s1], cache, runs)) == [(1, s1, None)] and runs == [{"model": s0, "psnr": 15.0}]
    # seed 1 given alone: it is here, and seed 0's run is offered only for its fingerprint check (the caller's)
    runs = []
    assert list(_present("full", [s1], cache, runs)) == [(0, s1, {"model": s0, "psnr": 15.0})] and runs == []
    # an earlier recipe's run kept at seed 0's place is not adopted by the new seed-0 model that is not here
    cache = {"full": {"runs": [{"model": old, "psnr": 14.7}]}}
    runs = []
    assert list(_present("full", [s0], cache, runs)) == [] and runs == []
    assert "the row 'full' is left out" in capsys.readouterr().out
    # Table 2's rows record the adapter's path; a relative path finds the run kept under its absolute one
    scored = {"adapter": s0, "clip_i": 60.0}
    runs = []
    monkeypatch.chdir(tmp_path)
    assert list(_present("paired one-stage", ["abl-full-s0"], {"paired one-stage": {"runs": [scored]}}, runs)) == []
    assert runs == [scored]


def test_the_oracle_row_is_compared_with_the_two_stage_and_paired_rows():
    """With the oracle (true standard references) scored, the report judges what a perfect Stage I
    gives over the two-stage row and over the paired row, on appearance and AP-CLIP-I."""
    from serialgen.evaluation.report import ORACLE, PAIRING_METRICS, claims, merge_runs

    rng = np.random.default_rng(2)
    base = rng.normal(size=12)  # the characters' own difficulty, shared by every row

    def row(offset):
        return merge_runs([{"per_character": {m: list(0.3 + base + offset + 0.01 * rng.normal(size=12))
                                              for m in ("ap_clip_i", "appearance")}} for _ in range(3)],
                          PAIRING_METRICS)

    two_stage, paired, oracle = row(0.0), row(0.0), row(0.15)
    found = [c for c in claims({}, {"SerialGen (two-stage)": two_stage, "paired one-stage": paired, ORACLE: oracle})
             if "oracle -" in c["claim"]]
    assert [c["verdict"] for c in found] == ["supported", "supported"]
    assert "appearance oracle - two-stage +0.15" in found[0]["ours"]
    assert "AP-CLIP-I oracle - paired +0.15" in found[1]["ours"]
    # an oracle no better than the two-stage row: no gain is left to Stage I
    same = [c for c in claims({}, {"SerialGen (two-stage)": two_stage, ORACLE: row(0.0)}) if "oracle -" in c["claim"]]
    assert len(same) == 1 and same[0]["verdict"] == "no effect within +-0.03, +-2"
    assert not [c for c in claims({}, {"SerialGen (two-stage)": two_stage}) if "oracle" in c["claim"]]


def test_the_pairings_figure_interleaves_the_sheets_per_character():
    """Each character's rows, one per adapter in the given order, then a thin white band; no band
    after the last character."""
    from serialgen.evaluation.report import pairings_figure

    height = 16
    sheets = [np.concatenate([np.full((height, 8, 3), 10 * m + c, np.uint8) for c in range(3)], 0) for m in range(2)]
    figure = pairings_figure(sheets, height)
    assert figure.shape == (3 * 2 * height + 2 * (height // 8), 8, 3)
    starts = [0, height, 2 * height + 2, 3 * height + 2, 4 * height + 4, 5 * height + 4]
    assert [int(figure[y, 0, 0]) for y in starts] == [0, 10, 1, 11, 2, 12]
    assert (figure[2 * height:2 * height + 2] == 255).all()


def test_a_report_that_scores_one_row_draws_it_beside_the_rows_kept_from_earlier_runs(monkeypatch, tmp_path):
    """Both figures list the rows as the tables do: this run's rows, then the other kept rows that have
    their images kept (a Table 3 row needs its strip drawn on these references); the token study's rows
    stay out of Table 2's figure."""
    from types import SimpleNamespace

    import serialgen.data.heldout as heldout
    from serialgen.evaluation import report

    height, width = 16, 4
    refs = [SimpleNamespace(image=np.full((height, width, 3), 1, np.uint8)) for _ in range(2)]
    truth = [np.full((height, width, 3), 2, np.uint8) for _ in range(2)]
    monkeypatch.setattr(heldout, "held_out_references", lambda test, n: (refs, truth))
    folder = tmp_path / "reproduction"
    folder.mkdir()
    for name, value in (("kept", 30), ("new", 40), ("elsewhere", 50)):
        strip = np.full((height, 2 * width if name != "elsewhere" else width, 3), value, np.uint8)
        Image.fromarray(strip).save(report._strip_file(folder, name))
    cfg = report.ReportConfig(data="world", scores=str(folder), stage1=(("new", "runs/new"),))
    report.draw_stage1_figure(cfg, None, {"kept": {}, "new": {}, "elsewhere": {}, "unimaged": {}})
    figure = np.asarray(Image.open(folder / "stage1_ablation.png"))
    assert [int(figure[y * height, 0, 0]) for y in range(4)] == [1, 40, 30, 2]  # refs, new, kept, truth
    assert json.loads((folder / "stage1_ablation_rows.json").read_text())["rows"] == ["new", "kept"]

    sheets = {"kept": 60, "new": 70, "unpaired one-stage, 5 image tokens": 80}
    for name, value in sheets.items():
        Image.fromarray(np.full((3 * height, width, 3), value, np.uint8)).save(report._sheet_file(folder, name))
    test = SimpleNamespace(images={"image": np.zeros((1, height, width, 3), np.uint8)})
    report.draw_pairings_figure(cfg, test, {name: {} for name in [*sheets, "unsheeted"]}, ["new"])
    figure = np.asarray(Image.open(folder / "pairings.png"))
    assert figure.shape[0] == 2 * 3 * height + 2 * (height // 8)
    assert [int(figure[y, 0, 0]) for y in (0, height)] == [70, 60]
    assert json.loads((folder / "pairings_rows.json").read_text())["rows"] == ["new", "kept"]


def test_a_rows_attribute_accuracies_and_look_are_over_all_its_training_seeds(tmp_path):
    """A merged row keeps its first run's fields: the attribute table and Table 3's look column must
    read every seed's, not the first's."""
    from serialgen.evaluation.report import ReportConfig, attribute_accuracies, write_markdown

    def acc(mean, n=10):
        return {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1, "n": n}

    runs = [{"text_control": {"action": acc(0.2), "mean": acc(0.3)},
             "appearance": {"top_color": acc(0.4), "hair_style": acc(0.0, n=0), "mean": acc(0.2)}},
            {"text_control": {"action": acc(0.4), "mean": acc(0.5)},
             "appearance": {"top_color": acc(0.2), "hair_style": acc(0.3), "mean": acc(0.1)}}]
    row = runs[0] | {"runs": runs}
    assert attribute_accuracies(row) == pytest.approx({"action": 0.3, "top_color": 0.3, "hair_style": 0.3})
    assert attribute_accuracies(runs[0]) == pytest.approx({"action": 0.2, "top_color": 0.4})  # one run, kept as is

    values = list(np.linspace(0, 1, 10))
    full = {"per_character": {"psnr": values}, "psnr_ci": acc(16.3), "ssim_ci": acc(0.77), "count": 64,
            "appearance": {"top_color": acc(0.4), "mean": 0.22}, "appearance_ci": acc(0.19)}
    text = write_markdown(ReportConfig(data="world", out=str(tmp_path / "R.md")), {"full": full}, {}, "serialgen report")
    assert "| full | 16.30 [16.20, 16.40] | 0.7700 [0.6700, 0.8700] | – | – | 0.19 | 64 |" in text.splitlines()
