"""The ComfyUI nodes, called as ComfyUI calls them (INPUT_TYPES, then the FUNCTION with the inputs
by name), on a tiny pipeline folder: images are [B, H, W, C] floats in 0..1 both ways."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from serialgen.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from serialgen.pipelines.serial import SerialGenPipeline

from .tiny import saved_adapter


def _call(name: str, **inputs):
    """As ComfyUI does: a fresh node object, its FUNCTION with the inputs its INPUT_TYPES names."""
    node_class = NODE_CLASS_MAPPINGS[name]
    spec = node_class.INPUT_TYPES()
    unknown = set(inputs) - set(spec["required"]) - set(spec.get("optional", {}))
    assert not unknown, unknown
    assert set(spec["required"]) <= set(inputs)
    out = getattr(node_class(), node_class.FUNCTION)(**inputs)
    assert isinstance(out, tuple) and len(out) == len(node_class.RETURN_TYPES)
    return out


def test_every_node_declares_the_classic_api():
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    for node_class in NODE_CLASS_MAPPINGS.values():
        assert isinstance(node_class.INPUT_TYPES()["required"], dict) and isinstance(node_class.RETURN_TYPES, tuple)
        assert callable(getattr(node_class, node_class.FUNCTION)) and node_class.CATEGORY == "serialgen"


def test_load_standardize_and_generate_as_comfyui_does(folders, tmp_path):
    serial = SerialGenPipeline.from_pretrained(standardizer=folders / "stage1", base=folders / "sd15",
                                               image_encoder=folders / "image_encoder", adapter=saved_adapter(folders))
    serial.save_pretrained(tmp_path / "pipe")
    (pipe,) = _call("SerialGenLoadPipeline", folder=str(tmp_path / "pipe"), device="cpu", dtype="float32")
    image = torch.full((1, 192, 128, 3), 0.7)
    (standardized,) = _call("SerialGenStandardize", pipeline=pipe, image=image, seed=1, steps=2,
                             detect_person=False)
    assert standardized.shape == (1, 192, 128, 3) and standardized.dtype == torch.float32
    assert 0 <= standardized.min() and standardized.max() <= 1
    series, shown = _call("SerialGenGenerateSeries", pipeline=pipe, reference=image, method="serialgen", seed=2,
                          steps=2, guidance=5.0, scale=1.0, detect_person=False,
                          prompts="# scenes\na character, waving\n\na character, sitting\n")
    assert series.shape == (2, 192, 128, 3) and shown.shape == (1, 192, 128, 3)
    expected = pipe(Image.fromarray(np.full((192, 128, 3), round(0.7 * 255), np.uint8)),
                    ["a character, waving", "a character, sitting"],
                    seed=2, num_inference_steps=2, use_pose=False)
    assert np.array_equal((series[0].numpy() * 255).round().astype(np.uint8), np.asarray(expected.images[0]))
    consistent, _ = _call("SerialGenGenerateSeries", pipeline=pipe, reference=image, method="consistent-attention",
                          seed=2, steps=2, guidance=5.0, scale=1.0, detect_person=False,
                          prompts="a character, waving\na character, sitting")
    assert consistent.shape == (2, 192, 128, 3)

    with pytest.raises(ValueError, match="channels-first"):
        _call("SerialGenStandardize", pipeline=pipe, image=image.permute(0, 3, 1, 2), seed=0, steps=1,
              detect_person=False)
    with pytest.raises(ValueError, match="at least one prompt"):
        _call("SerialGenGenerateSeries", pipeline=pipe, reference=image, method="serialgen", seed=0, steps=1,
              guidance=5.0, scale=1.0, detect_person=False, prompts="# nothing\n")
