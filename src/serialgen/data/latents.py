"""VAE latents of a split, encoded once and shared by every trainer that needs them.

Encoding the 25,600 training renders of the mini world takes about 13 minutes on 2 CPU cores,
and the text-to-image base, each Stage II adapter and each of their phases train on the very
same latents. They are cached beside the data, under `<data>/latents/`, in a file named by a
digest of the images and of the VAE (its config and weights), so a changed world or VAE never
reads a stale cache. Where the data folder is read-only the cache goes to the fallback folder
given (a run's own folder).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .memory import to_float


def weights_digest(module, prefixes: tuple[str, ...] = (), config: dict | None = None,
                   exclude: tuple[str, ...] = ()) -> str:
    """A digest of a module's weights (those whose names start with one of `prefixes`, all when
    empty, less those whose names contain one of `exclude`) and, when given, a config: which weights
    made something."""
    h = hashlib.blake2b(digest_size=16)
    if config is not None:
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(module.state_dict().items()):
        if (not prefixes or name.startswith(prefixes)) and not any(part in name for part in exclude):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def vae_digest(vae) -> str:
    """A digest of an AutoencoderKL's config and weights (the encoder's, the quant conv's and
    the scaling factor: what the latents depend on)."""
    return weights_digest(vae, ("encoder.", "quant_conv."),
                          {k: v for k, v in vae.config.items() if not k.startswith("_")})


def images_digest(images: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((images.shape, str(images.dtype))).encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


def cache_name(images: np.ndarray, vae, split: str) -> str:
    return f"{split}-{len(images)}-{images_digest(images)[:16]}-{vae_digest(vae)[:16]}.safetensors"


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 64, device: torch.device | str = "cpu",
                   progress: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> scaled latents (N, 4, H/8, W/8) fp32 on the CPU, posterior means."""
    out = []
    for k in tqdm(range(0, len(images), batch), desc="encoding latents", disable=not progress):
        pixels = to_float(images[k:k + batch]).to(device, vae.dtype)
        out.append(vae.encode(pixels).latent_dist.mode().float().cpu())
    return torch.cat(out) * vae.config.scaling_factor


def cached_latents(vae, images: np.ndarray, data: str | Path, split: str, fallback: str | Path,
                   device: torch.device | str = "cpu", progress: bool = True, write: bool = True) -> torch.Tensor:
    """The latents of `images` (a split of the world at `data`), from `<data>/latents/` or
    `fallback` when cached there, else encoded and, if `write`, cached (atomically) in the
    first of the two folders that is writable. `write=False` is for all processes but one in
    a distributed run: they encode too, and read nothing half-written."""
    name = cache_name(images, vae, split)
    folders = [Path(data) / "latents", Path(fallback)]
    for folder in folders:
        if (folder / name).exists():
            return load_file(str(folder / name))["latents"]
    latents = encode_latents(vae, images, device=device, progress=progress)
    if write:
        for folder in folders:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / (name + ".tmp")
                save_file({"latents": latents.contiguous()}, str(tmp))
                tmp.replace(folder / name)
                break
            except OSError:
                continue
    return latents
