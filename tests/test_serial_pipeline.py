"""The serial pipeline: each stage's expensive part once per series, its stages taken from the
adapter's training record, and `serialgen generate`, on tiny models in the published layouts."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from serialgen.cli import main as cli
from serialgen.data.memory import WorldArrays
from serialgen.models.loading import record_digest
from serialgen.pipelines.personalize import PersonalizePipeline
from serialgen.pipelines.serial import SerialGenPipeline

from .tiny import saved_adapter


def _count_calls(module, counter: list):
    return module.register_forward_hook(lambda *_: counter.append(1))

def test_an_adapter_says_when_it_was_trained_on_another_base(folders, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(folders / "sd15", base)
    (base / "training.json").write_text(json.dumps({"run": "this base"}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "ip-adapter.safetensors").write_bytes(saved_adapter(folders).read_bytes())
    (adapter / "training.json").write_text(json.dumps({"base_made_by": record_digest(base, "t2i")}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PersonalizePipeline.from_pretrained(adapter, base=base, image_encoder=folders / "image_encoder")
    (base / "training.json").write_text(json.dumps({"run": "the base retrained"}))
    with pytest.warns(UserWarning, match="trained on another text-to-image base"):
        PersonalizePipeline.from_pretrained(adapter, base=base, image_encoder=folders / "image_encoder")

def test_serial_pipeline_standardizes_once_and_batches_the_series(folders):
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder",
                                               adapter=saved_adapter(folders))
    serial.progress = False
    references, encodes, unet_calls = [], [], []
    serial.standardize.standardizer.reference_net.register_forward_hook(lambda *_: references.append(1))
    _count_calls(serial.personalize.image_encoder, encodes)
    _count_calls(serial.personalize.unet, unet_calls)
    prompts = [f"a character, waving, {v} view" for v in ("front", "side", "back", "three-quarter", "front")]
    reference = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
    out = serial(reference, prompts, num_inference_steps=3, batch_size=2, standardize_steps=2, use_pose=False, seed=4)
    assert len(out.images) == 5 and out.standardized.size == (128, 192)
    assert len(references) == 1  # one ReferenceNet pass for the whole series
    assert len(encodes) == 2  # the reference and the zero image, once each
    assert len(unet_calls) == 3 * 3  # steps x batches: guidance halves share a call
    again = serial(reference, prompts, num_inference_steps=3, batch_size=5, standardize_steps=2, use_pose=False, seed=4)
    assert len(unet_calls) == 3 * 3 + 3  # all five in one batch: one call per step
    for a, b in zip(again.images, out.images, strict=True):  # the series does not depend on the batching
        assert np.abs(np.asarray(a, float) - np.asarray(b, float)).max() <= 2
    one_stage = serial(reference, prompts[:1], standardize=False, num_inference_steps=2)
    assert one_stage.standardized is None and len(references) == 2

def test_generate_writes_the_series_and_a_sheet(dataset, folders, tmp_path, capsys):
    test = WorldArrays.load(dataset, "validation", limit=1, progress=False)
    Image.fromarray(test.images["image"][0]).save(tmp_path / "ref.png")
    (tmp_path / "prompts.txt").write_text("# scenes\na character, running, side view\n\na character, sitting\n")
    models = ["--standardizer", str(folders / "stage1"), "--base", str(folders / "sd15"), "--image-encoder",
              str(folders / "image_encoder"), "--adapter", str(saved_adapter(folders))]
    out = tmp_path / "series"
    code = cli(["generate", "--reference", str(tmp_path / "ref.png"), "--prompt", "a character, waving",
                "--prompts-file", str(tmp_path / "prompts.txt"), "--out", str(out), "--steps", "2", "--no-pose", *models])
    assert code == 0
    record = json.loads((out / "series.json").read_text())
    assert record["prompts"] == ["a character, waving", "a character, running, side view", "a character, sitting"]
    assert record["files"] == ["01.png", "02.png", "03.png"]
    assert all((out / f).exists() for f in record["files"] + ["standardized.png", "sheet.png"])
    sheet = Image.open(out / "sheet.png")
    assert sheet.height >= 192 and sheet.width > 4 * 128  # reference column + three images

    for bad, message in [([], "at least one --prompt"), (["--prompt", "  "], "empty"),
                         (["--prompt", "x", "--one-stage", "--standardized", str(tmp_path / "ref.png")], "exclude")]:
        assert cli(["generate", "--reference", str(tmp_path / "ref.png"), "--out", str(tmp_path / "o"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert cli(["generate", "--reference", str(tmp_path / "missing.png"), "--prompt", "x", "--out",
                str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["train", "vae", "--data", str(dataset), "--out", str(tmp_path / "v"), "--pairing", "paired"]) == 2
    assert "--pairing" in capsys.readouterr().err

def test_the_serial_pipeline_takes_its_stages_from_the_adapters_record(folders, tmp_path):
    import shutil

    kinds = {}
    for pairing in ("standardized", "paired", "unpaired", None):
        folder = tmp_path / str(pairing)
        folder.mkdir()
        shutil.copy(saved_adapter(folders), folder / "ip-adapter.safetensors")
        if pairing is not None:
            (folder / "training.json").write_text(json.dumps({"pairing": pairing}))
        serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                                   image_encoder=folders / "image_encoder", adapter=folder)
        kinds[pairing] = (serial.pairing, serial.standardize is not None)
    assert kinds == {"standardized": ("standardized", True), "paired": ("paired", False),
                     "unpaired": ("unpaired", False), None: ("standardized", True)}  # no record: SerialGen's use
    forced = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=tmp_path / "paired",
                                               one_stage=False)
    assert forced.standardize is not None
