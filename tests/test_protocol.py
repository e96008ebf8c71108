"""The evaluation protocol's parts: the paper's prompt mix, background removal, bootstrap
intervals, the person segmentation CLIP-I uses, and face similarity on the real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serialgen.evaluation import CATEGORIES, bootstrap_ci, on_white, protocol_scenes
from serialgen.world.attributes import PROBE_ATTRIBUTES

IMAGES = Path(__file__).resolve().parent / "assets" / "images"  # real photos, sources in its SOURCES.md


def test_twenty_prompts_cycle_the_four_kinds_with_distinct_values():
    scenes = protocol_scenes(20, seed=0)
    assert [s["category"] for s in scenes[:4]] == list(CATEGORIES)
    for category in CATEGORIES:
        mine = [s[category] for s in scenes if s["category"] == category]
        assert len(mine) == 5 and len(set(mine)) == min(5, len(PROBE_ATTRIBUTES[category]))
    for s in scenes:
        for attribute in CATEGORIES:
            assert s[attribute] in PROBE_ATTRIBUTES[attribute]
        assert s["prompt"].startswith("a character, ") and s["prompt"].endswith(", full body shot")
        assert f"{s['view']} view" in s["prompt"]
    assert len({s["prompt"] for s in scenes}) == 20
    assert protocol_scenes(20, seed=0) == scenes and protocol_scenes(20, seed=1) != scenes


def test_background_removal_keeps_the_person_and_whitens_the_rest():
    image = np.full((4, 4, 3), 40, np.uint8)
    mask = np.zeros((4, 4))
    mask[1:3, 1:3] = 1
    out = on_white(image, mask)
    assert (out[1:3, 1:3] == 40).all() and (out[0] == 255).all() and out[:, 3].min() == 255


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_characters():
    rng = np.random.default_rng(0)
    few, many = rng.normal(5, 1, 8), rng.normal(5, 1, 200)
    a, b = bootstrap_ci(few), bootstrap_ci(many)
    assert a["lo"] < a["mean"] < a["hi"] and b["lo"] < b["mean"] < b["hi"]
    assert (b["hi"] - b["lo"]) < (a["hi"] - a["lo"]) / 2  # ~1/sqrt(n): 5x narrower on average
    assert b["lo"] < 5 < b["hi"]
    with_missing = bootstrap_ci([1.0, np.nan, 3.0])
    assert with_missing["n"] == 2 and with_missing["mean"] == 2.0
    assert bootstrap_ci([np.nan])["n"] == 0
    assert bootstrap_ci([2.0, 2.0, 2.0]) == {"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": 3}


def test_person_segmentation_finds_world_characters(small_world):
    from serialgen.preprocess import PersonDetector

    detector = PersonDetector()
    ious = []
    for c in range(4):
        sample = small_world.sample(c, 0)
        truth = sample["mask"] > 0.5 if sample["mask"].dtype != np.uint8 else sample["mask"] > 127
        mask = detector.segment(sample["image"]) > 0.5
        assert mask.shape == truth.shape
        ious.append((mask & truth).sum() / (mask | truth).sum())
    assert np.mean(ious) > 0.7  # measured 0.9+ on most world renders
    assert detector.segment(np.full((192, 128, 3), 255, np.uint8)).mean() < 0.01  # nobody on a blank page


def test_dlib_face_similarity_on_real_photos():
    from serialgen.face import DlibFaceEmbedder

    embed = DlibFaceEmbedder()
    photo = np.asarray(Image.open(IMAGES / "fullbody-photo-1.png").convert("RGB"))
    other = np.asarray(Image.open(IMAGES / "fullbody-photo-2.png").convert("RGB"))
    a, mirrored, b = embed(photo), embed(np.ascontiguousarray(photo[:, ::-1])), embed(other)
    assert a.shape == (128,) and abs(np.linalg.norm(a) - 1) < 1e-5
    assert a @ mirrored > 0.97  # the same face, mirrored (measured 0.994)
    assert a @ b < a @ mirrored - 0.1  # another person (measured 0.84)
    assert embed(np.full((192, 128, 3), 255, np.uint8)) is None


def test_arcface_path_runs_a_given_onnx_model(tmp_path):
    """A random stand-in with ArcFace's interface (scripts/make_tiny_arcface.py): the same face
    mirrored embeds alike, another face less so, and a missing model is a clear error."""
    pytest.importorskip("onnxruntime")
    from serialgen.face import ArcFaceEmbedder, face_embedder

    embed = face_embedder(Path(__file__).resolve().parent / "assets" / "tiny_arcface.onnx")
    assert isinstance(embed, ArcFaceEmbedder)
    photo = np.asarray(Image.open(IMAGES / "fullbody-photo-1.png").convert("RGB"))
    other = np.asarray(Image.open(IMAGES / "halfbody-photo-1.png").convert("RGB"))
    a, b = embed(photo), embed(other)
    assert a.shape == (512,) and abs(np.linalg.norm(a) - 1) < 1e-5
    assert a @ embed(np.ascontiguousarray(photo[:, ::-1])) > a @ b
    with pytest.raises(FileNotFoundError, match="No ArcFace model"):
        face_embedder(tmp_path / "missing.onnx")
