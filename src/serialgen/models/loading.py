"""Loading backbones from local folders in their owners' published layouts.

A folder may be the component itself (config.json + weights) or a whole Stable Diffusion
pipeline folder, whose components sit in vae/, unet/, text_encoder/, tokenizer/,
scheduler/. With no folder, the bundled mini weights load. Weights must be safetensors:
pickle files (.bin, .ckpt) can run code when loaded, so they are refused unless the caller
opts in with ``allow_pickle=True`` (``--allow-pickle`` on the command line). Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
from tqdm import tqdm

from ..quiet import library_logs

BUNDLED = "mini"
# transformers 5 loads a model in the dtype its file was saved in; shipped weights are fp16,
# which CPUs run slowly and which mismatches float32 neighbours, so CLIP towers load as float32.
FLOAT32 = torch.float32


def bundled(name: str) -> Path:
    """Folder of a bundled mini model (vae, clip, t2i, judge)."""
    return Path(str(resources.files("serialgen"))) / "weights" / BUNDLED / name


def record_digest(folder: str | Path | None, bundled_name: str) -> str | None:
    """Identity of a trained component: the digest of the training.json beside its weights (the
    bundled `bundled_name`'s when `folder` is None); None for a folder without one (published
    weights carry no such record)."""
    record = (Path(folder) if folder else bundled(bundled_name)) / "training.json"
    return hashlib.sha256(record.read_bytes()).hexdigest()[:16] if record.is_file() else None


def _component(path: str | Path | None, default: str, subfolder: str, markers=("config.json",)) -> Path:
    """The folder holding a component: `root/subfolder` (pipeline layout) or `root` itself."""
    root = Path(path) if path is not None else bundled(default)
    for folder in (root / subfolder, root):
        if any((folder / m).exists() for m in markers):
            return folder
    where = "bundled mini weights" if path is None else "the folder"
    raise FileNotFoundError(
        f"No {subfolder} weights in {root} ({where}): expected {root}/{markers[0]} or {root}/{subfolder}/{markers[0]} "
        f"in the diffusers/transformers layout"
    )


def _safetensors_or_refuse(folder: Path, allow_pickle: bool) -> bool | None:
    """use_safetensors for from_pretrained: True when safetensors exist; pickles only on opt-in."""
    if any(folder.glob("*.safetensors")):
        return True
    pickles = [p.name for p in folder.glob("*") if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
    if pickles and not allow_pickle:
        raise ValueError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}), which can run code when loaded; convert them "
            "to safetensors, or pass allow_pickle=True (--allow-pickle) if you trust the source"
        )
    return None if allow_pickle else True


def load_vae(path: str | Path | None = None, *, allow_pickle: bool = False):
    from diffusers import AutoencoderKL

    folder = _component(path, "vae", "vae")
    with library_logs():
        return AutoencoderKL.from_pretrained(folder, use_safetensors=_safetensors_or_refuse(folder, allow_pickle))


def load_unet(path: str | Path | None = None, *, allow_pickle: bool = False):
    from diffusers import UNet2DConditionModel

    folder = _component(path, "t2i", "unet")
    with library_logs():
        return UNet2DConditionModel.from_pretrained(folder, use_safetensors=_safetensors_or_refuse(folder, allow_pickle))


def load_tokenizer(path: str | Path | None = None, default: str = "clip"):
    from transformers import CLIPTokenizer

    folder = _component(path, default, "tokenizer", markers=("vocab.json", "tokenizer.json"))
    return CLIPTokenizer.from_pretrained(folder)


def load_clip(path: str | Path | None = None, *, allow_pickle: bool = False):
    """A CLIPModel (both towers) and its tokenizer."""
    from transformers import CLIPModel

    folder = _component(path, "clip", ".")
    with library_logs():
        model = CLIPModel.from_pretrained(folder, dtype=FLOAT32,
                                          use_safetensors=_safetensors_or_refuse(folder, allow_pickle))
    return model, load_tokenizer(folder)


def load_clip_text(path: str | Path | None = None, *, allow_pickle: bool = False):
    """The CLIP text tower and tokenizer: from a CLIPModel folder, or text_encoder/ + tokenizer/
    of a Stable Diffusion pipeline folder."""
    from transformers import CLIPTextModel

    folder = _component(path, "clip", "text_encoder")
    use_safetensors = _safetensors_or_refuse(folder, allow_pickle)
    with library_logs():
        model = CLIPTextModel.from_pretrained(folder, dtype=FLOAT32, use_safetensors=use_safetensors)
    root = folder.parent if folder.name == "text_encoder" else folder
    return model, load_tokenizer(root)


def load_image_encoder(path: str | Path | None = None, *, allow_pickle: bool = False):
    """CLIP vision tower with its projection (transformers CLIPVisionModelWithProjection): from
    an image_encoder/ folder (IP-Adapter and SD image-variation layouts), a vision-model folder,
    or the vision half of a whole CLIPModel folder (the bundled mini CLIP)."""
    import json

    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = _component(path, "clip", "image_encoder")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "clip":
        with library_logs():
            return CLIPVisionModelWithProjection.from_pretrained(
                folder, dtype=FLOAT32, use_safetensors=_safetensors_or_refuse(folder, allow_pickle))
    # a whole CLIPModel: the vision config lacks projection_dim, which sits at the top level
    _safetensors_or_refuse(folder, allow_pickle)
    fields = {k: v for k, v in config["vision_config"].items() if k not in ("model_type", "transformers_version")}
    vision = CLIPVisionConfig(**(fields | {"projection_dim": config["projection_dim"]}))
    model = CLIPVisionModelWithProjection(vision)
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update({k: v for k, v in load_file(str(file)).items() if k.startswith(("vision_model.", "visual_projection."))})
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing:
        raise ValueError(f"{folder} lacks vision weights, e.g. {missing[0]}: is it a CLIP model folder?")
    dtype = next(iter(state.values())).dtype
    return model.to(dtype).eval()


def sd_pipeline(unet, vae, text_encoder, tokenizer):
    """Components in diffusers' StableDiffusionPipeline with the DDIM sampler (20 steps by default)."""
    with library_logs():  # diffusers' pipeline module imports transformers' image processors, which warn
        from diffusers import StableDiffusionPipeline

    from ..diffusion import sampling_scheduler

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sampling_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def add_time_ids(base, h: int, w: int) -> torch.Tensor:
    """SDXL's size conditioning for an uncropped h x w image: (1, 6)."""
    return base._get_add_time_ids((h, w), (0, 0), (h, w), dtype=torch.float32,
                                  text_encoder_projection_dim=base.text_encoder_2.config.projection_dim)


BASE_PARTS = "serialgen_base.json"  # a base assembled from component folders: {"unet": ..., "vae": ..., "text_encoder": ...}


def load_base(path: str | Path | None = None, *, allow_pickle: bool = False):
    """The text-to-image base model as a diffusers pipeline, with a DDIM sampler.

    None: the bundled mini model (its t2i UNet, mini VAE and mini CLIP text tower, named by
    t2i/serialgen_base.json). A folder: a whole Stable Diffusion 1.5 or SDXL pipeline in diffusers'
    layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, and text_encoder_2/,
    tokenizer_2/ for SDXL), or a folder whose serialgen_base.json names its unet, vae and
    text_encoder folders (relative to it)."""
    import json

    root = bundled("t2i") if path is None else Path(path)
    parts_index = root / BASE_PARTS
    if parts_index.is_file():  # a base assembled from component folders (the bundled mini one)
        parts = json.loads(parts_index.read_text())
        folders = {}
        for part in ("unet", "vae", "text_encoder"):
            if part not in parts or not (root / parts[part]).is_dir():
                raise FileNotFoundError(f"{root}: the base's {part} ({parts.get(part, 'not named')} in {BASE_PARTS}) is missing")
            folders[part] = (root / parts[part]).resolve()
        text_encoder, tokenizer = load_clip_text(folders["text_encoder"], allow_pickle=allow_pickle)
        return sd_pipeline(load_unet(folders["unet"], allow_pickle=allow_pickle).eval(),
                           load_vae(folders["vae"], allow_pickle=allow_pickle).eval(), text_encoder.eval(), tokenizer)
    with library_logs():  # diffusers' pipeline modules import transformers' image processors, which warn
        from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    root = Path(path)
    index = root / "model_index.json"
    if not index.exists():
        raise FileNotFoundError(f"{root} is not a diffusers pipeline folder (no model_index.json): give a Stable Diffusion "
                                "1.5 or SDXL folder in the diffusers layout")
    name = json.loads(index.read_text()).get("_class_name", "")
    classes = {"StableDiffusionPipeline": StableDiffusionPipeline, "StableDiffusionXLPipeline": StableDiffusionXLPipeline}
    if name not in classes:
        raise ValueError(f"{root} holds a {name or 'unknown'} pipeline; the base model must be a StableDiffusionPipeline "
                         "or StableDiffusionXLPipeline")
    _safetensors_or_refuse(root / "unet", allow_pickle)
    extra = dict(safety_checker=None, requires_safety_checker=False) if name == "StableDiffusionPipeline" else {}
    with library_logs():
        pipe = classes[name].from_pretrained(root, use_safetensors=None if allow_pickle else True, **extra)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def encode_text(base, captions: list[str], batch: int = 256, progress: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Captions -> the base pipeline's own text conditioning: (embeds (N, L, D) fp16, pooled
    (N, P) fp16 for SDXL, else None)."""
    embeds, pooled = [], []
    for k in tqdm(range(0, len(captions), batch), desc="encoding captions", disable=not progress):
        out = base.encode_prompt(prompt=captions[k:k + batch], device=base.unet.device, num_images_per_prompt=1,
                                 do_classifier_free_guidance=False)
        embeds.append(out[0].half())
        if len(out) == 4:
            pooled.append(out[2].half())
    return torch.cat(embeds), torch.cat(pooled) if pooled else None


@torch.no_grad()
def empty_text(base) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unconditional text, as the base pipeline makes it at sampling time (SDXL: zeros)."""
    embeds, pooled = encode_text(base, [""], progress=False)
    if getattr(base.config, "force_zeros_for_empty_prompt", False):
        embeds, pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    return embeds[0], pooled[0] if pooled is not None else None
