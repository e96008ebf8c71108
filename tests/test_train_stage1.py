"""Stage I trainer end to end on tiny models: exact resume after a kill, ablation flags,
the exported standardizer and its scores."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from serialgen.models import backbones
from serialgen.models.standardizer import Standardizer
from serialgen.pipelines import StandardizePipeline
from serialgen.train import stage1

from .tiny import TINY_CLIP, TINY_UNET, TINY_VAE, train_killed_after_checkpoint, train_with


def _args(data, out, config, resume=False, no_fbdm=False, no_rpim=False):
    return argparse.Namespace(data=str(data), out=str(out), config=str(config), resume=resume, no_fbdm=no_fbdm,
                              no_rpim=no_rpim)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    TINY_VAE.build().save_pretrained(root / "vae")
    dataclasses.replace(TINY_CLIP, projection_dim=TINY_UNET.cross_attention_dim).build().save_pretrained(root / "clip")
    return root


@pytest.fixture()
def config(encoders, tmp_path, monkeypatch):
    monkeypatch.setitem(backbones.UNET_PRESETS, "test", TINY_UNET)
    values = dict(unet="scratch", architecture="test", vae=str(encoders / "vae"), clip=str(encoders / "clip"), steps=4,
                  batch_size=3, warmup=1, lr=1e-3, pose_channels=[4, 8, 8, 16], checkpoint_every=2, sample_every=4,
                  sample_steps=2, eval_samples=2, backgrounds=4)
    path = tmp_path / "stage1.toml"
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n")
    return path


def test_stage1_resumes_exactly_and_exports_a_loadable_standardizer(dataset, tmp_path, config, monkeypatch, encoders):
    straight = tmp_path / "straight"
    assert train_with(stage1, _args(dataset, straight, config)) == 0
    split = tmp_path / "split"
    train_killed_after_checkpoint(monkeypatch, stage1, _args(dataset, split, config), step=2)
    assert train_with(stage1, _args(dataset, split, config, resume=True)) == 0
    a = load_file(str(straight / "checkpoint" / "model.safetensors"))
    b = load_file(str(split / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    info = json.loads((straight / "model" / "training.json").read_text())
    assert 0 < info["heldout"]["ssim"] <= 1 and info["heldout"]["psnr"] > 0
    model = Standardizer.from_pretrained(straight / "model")
    assert len(model.config.template_keypoints) == 18 and model.config.fbdm and model.config.rpim
    nose_y = model.config.template_keypoints[0][1]
    assert 0.05 < nose_y < 0.15  # the standard face sits near the top (world: face centre at 0.095 H)
    assert (straight / "samples" / "samples_000004.png").exists()
    pipe = StandardizePipeline.from_pretrained(straight / "model", vae=encoders / "vae", image_encoder=encoders / "clip")
    assert pipe.size == (128, 192)


def test_ablation_flags_train_models_without_fbdm_and_rpim(dataset, tmp_path, config):
    assert train_with(stage1, _args(dataset, tmp_path / "neither", config, no_fbdm=True, no_rpim=True)) == 0
    model = Standardizer.from_pretrained(tmp_path / "neither" / "model")
    assert not model.config.fbdm and not model.config.rpim and model.rpim is None and len(model.adapters) == 0
    weights = load_file(str(tmp_path / "neither" / "model" / "adapters.safetensors"))
    assert all(k.startswith("pose_guider.") for k in weights)


def test_paper_layout_folders_build_the_same_model(dataset, tmp_path, monkeypatch):
    """The paper preset's sources, as published: a Stable Diffusion 1.5 folder (unet/, vae/) whose
    UNet initialises both UNets, and a CLIP vision tower with projection (image_encoder/, as
    sd-image-variations and IP-Adapter ship ViT-L/H). Tiny random weights in those layouts."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = TINY_UNET.build()
    unet.save_pretrained(tmp_path / "sd15" / "unet")
    TINY_VAE.build().save_pretrained(tmp_path / "sd15" / "vae")
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                   num_attention_heads=2, image_size=32, patch_size=8,
                                                   projection_dim=TINY_UNET.cross_attention_dim)
                                  ).save_pretrained(tmp_path / "vit" / "image_encoder")
    values = dict(unet=str(tmp_path / "sd15"), vae=str(tmp_path / "sd15"), clip=str(tmp_path / "vit"), steps=1,
                  batch_size=2, warmup=0, pose_channels=[4, 8, 8, 16], sample_every=100, sample_steps=1,
                  eval_samples=1, backgrounds=2)
    config = tmp_path / "paper.toml"
    config.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + "\n")
    assert train_with(stage1, _args(dataset, tmp_path / "run", config)) == 0
    model = Standardizer.from_pretrained(tmp_path / "run" / "model")
    for name in ("reference_net", "denoiser"):  # one checkpoint initialised both (then one step moved them)
        assert tuple(getattr(model, name).config.block_out_channels) == tuple(unet.config.block_out_channels)
    pipe = StandardizePipeline.from_pretrained(tmp_path / "run" / "model", vae=tmp_path / "sd15",
                                               image_encoder=tmp_path / "vit")
    pipe.progress = False
    assert pipe(_world_reference(dataset), num_inference_steps=1).images[0].size == (128, 192)


def _world_reference(dataset):
    from serialgen.data.memory import WorldArrays
    from serialgen.preprocess import Reference

    test = WorldArrays.load(dataset, "validation", keys=("image", "foreground"), limit=1, progress=False)
    return Reference.from_world(test.images["image"][0], test.images["foreground"][0], test.meta[0]["keypoints"])


def test_second_phase_starts_from_a_trained_standardizer_with_offset_noise(dataset, tmp_path, config):
    assert train_with(stage1, _args(dataset, tmp_path / "first", config)) == 0
    first = Standardizer.from_pretrained(tmp_path / "first" / "model").state_dict()
    extra = f'init_from = "{tmp_path / "first" / "model"}"\noffset_noise = 0.1\nsteps = 1\nlr = 1e-30\n'
    phase2 = tmp_path / "phase2.toml"
    kept = (line for line in config.read_text().splitlines() if not line.startswith(("steps", "lr")))
    phase2.write_text("\n".join(kept) + "\n" + extra)
    assert train_with(stage1, _args(dataset, tmp_path / "second", phase2)) == 0
    second = Standardizer.from_pretrained(tmp_path / "second" / "model").state_dict()
    # one step at a negligible rate: the second phase exports what it started from
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[k].float(), second[k].float(), rtol=0, atol=1e-25) for k in first)


def test_fbdm_vectors_get_their_own_rate_and_no_weight_decay():
    from serialgen.models.standardizer import StandardizerConfig
    from serialgen.train.common import set_lr

    torch.manual_seed(0)
    model = Standardizer.from_unet(TINY_UNET.build(), StandardizerConfig(width=128, height=192, pose_channels=(4, 8, 8, 16)))
    groups = stage1.parameter_groups(model, fbdm_lr_scale=50.0)
    vectors = [p for n, p in model.named_parameters() if n.endswith((".v_f", ".v_b"))]
    assert len(vectors) == 2 * len(model.adapters) > 0
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in vectors}
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.01)
    cfg = stage1.Stage1TrainConfig(lr=1e-4, warmup=10, steps=100, schedule="constant")
    set_lr(optimizer, cfg, 4)  # half-way through warm-up
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-5)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(50 * 5e-5)
    assert optimizer.param_groups[0]["weight_decay"] == 0.01 and optimizer.param_groups[1]["weight_decay"] == 0.0
    # RPIM's per-block convs are a group of their own; without FBDM and RPIM there is one group
    groups = stage1.parameter_groups(model, fbdm_lr_scale=50.0, rpim_lr_scale=7.0)
    convs = [p for n, p in model.named_parameters() if ".pose_proj." in n]
    assert len(groups) == 3 and groups[2]["lr_scale"] == 7.0 and len(convs) == 2 * len(model.adapters)
    assert {id(p) for p in groups[2]["params"]} == {id(p) for p in convs}
    neither = Standardizer.from_unet(TINY_UNET.build(), StandardizerConfig(
        width=128, height=192, pose_channels=(4, 8, 8, 16), fbdm=False, rpim=False))
    assert len(stage1.parameter_groups(neither, 50.0, 7.0)) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stage1_trains_unchanged_on_cuda_with_bf16_autocast(dataset, tmp_path, config):
    args = _args(dataset, tmp_path / "cuda", config)
    args.device, args.mixed_precision = "cuda", "bf16"
    assert train_with(stage1, args) == 0
    state = load_file(str(tmp_path / "cuda" / "checkpoint" / "model.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    info = json.loads((tmp_path / "cuda" / "model" / "training.json").read_text())
    assert info["config"]["mixed_precision"] == "bf16" and 0 < info["heldout"]["ssim"] <= 1
