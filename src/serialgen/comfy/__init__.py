"""ComfyUI custom nodes (the classic node API): load a pipeline folder, standardize a reference,
draw a series. Images travel as ComfyUI's IMAGE, a float tensor [B, H, W, C] in 0..1.

Install into ComfyUI: `pip install serialgen` into ComfyUI's Python, then put a folder
`custom_nodes/serialgen/` beside ComfyUI's other custom nodes holding one `__init__.py` with

    from serialgen.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

(docs/COMFYUI.md). The nodes appear under "serialgen".
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CATEGORY = "serialgen"


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """ComfyUI IMAGE [B, H, W, C] floats in 0..1 -> PIL images; a clear error for another layout."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"serialgen nodes take ComfyUI images, a [batch, height, width, channels] float tensor with "
                         f"3 or 4 channels in 0..1; got {shape} (a [B, C, H, W] tensor is channels-first: permute it)")
    array = (images[..., :3].detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
    return [Image.fromarray(a) for a in array]


def to_comfy(images) -> torch.Tensor:
    """PIL images -> ComfyUI IMAGE [B, H, W, 3] floats in 0..1."""
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB"), np.float32) / 255.0 for im in images]))


class LoadSerialGenPipeline:
    """A pipeline folder (SerialGenPipeline.save_pretrained), or the bundled mini models when empty."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802  (ComfyUI's name)
        return {"required": {"folder": ("STRING", {"default": "", "multiline": False})},
                "optional": {"device": (("auto", "cpu", "cuda"),), "dtype": (("auto", "float32", "float16", "bfloat16"),)}}

    RETURN_TYPES = ("SERIALGEN_PIPELINE",)
    RETURN_NAMES = ("pipeline",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, folder: str = "", device: str = "auto", dtype: str = "auto"):
        from ..devices import resolve
        from ..pipelines.serial import SerialGenPipeline

        pipe = SerialGenPipeline.from_pretrained(folder.strip() or None).to(*resolve(device, dtype))
        pipe.progress = False
        return (pipe,)


class StandardizeReference:
    """Stage I: each reference image redrawn in the standard form (A-pose, front view, white background)."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        return {"required": {"pipeline": ("SERIALGEN_PIPELINE",), "image": ("IMAGE",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "steps": ("INT", {"default": 20, "min": 1, "max": 200}),
                             "detect_person": ("BOOLEAN", {"default": True})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("standardized",)
    FUNCTION = "standardize"
    CATEGORY = CATEGORY

    def standardize(self, pipeline, image, seed: int = 0, steps: int = 20, detect_person: bool = True):
        if pipeline.standardize is None:
            raise ValueError("This pipeline has no standardizer (its adapter was trained on raw references)")
        out = pipeline.standardize(to_pil(image), num_inference_steps=steps, seed=seed, use_pose=detect_person)
        return (to_comfy(out.images),)


class GenerateSeries:
    """The character of the reference in each scene, one prompt per line."""

    @classmethod
    def INPUT_TYPES(cls):  # noqa: N802
        from ..pipelines import METHODS

        return {"required": {"pipeline": ("SERIALGEN_PIPELINE",), "reference": ("IMAGE",),
                             "prompts": ("STRING", {"multiline": True,
                                                    "default": "a character, waving, on a beach, full body shot"}),
                             "method": (list(METHODS),),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                             "steps": ("INT", {"default": 20, "min": 1, "max": 200}),
                             "guidance": ("FLOAT", {"default": 5.0, "min": 0.0, "max": 30.0, "step": 0.5}),
                             "scale": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.05}),
                             "detect_person": ("BOOLEAN", {"default": True})}}

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("series", "standardized")
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(self, pipeline, reference, prompts: str, method: str = "serialgen", seed: int = 0, steps: int = 20,
                 guidance: float = 5.0, scale: float = 1.0, detect_person: bool = True):
        lines = [p.strip() for p in prompts.splitlines() if p.strip() and not p.strip().startswith("#")]
        if not lines:
            raise ValueError("Give at least one prompt, one per line")
        from ..pipelines import compose_method

        pipe = compose_method(pipeline, method)  # an unknown method is refused here
        refs = to_pil(reference)
        out = pipe(refs[0], lines, seed=seed, num_inference_steps=steps, guidance_scale=guidance, scale=scale,
                   use_pose=detect_person)
        shown = out.standardized if out.standardized is not None else refs[0]
        return to_comfy(out.images), to_comfy([shown])


NODE_CLASS_MAPPINGS = {"SerialGenLoadPipeline": LoadSerialGenPipeline, "SerialGenStandardize": StandardizeReference,
                       "SerialGenGenerateSeries": GenerateSeries}
NODE_DISPLAY_NAME_MAPPINGS = {"SerialGenLoadPipeline": "Load SerialGen pipeline",
                              "SerialGenStandardize": "Standardize reference (Stage I)",
                              "SerialGenGenerateSeries": "Generate character series"}
