"""The shared latent cache: encoded once per (images, VAE encoder), read back exactly, never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serialgen.data import latents as latent_cache
from serialgen.models.backbones import VAE_PRESETS, preset


@pytest.fixture()
def vae():
    torch.manual_seed(0)
    return preset(VAE_PRESETS, "mini", block_out_channels=(8, 8), norm_num_groups=4, scaling_factor=0.5).build().eval()


@pytest.fixture()
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 16, 8, 3), dtype=np.uint8)


def test_encodes_once_then_reads_the_same_latents(vae, images, tmp_path, monkeypatch):
    first = latent_cache.cached_latents(vae, images, tmp_path / "data", "train", tmp_path / "run", progress=False)
    assert first.shape == (5, 4, 8, 4)
    with torch.no_grad():
        direct = vae.encode(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mode() * 0.5
    torch.testing.assert_close(first, direct, rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "data" / "latents").glob("train-5-*.safetensors"))) == 1

    monkeypatch.setattr(latent_cache, "encode_latents", lambda *a, **k: pytest.fail("encoded a cached split again"))
    again = latent_cache.cached_latents(vae, images, tmp_path / "data", "train", tmp_path / "run", progress=False)
    assert torch.equal(first, again)


def test_the_name_changes_with_the_images_and_the_encoder_only(vae, images):
    name = latent_cache.cache_name(images, vae, "train")
    changed = images.copy()
    changed[3, 2, 1, 0] ^= 1
    assert latent_cache.cache_name(changed, vae, "train") != name
    assert latent_cache.cache_name(images, vae, "test") != name
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # the decoder does not shape the latents
    assert latent_cache.cache_name(images, vae, "train") == name
    with torch.no_grad():
        vae.encoder.conv_in.bias[0] += 1e-3
    assert latent_cache.cache_name(images, vae, "train") != name
    vae.register_to_config(scaling_factor=0.25)
    with torch.no_grad():
        vae.encoder.conv_in.bias[0] -= 1e-3
    assert latent_cache.cache_name(images, vae, "train") != name


def test_a_read_only_data_folder_caches_in_the_run_folder(vae, images, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "latents").write_text("a file where the cache folder would go")  # mkdir fails as on a read-only mount
    latent_cache.cached_latents(vae, images, data, "train", tmp_path / "run", progress=False)
    assert len(list((tmp_path / "run").glob("train-5-*.safetensors"))) == 1
