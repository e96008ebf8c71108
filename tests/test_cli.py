"""Command-line behaviour: one-line errors before any work, the sheet, --help."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from serialgen.cli import main


def _run(args):
    return subprocess.run([sys.executable, "-m", "serialgen.cli", *args], capture_output=True, text=True, timeout=120)


BASE = ["synth", "--characters", "2", "--poses-per-character", "1"]


@pytest.mark.parametrize("args, message", [
    (["synth", "--characters", "0", "--poses-per-character", "1"], "--characters must be at least 1"),
    (["synth", "--characters", "2", "--poses-per-character", "0"], "--poses-per-character must be at least 1"),
    ([*BASE, "--size", "250x375"], "multiples of 8"),
    ([*BASE, "--size", "256x256"], "not 2:3"),
    ([*BASE, "--size", "big"], "not WIDTHxHEIGHT"),
    ([*BASE, "--num-shards", "4", "--shard-index", "4"], "--shard-index 4 is out of range for --num-shards 4; use 0..3"),
    ([*BASE, "--shard-index", "-1"], "out of range"),
    ([*BASE, "--workers", "0"], "--workers must be at least 1"),
    ([*BASE, "--characters", "x"], "invalid int value"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    result = _run([*args, "--out", str(out)])
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    assert not out.exists()


def test_unwritable_out(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = _run([*BASE, "--out", str(blocker / "sub")])
    assert result.returncode == 2 and "choose a writable directory" in result.stderr
    result = _run([*BASE, "--out", str(blocker)])
    assert result.returncode == 2 and "is a file" in result.stderr
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        result = _run([*BASE, "--out", str(ro)])
        assert result.returncode == 2 and "cannot write" in result.stderr


def test_sheet(dataset, tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["sheet", str(dataset), "--out", str(out), "--characters", "3", "--poses", "2", "--tile-height", "96"]) == 0
    sheet = np.asarray(Image.open(out))
    assert sheet.shape[1] == 7 * 64  # standard + 2 x (image, mask, pose)
    assert sheet.shape[0] > 3 * 96
    assert sheet.std() > 20  # not blank
    assert main(["sheet", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "No train shards" in capsys.readouterr().err


def test_help_explains():
    result = _run(["synth", "--help"])
    assert result.returncode == 0
    for word in ("--num-shards", "--shard-index", "byte-identical", "2:3"):
        assert word in result.stdout


@pytest.mark.parametrize("args", [
    ["generate", "--reference", "r.png", "--prompt", "p", "--guidance", "nan"],
    ["generate", "--reference", "r.png", "--prompt", "p", "--guidance", "inf"],
    ["generate", "--reference", "r.png", "--prompt", "p", "--scale", "nan"],
    ["generate", "--reference", "r.png", "--prompt", "p", "--scale", "-1"],
    ["standardize", "r.png", "--guidance", "inf"],
    ["standardize", "r.png", "--guidance", "nan"],
    ["standardize", "r.png", "--guidance", "-50"],
])
def test_non_finite_or_negative_scales_are_refused_before_any_model_loads(tmp_path, args):
    """NaN or infinite guidance gave black images with exit 0; NaN or negative guidance silently
    turned guidance off."""
    result = subprocess.run([sys.executable, "-m", "serialgen.cli", *args, "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert "must be a finite number >= 0" in result.stderr and result.stderr.count("\n") <= 2, result.stderr
    assert not (tmp_path / "out").exists()


def test_pipelines_refuse_non_finite_scales():
    from serialgen.pipelines.personalize import PersonalizePipeline
    from serialgen.pipelines.standardize import StandardizePipeline

    with pytest.raises(ValueError, match="finite"):
        StandardizePipeline.__call__(StandardizePipeline.__new__(StandardizePipeline), [np.zeros((192, 128, 3), np.uint8)],
                                     guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        PersonalizePipeline.__call__(PersonalizePipeline.__new__(PersonalizePipeline), image_tokens=object(),
                                     prompts=["a character"], guidance_scale=5.0, scale=float("inf"))
