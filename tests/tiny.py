"""Tiny model configs shared by tests: the same classes as the presets, a few thousand weights."""

from serialgen.models.backbones import CLIPConfig, UNetConfig, VAEConfig

TINY_VAE = VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64)
TINY_CLIP = CLIPConfig(vision_hidden=32, vision_layers=2, vision_heads=2, image_size=32, patch_size=8, text_hidden=32,
                       text_layers=2, text_heads=2, max_text_length=64, projection_dim=16)
TINY_UNET = UNetConfig(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, cross_attention_dim=32,
                       attention_head_dim=8, norm_num_groups=8, sample_size=(24, 16))


def tiny_tokenizer(path, texts=()):
    """A CLIP BPE tokenizer trained on a few captions, saved to `path` and loaded back."""
    from transformers import CLIPTokenizer

    from serialgen.models.tokenizer import build_tokenizer, save_tokenizer

    words = list(texts) + ["a character in a white room, front view, full body", "green shirt with stripes, sad",
                           "a girl with red hair waving on a beach", "a boy in a blue jacket running in a forest"]
    save_tokenizer(build_tokenizer(words * 4, vocab_size=560, model_max_length=64), path)
    return CLIPTokenizer.from_pretrained(path)


def tiny_image_encoder(projection_dim: int = 16):
    """A CLIP vision tower with projection (image_encoder/ layout): 4x4 patches + CLS = 17 tokens of 24-d."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(1)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                                                          num_attention_heads=2, image_size=32, patch_size=8,
                                                          projection_dim=projection_dim)).eval()


def _text_config(tokenizer, hidden=32, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra)


def tiny_sd_pipeline(tokenizer):
    """A Stable Diffusion 1.5-layout pipeline (DDIM) with tiny random weights, 128x192 images."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    from serialgen.diffusion import sampling_scheduler

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(vae=TINY_VAE.build(), text_encoder=CLIPTextModel(_text_config(tokenizer)).eval(),
                                   tokenizer=tokenizer, unet=TINY_UNET.build(), scheduler=sampling_scheduler(),
                                   safety_checker=None, feature_extractor=None, image_encoder=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(tokenizer):
    """An SDXL-layout pipeline (two text encoders, pooled embeds, time ids), tiny random weights."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from serialgen.diffusion import sampling_scheduler

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=(24, 16), in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                norm_num_groups=8, cross_attention_dim=48, transformer_layers_per_block=(1, 2),
                                addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=16 + 6 * 8)
    pipe = StableDiffusionXLPipeline(vae=TINY_VAE.build(), text_encoder=CLIPTextModel(_text_config(tokenizer, 16)).eval(),
                                     text_encoder_2=CLIPTextModelWithProjection(
                                         _text_config(tokenizer, 32, projection_dim=16)).eval(),
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=sampling_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_serial_models(root, dataset):
    """Under root: sd15/ (a diffusers SD pipeline folder), image_encoder/ (Stage II's CLIP vision
    tower), stage1/ (a standardizer with its vae/ and image_encoder/) and adapter/ip-adapter.safetensors
    (perturbed away from its no-op start), all tiny and random. -> root"""
    import torch

    from serialgen.data.memory import WorldArrays
    from serialgen.models.ip_adapter import IPAdapter
    from serialgen.models.loading import load_base
    from serialgen.models.standardizer import Standardizer, StandardizerConfig
    from serialgen.train.stage1 import template_keypoints

    tiny_sd_pipeline(tiny_tokenizer(root / "tok")).save_pretrained(root / "sd15")
    tiny_image_encoder().save_pretrained(root / "image_encoder")
    train = WorldArrays.load(dataset, "train", progress=False)
    torch.manual_seed(0)
    model = Standardizer.from_unet(TINY_UNET.build(), StandardizerConfig(
        width=128, height=192, pose_channels=(4, 8, 8, 16),
        template_keypoints=template_keypoints([train.meta[i] for i in train.first_of_each_character()], 128, 192)))
    model.save_pretrained(root / "stage1")
    TINY_VAE.build().save_pretrained(root / "stage1" / "vae")
    tiny_image_encoder(projection_dim=TINY_UNET.cross_attention_dim).save_pretrained(root / "stage1" / "image_encoder")
    torch.manual_seed(5)
    adapter = IPAdapter.for_unet(load_base(root / "sd15").unet, 24)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.2 * torch.randn_like(p))
    adapter.save(root / "adapter" / "ip-adapter.safetensors")
    return root


def train_with(module, args) -> int:
    """What `serialgen train NAME` does with these parsed arguments (data, out, config, resume and
    the optional no_fbdm, no_rpim, pairing), errors raised rather than printed. -> 0"""
    from serialgen.train import trainer
    from serialgen.train.config import load_config

    chosen = trainer(module.__name__.rsplit(".", 1)[1])
    overrides = {"fbdm": False if getattr(args, "no_fbdm", False) else None,
                 "rpim": False if getattr(args, "no_rpim", False) else None, "pairing": getattr(args, "pairing", None)}
    overrides["mixed_precision"] = getattr(args, "mixed_precision", None)
    cfg = load_config(chosen.config, chosen.presets, "mini", args.config, **overrides)
    chosen.train(cfg, args.data, args.out, args.resume, device=getattr(args, "device", "auto"))
    return 0


def saved_adapter(folders):
    """The perturbed tiny adapter file of `folders` (conftest.folders)."""
    return folders / "adapter" / "ip-adapter.safetensors"


def train_killed_after_checkpoint(monkeypatch, module, args, step: int) -> None:
    """Run `train_with(module, args)` as if killed right after its checkpoint at `step`
    (KeyboardInterrupt out of the save); the caller then resumes it."""
    import pytest

    from serialgen.train import loop

    real_save = loop.save_checkpoint

    def save_then_die(out, *, step: int, **kw):
        real_save(out, step=step, **kw)
        if step == kill_at:
            raise KeyboardInterrupt("killed")

    kill_at = step
    with monkeypatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_with(module, args)
