"""Models for the speed benchmarks: the bundled mini weights when they are installed, else the
same mini architectures with random weights (wall time does not depend on the weights' values)."""

from __future__ import annotations

import numpy as np
import torch


def world_reference(seed: int = 0):
    """A held-out world sample as a prepared Reference."""
    from serialgen.preprocess import Reference
    from serialgen.world.generator import CharacterWorld

    world = CharacterWorld(128, 192, seed=seed)
    s = world.sample(4, 0)  # character 4 is in the test split
    return Reference.from_world(s["image"], s["foreground"], s["keypoints"])


def _mini_vision(projection_dim: int = 256):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from serialgen.models.backbones import CLIP_PRESETS

    c = CLIP_PRESETS["mini"]
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=c.vision_hidden, intermediate_size=4 * c.vision_hidden, num_hidden_layers=c.vision_layers,
        num_attention_heads=c.vision_heads, image_size=c.image_size, patch_size=c.patch_size,
        projection_dim=projection_dim)).eval()


def standardize_pipeline(random: bool = False):
    """-> (StandardizePipeline, description)."""
    from serialgen.diffusion import sampling_scheduler
    from serialgen.models.backbones import UNET_PRESETS, VAE_PRESETS
    from serialgen.models.standardizer import Standardizer, StandardizerConfig
    from serialgen.pipelines.standardize import StandardizePipeline

    if not random:
        try:
            return StandardizePipeline.from_pretrained(), "bundled mini weights"
        except FileNotFoundError:
            pass
    from serialgen.world.generator import CharacterWorld

    kp = CharacterWorld(128, 192, seed=0).standard(4)["keypoints"]  # a world A-pose as the template
    template = tuple((float(x) / 128, float(y) / 192, float(v)) for x, y, v in kp)
    torch.manual_seed(0)
    model = Standardizer.from_unet(UNET_PRESETS["mini"].build(),
                                   StandardizerConfig(width=128, height=192, template_keypoints=template))
    pipe = StandardizePipeline(VAE_PRESETS["mini"].build().eval(), _mini_vision(), model.eval(), sampling_scheduler())
    return pipe, "mini architectures, random weights (no bundled weights installed)"


def personalize_pipeline(random: bool = False):
    """-> (PersonalizePipeline, description)."""
    from serialgen.models.backbones import CLIP_PRESETS, UNET_PRESETS, VAE_PRESETS
    from serialgen.models.ip_adapter import IPAdapter
    from serialgen.models.loading import sd_pipeline
    from serialgen.models.tokenizer import build_tokenizer
    from serialgen.pipelines.personalize import PersonalizePipeline

    if not random:
        try:
            return PersonalizePipeline.from_pretrained(), "bundled mini weights"
        except FileNotFoundError:
            pass
    torch.manual_seed(0)
    words = ["a character, waving, side view, smiling, on a beach, full body shot", "running in a forest, back view"]
    tokenizer = build_tokenizer(words * 8, vocab_size=600, model_max_length=64)
    clip = CLIP_PRESETS["mini"].build(tokenizer)
    unet = UNET_PRESETS["mini"].build().eval()
    base = sd_pipeline(unet, VAE_PRESETS["mini"].build().eval(), clip.text_model.eval(), tokenizer)
    encoder = _mini_vision()
    return (PersonalizePipeline(base, encoder, IPAdapter.for_unet(unet, encoder.config.hidden_size).eval()),
            "mini architectures, random weights (no bundled weights installed)")


def reference_inputs(pipe, reference) -> dict:
    """One prepared reference as the Stage I pipeline feeds it: pixels, VAE latents, CLIP embedding,
    FBDM background and RPIM pose map, each a batch of one."""
    from serialgen.pipelines.standardize import to_tensor

    pixels = to_tensor(reference.image[None])
    latents, embeds = pipe.encode_images(pixels)
    return {"pixels": pixels, "latents": latents, "embeds": embeds,
            "background": 1.0 - torch.from_numpy(reference.mask[None, None]).float(),
            "ref_pose": to_tensor(reference.pose_map[None])}


def target_pose_features(pipe, reference) -> torch.Tensor:
    """The PoseGuider's features of the reference's target pose, as the pipeline makes them: the
    predicted standard keypoints, their pose map and, where the model reads one, the colour
    silhouette drawn at them."""
    from serialgen.pipelines.standardize import to_tensor

    model = pipe.standardizer
    keypoints = pipe.target_keypoints([reference])
    pose_map = pipe.target_poses([reference], keypoints)
    prior = to_tensor(pipe.colour_silhouettes([reference], keypoints)) if model.config.colour_prior else None
    return model.pose_features(to_tensor(pose_map if pose_map.ndim == 4 else pose_map[None]), prior)


def standardize_loop(pipe, reference, steps: int):
    """-> a callable running the Stage I sampler's bare loop: `steps` calls of the denoising UNet
    with the reference-concatenated attention on the guided batch of 2 (one reference), with the
    ReferenceNet bank, the target pose's features (and colour prior) and initial noise made once,
    outside it."""
    model = pipe.standardizer
    inputs = reference_inputs(pipe, reference)
    latents, embeds = inputs["latents"], inputs["embeds"]
    bank = model.encode_reference(latents, embeds, inputs["background"], inputs["ref_pose"])
    bank.keep = torch.tensor([False, True])
    pose = target_pose_features(pipe, reference).expand(2, -1, -1, -1)
    cond = {"reference": bank, "pose": pose, "image": torch.cat([torch.zeros_like(embeds), embeds])}
    x = torch.randn(2, *latents.shape[1:])
    timesteps = np.linspace(999, 0, steps).round().astype(int)

    def bare():
        for t in timesteps:
            model(x, torch.full((2,), int(t)), cond)

    return bare


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() over `repeats` runs, after one warm-up run."""
    return float(np.median(interleaved({"fn": fn}, repeats)["fn"]))


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of each of fns' callables over `repeats` rounds, one call of each per round in
    turn, after one warm-up round: a drift of the machine's speed (other processes, clocks) falls on
    every callable alike, so per-round ratios are steadier than ratios of separately taken medians."""
    import time

    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times
