"""A whole pipeline as one folder: save_pretrained / from_pretrained, each part in its published
layout, a model card, a clear error for a missing part, and the bundled mini models as such a folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from serialgen.pipelines.serial import PIPELINE_INDEX, SerialGenPipeline, bundled_root, read_pipeline_index

from .tiny import saved_adapter

REFERENCE = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
OPTIONS = dict(num_inference_steps=2, standardize_steps=2, use_pose=False, seed=3)


def test_a_saved_pipeline_loads_back_and_draws_the_same_series(folders, tmp_path):
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.progress = False
    before = serial(REFERENCE, ["a character, waving"], **OPTIONS)
    out = serial.save_pretrained(tmp_path / "pipe")
    index = json.loads((out / PIPELINE_INDEX).read_text())
    assert index["_class_name"] == "SerialGenPipeline" and index["standardizer"] == "standardizer"
    assert (out / "base" / "model_index.json").is_file() and (out / "adapter" / "ip-adapter.safetensors").is_file()
    assert (out / "standardizer" / "vae" / "config.json").is_file()
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\n") and "library_name: serialgen" in card
    assert "pipeline_tag: text-to-image" in card and "| standardizer |" in card
    loaded = SerialGenPipeline.from_pretrained(out)
    loaded.progress = False
    after = loaded(REFERENCE, ["a character, waving"], **OPTIONS)
    assert np.array_equal(np.asarray(before.images[0]), np.asarray(after.images[0]))
    assert np.array_equal(np.asarray(before.standardized), np.asarray(after.standardized))
    serial.save_pretrained(out)  # saved again over itself: replaced whole, no temporaries left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]

    shutil.rmtree(out / "image_encoder")
    with pytest.raises(FileNotFoundError, match="image_encoder"):
        SerialGenPipeline.from_pretrained(out)
    with pytest.raises(FileNotFoundError, match="not a serialgen pipeline folder"):
        SerialGenPipeline.from_pretrained(tmp_path)


def test_the_bundled_models_are_a_pipeline_folder():
    parts = read_pipeline_index(bundled_root())
    assert {k: v.name for k, v in parts.items()} == {"standardizer": "stage1", "adapter": "stage2", "base": "t2i",
                                                     "image_encoder": "clip"}
    assert json.loads((parts["base"] / "serialgen_base.json").read_text())["unet"] == "unet"


def test_generate_takes_a_pipeline_folder(folders, tmp_path):
    from serialgen.cli import main

    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.save_pretrained(tmp_path / "pipe")
    REFERENCE.save(tmp_path / "ref.png")
    assert main(["generate", "--pipeline", str(tmp_path / "pipe"), "--reference", str(tmp_path / "ref.png"),
                 "--prompt", "a character, waving", "--out", str(tmp_path / "out"), "--steps", "2", "--no-pose"]) == 0
    assert (tmp_path / "out" / "01.png").is_file() and (tmp_path / "out" / "standardized.png").is_file()
    assert main(["generate", "--pipeline", str(tmp_path), "--reference", str(tmp_path / "ref.png"),
                 "--prompt", "a character", "--out", str(tmp_path / "out2")]) == 2


def test_every_part_named_needs_no_pipeline_folder(folders, tmp_path, monkeypatch):
    from serialgen.models import loading

    monkeypatch.setattr(loading, "bundled", lambda name: tmp_path / "no-weights" / name)
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    assert serial.standardize is not None
    with pytest.raises(FileNotFoundError, match="scripts/train_mini.sh"):
        SerialGenPipeline.from_pretrained(base=folders / "sd15")  # the rest would come from the bundled folder
