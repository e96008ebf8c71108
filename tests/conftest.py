"""Shared fixtures: one GL world per test session, and one small synthesized dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from serialgen.data.shards import SynthSpec, synthesize
from serialgen.world.generator import CharacterWorld

SMALL = SynthSpec(characters=6, poses_per_character=3, width=128, height=192, seed=3, samples_per_shard=4)


@pytest.fixture(scope="session")
def world() -> CharacterWorld:
    return CharacterWorld(256, 384, seed=0)


@pytest.fixture(scope="session")
def small_world() -> CharacterWorld:
    return CharacterWorld(SMALL.width, SMALL.height, SMALL.seed)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    synthesize(SMALL, root, workers=1, show_progress=False)
    return root
