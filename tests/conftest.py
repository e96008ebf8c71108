"""Shared fixtures: one GL world per test session, one small synthesized dataset, and (per test
module) tiny Stage I and Stage II models and a tiny judge in their published layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from serialgen.data.shards import SynthSpec, synthesize
from serialgen.world.generator import CharacterWorld

# 10 characters: 8 train, held-out 4 (validation) and 9 (test) (data/splits.py)
SMALL = SynthSpec(characters=10, poses_per_character=3, width=128, height=192, seed=3, samples_per_shard=4)


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


@pytest.fixture(scope="module")
def folders(tmp_path_factory, dataset):
    """Tiny Stage I and Stage II models in their published layouts (tests/tiny.py tiny_serial_models)."""
    from .tiny import tiny_serial_models

    return tiny_serial_models(tmp_path_factory.mktemp("stage2_models"), dataset)


@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory):
    """A tiny judge in its saved layout: CLIPModel + tokenizer, and classifier/ whose heads always
    answer the same value ("front" for the view, the first value otherwise)."""
    from serialgen.models.judge import AttributeClassifier

    from .tiny import TINY_CLIP, tiny_tokenizer

    root = tmp_path_factory.mktemp("judge")
    tokenizer = tiny_tokenizer(root)
    torch.manual_seed(2)
    TINY_CLIP.build(tokenizer).save_pretrained(root)
    classifier = AttributeClassifier.build(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1))
    with torch.no_grad():
        for attribute, head in classifier.heads.items():
            head.weight.zero_()
            head.bias.zero_()
            values = classifier.values[attribute]
            head.bias[values.index("front" if attribute == "view" else values[0])] = 1.0  # a constant guess
    classifier.save_pretrained(root / "classifier")
    return root


@pytest.fixture(scope="module")
def tiny_serial(folders):
    """A SerialGenPipeline of the tiny models (`folders`), quiet."""
    from serialgen.pipelines.serial import SerialGenPipeline

    from .tiny import saved_adapter

    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.progress = False
    return serial
