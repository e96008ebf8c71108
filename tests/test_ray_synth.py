"""`serialgen synth --ray`: one shard per Ray task on a local Ray limited to 2 CPUs gives the
local run's shards byte for byte, resumes, and an address nothing answers at fails in seconds."""

from __future__ import annotations

import time

import pytest

from serialgen.cli import main
from serialgen.data.shards import synthesize_ray

from .conftest import SMALL
from .test_shards import _tar_bytes

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance limited to 2 CPUs for the module (synthesize_ray uses a running one)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_shards_are_the_local_runs_and_a_rerun_resumes(dataset, tmp_path, local_ray):
    out = tmp_path / "ray"
    counts = synthesize_ray(SMALL, out, num_cpus=2, show_progress=False)
    assert counts["written"] == counts["shards"] == 8 and counts["samples"] == 30
    assert _tar_bytes(out) == _tar_bytes(dataset)  # dataset: the local run (test_shards: any --workers)
    (out / "test" / "test-000001.tar").unlink()
    again = synthesize_ray(SMALL, out, num_cpus=2, show_progress=False)
    assert again["written"] == 1 and again["skipped"] == 7 and _tar_bytes(out) == _tar_bytes(dataset)


def test_an_unreachable_cluster_fails_in_seconds(tmp_path, capsys):
    start = time.monotonic()
    code = main(["synth", "--out", str(tmp_path / "x"), "--characters", "5", "--poses-per-character", "1",
                 "--size", "128x192", "--ray", "127.0.0.1:9"])
    assert code == 2 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "no Ray cluster answers there" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    assert main(["synth", "--out", str(tmp_path / "y"), "--characters", "5", "--poses-per-character", "1",
                 "--ray", "nohostport"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
