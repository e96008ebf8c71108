"""Quiet logs: a command on a real photo prints its own lines only; MediaPipe's TensorFlow Lite
and absl lines, protobuf's deprecation warning and the model loaders' reports and progress bars
come back with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PHOTO = Path(__file__).parent / "assets" / "images" / "fullbody-photo-1.png"
NOISE = ("TensorFlow Lite", "absl::InitializeLog", "inference_feedback_manager", "GetPrototype", "Loading weights",
         "Loading pipeline components", "requires torchvision", "should be kept in float32")


def _run(*argv) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    env.pop("SERIALGEN_VERBOSE", None)
    done = subprocess.run([sys.executable, "-m", "serialgen.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def _standardize(tmp_path, *flags) -> str:
    return _run(*flags, "standardize", str(PHOTO), "--out", str(tmp_path / "s.png"), "--steps", "1")


@pytest.mark.skipif(not PHOTO.exists(), reason="the real test photos are not in tests/assets/images")
def test_a_command_prints_no_library_noise_unless_verbose(tmp_path):
    quiet = _standardize(tmp_path)
    assert not [n for n in NOISE if n in quiet], quiet
    loud = _standardize(tmp_path, "--verbose")
    assert "TensorFlow Lite" in loud and "GetPrototype" in loud


def test_the_demo_prints_no_library_noise(tmp_path):
    quiet = _run("demo", "--out", str(tmp_path / "demo"), "--steps", "1")
    assert not [n for n in NOISE if n in quiet], quiet


def test_mediapipe_graphs_log_nothing_after_they_are_made():
    """The graphs' calculators open in their own threads after the constructors return (and log
    then); the detector opens them inside the quiet block. Pauses between the calls (the
    evaluation's generating between person masks) let those threads print, as `serialgen report`
    did."""
    script = ("import time\nimport numpy as np\nfrom serialgen.preprocess import PersonDetector\n"
              "d = PersonDetector()\ntime.sleep(1)\nblank = np.zeros((192, 128, 3), np.uint8)\n"
              "d.segment(blank)\ntime.sleep(1)\nd.person(blank), d.faces(blank)\n")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    env.pop("SERIALGEN_VERBOSE", None)
    for _ in range(2):  # the leak depended on thread timing
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert not [n for n in NOISE if n in done.stderr], done.stderr


def test_eval_prints_no_library_noise(dataset, tmp_path):
    """`serialgen eval` loads the judge (a CLIP and a ResNet): their load reports stay quiet too."""
    quiet = _run("eval", "stage1", "--data", str(dataset), "--samples", "1", "--steps", "1")
    assert not [n for n in NOISE if n in quiet], quiet
