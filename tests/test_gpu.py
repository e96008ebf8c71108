"""On a CUDA device (skipped without one; `scripts/gpu_check.sh` runs them): half precision and
model CPU offload give the CPU's images, and offload keeps less on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.pipelines.serial import SerialGenPipeline

from .tiny import saved_adapter

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

OPTIONS = {"num_inference_steps": 4, "standardize_steps": 4, "use_pose": False, "seed": 3}
PROMPTS = ["a character, waving", "a character, running, side view"]


def _serial(folders) -> SerialGenPipeline:
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.progress = False
    return serial


def _pixels(out) -> np.ndarray:
    return np.stack([np.asarray(im, float) for im in [out.standardized, *out.images]])


def test_a_series_in_float16_on_cuda_is_the_cpu_float32_series(folders):
    reference = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
    cpu = _pixels(_serial(folders)(reference, PROMPTS, **OPTIONS))
    serial = _serial(folders).to("cuda", torch.float16)
    assert {p.device.type for p in serial.personalize.unet.parameters()} == {"cuda"}
    half = _pixels(serial(reference, PROMPTS, **OPTIONS))
    assert np.abs(half - cpu).mean() < 12  # the same images, to float16's precision


def test_model_cpu_offload_on_cuda_holds_one_model_and_draws_the_same_series(folders):
    reference = Image.fromarray(np.full((192, 128, 3), 180, np.uint8))
    torch.cuda.reset_peak_memory_stats()
    whole = _serial(folders).to("cuda", torch.float16)
    resident = torch.cuda.memory_allocated()
    a = _pixels(whole(reference, PROMPTS, **OPTIONS))
    del whole
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    serial = _serial(folders).to("cpu", torch.float16).enable_model_cpu_offload("cuda")
    b = _pixels(serial(reference, PROMPTS, **OPTIONS))
    assert np.abs(a - b).mean() < 1  # the same computation, moved model by model
    assert torch.cuda.memory_allocated() - base < resident  # after the call only the last model (the VAE) stays
    serial.personalize._offload.release()
    assert torch.cuda.memory_allocated() - base < 1024 ** 2
