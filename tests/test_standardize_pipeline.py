"""StandardizePipeline on tiny random components: one ReferenceNet pass per call, seeds,
guidance batching, saved-folder loading, input checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from serialgen.diffusion import sampling_scheduler
from serialgen.models.standardizer import Standardizer, StandardizerConfig
from serialgen.pipelines import StandardizePipeline
from serialgen.preprocess import Reference
from serialgen.silhouette import colour_silhouette

from .tiny import TINY_UNET, TINY_VAE

TEMPLATE = tuple((0.5, 0.1 + 0.04 * k, 1.0) for k in range(18))


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    vae = TINY_VAE.build().eval()
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                             num_attention_heads=2, image_size=32, patch_size=8,
                                                             projection_dim=32)).eval()
    config = StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16), template_keypoints=TEMPLATE)
    model = Standardizer.from_unet(TINY_UNET.build(), config).eval()
    pipe = StandardizePipeline(vae, encoder, model, sampling_scheduler())
    pipe.progress = False
    return pipe


def _reference(seed=0, with_pose=True):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (192, 128, 3), dtype=np.uint8)
    mask = np.zeros((192, 128), np.float32)
    mask[40:180, 30:100] = 1
    pose = rng.integers(0, 255, (192, 128, 3), dtype=np.uint8) if with_pose else None
    return Reference(image, mask if with_pose else None, None, pose)


def test_reference_net_runs_once_per_call_whatever_the_steps(pipe):
    calls = []
    handle = pipe.standardizer.reference_net.register_forward_hook(lambda *a: calls.append(1))
    steps = []
    pose_handle = pipe.standardizer.pose_guider.register_forward_hook(lambda *a: steps.append(1))
    try:
        for n in (2, 5):
            calls.clear()
            steps.clear()
            out = pipe([_reference(0), _reference(1)], num_inference_steps=n, seed=0)
            assert len(calls) == 1 and len(steps) == 1
            assert [im.size for im in out.images] == [(128, 192)] * 2
    finally:
        handle.remove()
        pose_handle.remove()


def test_seeded_calls_repeat_and_seeds_and_references_matter(pipe):
    run = lambda ref, seed, **kw: np.asarray(pipe(ref, num_inference_steps=3,  # noqa: E731
                                                  seed=seed, **kw).images[0], np.int16)
    a, b = run(_reference(0), 1), run(_reference(0), 1)
    assert np.array_equal(a, b)
    assert np.abs(a - run(_reference(0), 2)).max() > 0
    assert np.abs(a - run(_reference(5), 1)).max() > 0
    no_guidance = run(_reference(0), 1, guidance_scale=1.0)
    assert np.abs(a - no_guidance).max() > 0  # the unconditional half (no bank) takes part
    assert run(_reference(0, with_pose=False), 1).shape == (192, 128, 3)  # no mask, no pose: still runs


def test_the_default_start_is_the_forward_process_of_the_white_canvas_around_the_figure(pipe):
    pose = np.zeros((192, 128, 3), np.uint8)
    pose[80:112, 56:72] = 255  # latent rows 10-13, columns 7-8; grown by one cell: rows 9-14, columns 6-9
    noise = torch.randn(2, 4, 24, 16, generator=torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(20)
    x = pipe.start_latents(noise, pose)
    abar = pipe.scheduler.alphas_cumprod[pipe.scheduler.timesteps[0]]
    centred = noise - noise.mean(dim=(2, 3), keepdim=True)  # the noise's own tint is removed
    signal = (x - (1 - abar).sqrt() * centred) / abar.sqrt()
    canvas = pipe.encode_images(torch.ones(1, 3, 192, 128))[0].expand(2, -1, -1, -1)
    inside = torch.zeros(24, 16, dtype=torch.bool)
    inside[9:15, 6:10] = True
    assert signal[..., inside].abs().max() < 1e-4
    torch.testing.assert_close(signal[..., ~inside], canvas[..., ~inside], atol=1e-4, rtol=1e-4)
    assert canvas[..., ~inside].abs().mean() > 0.01  # a white canvas is not the zero latent (tiny VAE: 0.036)
    assert noise.mean(dim=(2, 3)).abs().max() > 0.05  # so removing the mean changed this noise
    shifted = pipe.start_latents(noise + torch.tensor([0.3, -0.2, 0.1, 0.0]).view(1, 4, 1, 1), pose)
    torch.testing.assert_close(shifted, x)  # a constant offset of the noise does not reach the start

    seen = []  # __call__ starts there (the template pose; the first UNet input's halves are x)
    hook = pipe.standardizer.register_forward_pre_hook(lambda m, args: seen.append(args[0][:1].clone()))
    try:
        pipe(_reference(0), num_inference_steps=20, seed=4)
        pipe(_reference(0), num_inference_steps=20, seed=4, start="noise")
    finally:
        hook.remove()
    noise = torch.randn(1, 4, 24, 16, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(seen[0], pipe.start_latents(noise, pipe.template_pose()))
    torch.testing.assert_close(seen[20], noise * pipe.scheduler.init_noise_sigma)
    with pytest.raises(ValueError, match="start must be"):
        pipe(_reference(0), num_inference_steps=2, start="white")


def test_saved_folder_loads_into_the_same_pipeline(pipe, tmp_path):
    pipe.standardizer.save_pretrained(tmp_path / "w")
    pipe.vae.save_pretrained(tmp_path / "w" / "vae")
    pipe.image_encoder.save_pretrained(tmp_path / "w" / "image_encoder")
    loaded = StandardizePipeline.from_pretrained(tmp_path / "w")
    loaded.progress = False
    a = pipe(_reference(0), num_inference_steps=2, seed=3).images[0]
    b = loaded(_reference(0), num_inference_steps=2, seed=3).images[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="serialgen train stage1"):
        StandardizePipeline.from_pretrained(tmp_path / "nothing")


def test_bad_inputs_are_refused(pipe):
    with pytest.raises(ValueError, match="at least one"):
        pipe([])
    small = Reference(np.zeros((96, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="needs 128x192"):
        pipe(small)
    with pytest.raises(ValueError, match="target_pose"):
        pipe(_reference(0), target_pose=np.zeros((10, 10, 3), np.uint8))


def test_the_silhouette_start_noises_the_references_colour_silhouette_part_way(pipe):
    """start="silhouette": the reference's colour silhouette at its standard keypoints, VAE-encoded,
    noised (mean-free noise) to the timestep `strength` of the way in; only those steps run."""
    ref = _reference(0)
    seen = []  # (first UNet input, its timestep) per call
    hook = pipe.standardizer.register_forward_pre_hook(lambda m, args: seen.append((args[0][:1].clone(), int(args[1][0]))))
    try:
        pipe(ref, num_inference_steps=10, seed=4, start="silhouette", strength=0.4)
    finally:
        hook.remove()
    pipe.scheduler.set_timesteps(10)
    timesteps = pipe.scheduler.timesteps
    assert [t for _, t in seen] == timesteps[6:].tolist()  # 4 of the 10 steps
    keypoints = pipe.target_keypoints([ref])
    silhouette = colour_silhouette(ref, keypoints[0], 128, 192, normalized=False)
    # no keypoints: the template pose, every part in the median colour of the reference's mask
    median = np.median(ref.image[ref.mask > 0.5], 0).round()
    assert (np.abs(silhouette.reshape(-1, 3).astype(int) - median).sum(1) == 0).sum() > 200
    assert set(map(tuple, silhouette.reshape(-1, 3))) <= {(255, 255, 255), tuple(median.astype(np.uint8))}
    noise = torch.randn(1, 4, 24, 16, generator=torch.Generator().manual_seed(4))
    noise = noise - noise.mean(dim=(2, 3), keepdim=True)
    expected = pipe.scheduler.add_noise(pipe.silhouette_latents([ref], keypoints), noise, timesteps[6:7])
    torch.testing.assert_close(seen[0][0], expected)


def test_the_start_saved_with_the_weights_is_the_default(pipe, monkeypatch):
    ref = _reference(2)
    run = lambda **kw: np.asarray(pipe(ref, num_inference_steps=4, seed=1, **kw).images[0], np.int16)  # noqa: E731
    canvas = run()  # the fixture's config: the canvas start
    monkeypatch.setattr(pipe.standardizer, "config", dataclasses.replace(pipe.standardizer.config, start="silhouette",
                                                                         strength=0.5))
    chosen = run()
    assert np.array_equal(chosen, run(start="silhouette", strength=0.5))
    assert np.abs(chosen - canvas).max() > 0 and np.array_equal(canvas, run(start="canvas"))
    # a given target pose has no keypoints to draw a silhouette at: the saved start gives way to the canvas
    pose = pipe.template_pose()
    assert np.array_equal(run(target_pose=pose), run(target_pose=pose, start="canvas"))
    with pytest.raises(ValueError, match="target_pose"):
        run(target_pose=pose, start="silhouette")
    for strength in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            run(start="silhouette", strength=strength)
    with pytest.raises(ValueError, match="start must be one of"):
        StandardizerConfig.from_json('{"start": "white"}')
