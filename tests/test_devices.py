"""--device and --dtype: resolved before any model loads, refused with a reason, and honoured."""

from __future__ import annotations

import dataclasses

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
    for command in (["generate", "--reference", str(tmp_path / "ref.png"), "--prompt", "a character", "--out",
                     str(tmp_path / "out")], ["standardize", str(tmp_path / "ref.png"), "--out", str(tmp_path / "s.png")]):
        assert main(command + ["--offload"]) == 2
        assert "--offload moves each model to the GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.png").exists()


def test_model_cpu_offload_places_one_model_at_a_time_in_call_order_and_changes_no_pixel(folders):
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.progress = False
    reference = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
    options = dict(num_inference_steps=2, standardize_steps=2, use_pose=False, seed=1)
    plain = serial(reference, ["a character, waving", "a character, running"], **options)
    serial.enable_model_cpu_offload("cpu")  # the execution device: this machine has no GPU
    offload = serial.personalize._offload
    assert offload is serial.standardize._offload  # one model of both stages on the device at a time
    moved = serial(reference, ["a character, waving", "a character, running"], **options)
    for a, b in zip([plain.standardized, *plain.images], [moved.standardized, *moved.images], strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    names = [type(m).__name__ for m in offload.placed]
    # Stage I: VAE and CLIP encode the reference, the ReferenceNet pass, the white canvas's latent (once
    # per pipeline), the sampler, the decode; Stage II: CLIP reads the standardized image (and the
    # negative), the adapter makes tokens, prompts, the UNet with the adapter, the decode
    assert names == ["AutoencoderKL", "CLIPVisionModelWithProjection", "Standardizer", "AutoencoderKL", "Standardizer",
                     "AutoencoderKL", "CLIPVisionModelWithProjection", "IPAdapter", "CLIPTextModel", "Personalizer",
                     "AutoencoderKL"]
    assert offload.current is serial.personalize.base.vae and len(set(map(id, offload.placed))) == 8  # each stage loaded its own VAE and CLIP
    offload.release()
    assert offload.current is None


def test_training_takes_a_device_and_refuses_what_this_machine_cannot_do(dataset, tmp_path, monkeypatch, capsys):
    from serialgen.cli import main
    from serialgen.train.common import make_accelerator
    from serialgen.train.config import Precision
    from serialgen.train.stage2 import PRESETS

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert make_accelerator(PRESETS["mini"], "cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        make_accelerator(dataclasses.replace(PRESETS["mini"], mixed_precision=Precision.FP16), "auto")
    out = tmp_path / "run"
    assert main(["train", "stage2", "--data", str(dataset), "--out", str(out), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert main(["train", "stage2", "--data", str(dataset), "--out", str(out), "--mixed-precision", "fp16"]) == 2
    assert "fp16 needs a GPU" in capsys.readouterr().err
    assert not out.exists()  # refused before the run folder is made
