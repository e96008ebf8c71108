"""Train / validation / test by character id (data/splits.py): the test split is read only by
`serialgen report` and `serialgen eval --split test`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import serialgen
from serialgen.data.memory import WorldArrays
from serialgen.data.splits import LockedSplitError, reading_test_split, split_of

ROOT = Path(serialgen.__file__).parent
SCRIPTS = ROOT.parents[1] / "scripts"


def test_split_by_id_every_fifth_held_out_then_halved():
    splits = [split_of(c, 2000) for c in range(2000)]
    assert splits.count("train") == 1600 and splits.count("validation") == 200 and splits.count("test") == 200
    assert {split_of(c, 2000) for c in range(4, 1000, 5)} == {"validation"}
    assert {split_of(c, 2000) for c in range(1004, 2000, 5)} == {"test"}
    # every character an earlier report or choice read (the first 64 held-out ids) is validation
    assert all(split_of(4 + 5 * k, 2000) == "validation" for k in range(64))


def test_reading_the_test_split_needs_the_reports_permission(dataset):
    with pytest.raises(LockedSplitError, match="serialgen report"):
        WorldArrays.load(dataset, "test", progress=False)
    validation = WorldArrays.load(dataset, "validation", progress=False)
    with reading_test_split():
        test = WorldArrays.load(dataset, "test", progress=False)
    assert {m["character_id"] for m in validation.meta} == {4}
    assert {m["character_id"] for m in test.meta} == {9}
    with pytest.raises(LockedSplitError):  # the permission ends with the block
        WorldArrays.load(dataset, "test", progress=False)


def _opens_test_split(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.Name) and node.id == "reading_test_split" or
               isinstance(node, ast.Attribute) and node.attr == "reading_test_split" for node in ast.walk(tree))


def test_only_the_report_and_eval_open_the_test_split():
    """Training, selection scripts and everything else never enter reading_test_split."""
    openers = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if _opens_test_split(p)}
    assert openers == {"cli.py", "evaluation/report.py"}
    assert not [p.name for p in SCRIPTS.glob("*.py") if _opens_test_split(p)]


def test_eval_reads_the_test_split_only_when_asked(dataset, monkeypatch, tmp_path):
    """`serialgen eval` defaults to validation; --split test is what opens the test split."""
    from serialgen import cli

    seen = []
    real = WorldArrays.load

    def spy(root, split, *args, **kwargs):
        seen.append(split)
        return real(root, split, *args, **kwargs)

    monkeypatch.setattr(WorldArrays, "load", staticmethod(spy))
    monkeypatch.setattr(cli, "_fail", lambda prog, message: 1)  # stop after the data is read (no judge here)
    from serialgen import evaluation

    def no_judge(*a, **k):
        raise ValueError("stop")

    monkeypatch.setattr(evaluation.Judge, "from_pretrained", staticmethod(no_judge))
    cli.main(["eval", "stage1", "--data", str(dataset), "--samples", "1"])
    cli.main(["eval", "stage1", "--data", str(dataset), "--samples", "1", "--split", "test"])
    assert seen == ["validation", "test"]
