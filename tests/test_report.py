"""`serialgen report`: the paper's tables and claims, cached scores reused, and the verdict rule."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from serialgen.cli import main as cli

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
