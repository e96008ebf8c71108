"""--device and --dtype: resolved before any model loads, refused with a reason, and honoured."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.devices import resolve
from serialgen.pipelines.serial import SerialGenPipeline

from .tiny import saved_adapter


def test_auto_is_the_cpu_in_float32_here_and_impossible_requests_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve() == (torch.device("cpu"), torch.float32)
    assert resolve("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve("cuda")
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        resolve("cpu", "float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve() == (torch.device("cuda"), torch.float16)  # half precision on a GPU by default
    assert resolve("auto", "float32") == (torch.device("cuda"), torch.float32)


def test_a_series_in_bfloat16_runs_in_bfloat16_and_stays_close_to_float32(folders):
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.progress = False
    reference = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
    options = dict(num_inference_steps=2, standardize_steps=2, use_pose=False, seed=1)
    full = np.asarray(serial(reference, ["a character, waving"], **options).images[0], float)
    serial.to("cpu", torch.bfloat16)
    try:
        assert {p.dtype for p in serial.personalize.unet.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in serial.standardize.standardizer.parameters()} == {torch.bfloat16}
        half = np.asarray(serial(reference, ["a character, waving"], **options).images[0], float)
    finally:
        serial.to("cpu", torch.float32)
    assert 0 < np.abs(half - full).mean() < 20  # the same image, to bfloat16's precision


def test_the_cli_refuses_a_missing_gpu_before_loading(tmp_path, monkeypatch, capsys):
    from serialgen.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    Image.new("RGB", (64, 96), (200, 100, 50)).save(tmp_path / "ref.png")
    assert main(["generate", "--reference", str(tmp_path / "ref.png"), "--prompt", "a character", "--out",
                 str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["standardize", str(tmp_path / "ref.png"), "--out", str(tmp_path / "s.png"), "--dtype", "float16",
                 "--device", "cpu"]) == 2
    assert "float16 needs a GPU" in capsys.readouterr().err
