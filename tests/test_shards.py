"""`serialgen synth`: shards, determinism across workers, resume after a kill, the reader."""

from __future__ import annotations

import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from serialgen.data.reader import WorldDataset, collate, iterate_records, recomposite, shard_paths
from serialgen.data.shards import IMAGE_KEYS, SynthSpec, plan_shards, synthesize
from serialgen.data.splits import reading_test_split

from .conftest import SMALL


def _tar_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


def test_plan_covers_every_pair_once_and_splits_by_character():
    plans = plan_shards(SynthSpec(12, 5, samples_per_shard=7))
    pairs = [s for p in plans for s in p.samples]
    assert sorted(pairs) == [(c, k) for c in range(12) for k in range(5)]
    for p in plans:
        assert {c % 5 == 4 for c, _ in p.samples} == {p.split == "test"}


def test_dataset_layout(dataset):
    train, test = shard_paths(dataset, "train"), shard_paths(dataset, "test")
    assert len(train) == 6 and len(test) == 2  # 8 train chars x 3 poses / 4 per shard; 2 held-out chars
    with tarfile.open(train[0]) as tar:
        names = tar.getnames()
        member = tar.getmembers()[0]
    assert member.mtime == 0 and member.uname == "serialgen"
    key = names[0].split(".")[0]
    assert {f"{key}.{ext}" for ext in [*IMAGE_KEYS.values(), "json"]} <= set(names)
    ids = {"train": set(), "validation": set(), "test": set()}
    with reading_test_split():
        for split in ids:
            for rec in iterate_records(dataset, split):
                ids[split].add(rec["meta"]["character_id"])
                assert rec["meta"]["split"] == ("train" if split == "train" else "test")  # the shard folder
    assert ids == {"train": {0, 1, 2, 3, 5, 6, 7, 8}, "validation": {4}, "test": {9}}


def test_same_bytes_whatever_the_number_of_workers(dataset, tmp_path):
    synthesize(SMALL, tmp_path, workers=2, show_progress=False)
    assert _tar_bytes(tmp_path) == _tar_bytes(dataset)


def test_fan_out_parts_make_the_same_dataset(dataset, tmp_path):
    for part in range(3):
        synthesize(SMALL, tmp_path, num_shards=3, shard_index=part, show_progress=False)
    assert _tar_bytes(tmp_path) == _tar_bytes(dataset)


def test_rerun_skips_finished_shards(dataset):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*.tar")}
    counts = synthesize(SMALL, dataset, show_progress=False)
    assert counts["written"] == 0 and counts["skipped"] == counts["shards"] == 8
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*.tar")} == before


def test_other_arguments_into_the_same_directory_are_refused(dataset):
    with pytest.raises(ValueError, match="other arguments.*seed=3 \\(asked 4\\)"):
        synthesize(SynthSpec(**{**SMALL.__dict__, "seed": 4}), dataset, show_progress=False)


def test_resume_after_a_killed_run(dataset, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "serialgen.cli", "synth", "--out", str(out), "--characters", str(SMALL.characters),
           "--poses-per-character", "3", "--size", "128x192", "--seed", "3", "--samples-per-shard", "4", "--quiet"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("train/*.tar")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(out.glob("*/*.tar"))
    assert 1 <= len(done) < 8, "the run should be killed after its first shard and before its last"
    for path in done:  # every shard present is whole
        with tarfile.open(path) as tar:
            assert len(tar.getnames()) == 4 * (len(IMAGE_KEYS) + 1) or path.parent.name == "test"
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"({len(done)} of 8 shards were already complete)" in result.stdout
    assert not list(out.rglob("*.tmp")), "temporaries of the killed run are cleaned up"
    assert _tar_bytes(out) == _tar_bytes(dataset)


def test_world_dataset_yields_tensors(dataset):
    ds = WorldDataset(dataset, "train")
    samples = list(ds)
    assert len(samples) == 24  # 8 train characters x 3 poses
    s = samples[0]
    h, w = SMALL.height, SMALL.width
    assert s["image"].shape == (3, h, w) and s["image"].dtype == torch.float32
    assert s["foreground"].shape == (4, h, w) and s["mask"].shape == (1, h, w)
    assert set(torch.unique(s["mask"]).tolist()) <= {0.0, 1.0}
    assert s["pose_map"].shape == (3, h, w) and s["standard_image"].shape == (3, h, w)
    assert s["keypoints"].shape == (18, 3) and s["face_box"].shape == (4,)
    assert 0.0 <= s["image"].min() and s["image"].max() <= 1.0
    assert isinstance(s["caption"], str) and s["character_id"] == 0
    batch = collate(samples[:4])
    assert batch["image"].shape == (4, 3, h, w) and len(batch["caption"]) == 4
    loader = torch.utils.data.DataLoader(WorldDataset(dataset, "train", shuffle=8, seed=1), batch_size=5,
                                         collate_fn=collate, num_workers=2)
    keys = sorted(k for b in loader for k in (m["key"] for m in b["meta"]))
    assert keys == sorted(x["meta"]["key"] for x in samples)  # workers split shards, nothing lost or repeated


def test_recomposite_changes_only_the_background(dataset):
    rec = next(iterate_records(dataset, "train"))
    new = recomposite(rec, np.random.default_rng(0), scene="underwater" if rec["meta"]["background"] != "underwater"
                      else "beach")
    solid = rec["foreground"][..., 3] == 255
    empty = rec["foreground"][..., 3] == 0
    assert np.array_equal(new["image"][solid], rec["image"][solid])
    assert not np.array_equal(new["image"][empty], rec["image"][empty])
    assert new["meta"]["background"] in new["meta"]["caption"] or "underwater" in new["meta"]["caption"]
    assert new["meta"]["caption"] != rec["meta"]["caption"]
