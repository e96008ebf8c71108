"""Backbone configs: the VAE, the CLIP towers and the text-to-image UNet, as presets.

Defaults are the published paper-scale models (Stable Diffusion 1.5's VAE and UNet, CLIP
ViT-L/14); `mini` shrinks the same classes to train on CPU on the character world.
Nothing downstream branches on the preset's name: a preset is only a config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VAEConfig:
    """diffusers AutoencoderKL: downsampling by 2 ** (len(block_out_channels) - 1)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512
    scaling_factor: float = 0.18215  # SD's; the mini VAE measures its own after training

    def build(self):
        from diffusers import AutoencoderKL

        n = len(self.block_out_channels)
        return AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels, norm_num_groups=self.norm_num_groups,
            sample_size=self.sample_size, scaling_factor=self.scaling_factor,
        )


VAE_PRESETS = {
    "paper": VAEConfig(),
    # factor 8, 4 channels as SD. A narrow full-resolution level keeps its convolutions cheap on
    # CPU; the wider middle levels are where patterns and faces are decoded. Measured training
    # steps of 32 96x64 crops in bf16 on 2 cores: this 6.1M model 1.03 s; (16, 32, 64, 128) 2.7M
    # 0.6-0.76 s but it plateaued at 24 dB held-out PSNR with stripes and faces lost;
    # (32, 64, 128, 128) 1.28 s.
    "mini": VAEConfig(block_out_channels=(16, 48, 96, 192), layers_per_block=1, norm_num_groups=8, sample_size=192),
}


def preset(table: dict, name: str, **overrides):
    """A preset config by name, with field overrides."""
    if name not in table:
        raise ValueError(f"Unknown preset {name!r}; presets are {', '.join(table)}")
    return dataclasses.replace(table[name], **overrides)


@dataclass(frozen=True)
class CLIPConfig:
    """transformers CLIPModel (text and vision towers). Defaults: CLIP ViT-L/14."""

    vision_hidden: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    text_hidden: int = 768
    text_layers: int = 12
    text_heads: int = 12
    max_text_length: int = 77
    projection_dim: int = 768
    vocab_size: int = 49408

    def build(self, tokenizer=None):
        from transformers import CLIPConfig as HFConfig
        from transformers import CLIPModel

        special = {}
        if tokenizer is not None:
            special = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
        config = HFConfig(
            text_config=dict(vocab_size=len(tokenizer) if tokenizer is not None else self.vocab_size,
                             hidden_size=self.text_hidden, intermediate_size=4 * self.text_hidden,
                             num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
                             max_position_embeddings=self.max_text_length, **special),
            vision_config=dict(hidden_size=self.vision_hidden, intermediate_size=4 * self.vision_hidden,
                               num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                               image_size=self.image_size, patch_size=self.patch_size),
            projection_dim=self.projection_dim,
        )
        return CLIPModel(config)


CLIP_PRESETS = {
    "paper": CLIPConfig(),
    # 8x8 patches + CLS = 65 image tokens (OpenCLIP ViT-H/14 has 257); captions fit in 64 tokens
    "mini": CLIPConfig(vision_hidden=256, vision_layers=6, vision_heads=4, image_size=128, patch_size=16,
                       text_hidden=256, text_layers=4, text_heads=4, max_text_length=64, projection_dim=256),
}


@dataclass(frozen=True)
class UNetConfig:
    """diffusers UNet2DConditionModel. Defaults: Stable Diffusion 1.5's UNet."""

    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: int = 2
    cross_attention_dim: int = 768
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    in_channels: int = 4
    sample_size: tuple[int, int] | int = 64

    def build(self):
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel(
            sample_size=self.sample_size, in_channels=self.in_channels, out_channels=4,
            down_block_types=self.down_block_types, up_block_types=self.up_block_types,
            block_out_channels=self.block_out_channels, layers_per_block=self.layers_per_block,
            cross_attention_dim=self.cross_attention_dim, attention_head_dim=self.attention_head_dim,
            norm_num_groups=self.norm_num_groups,
        )


# 4 x 24 x 16 latents; attention only at 12x8 and 6x4, never at the full latent size. Measured
# training throughput on 2 cores: (32, 64, 128) 56 samples/s, (64, 128, 192) 24 samples/s;
# Stage I runs two of these UNets per sample, so the narrower one is the mini default.
_MINI_UNET = UNetConfig(block_out_channels=(32, 64, 128), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                        "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                        layers_per_block=1, cross_attention_dim=256, attention_head_dim=32, norm_num_groups=16,
                        sample_size=(24, 16))

UNET_PRESETS = {
    "paper": UNetConfig(),
    "mini": _MINI_UNET,
    # Twice the channels at the full latent size, where a figure's limbs (one or two latent pixels
    # wide) are drawn; the base model only, 2.3x slower to train than "mini".
    "mini-wide": dataclasses.replace(_MINI_UNET, block_out_channels=(64, 128, 192), norm_num_groups=32),
}


def attention_at_every_level(unet):
    """The same UNet with a (self + cross) attention transformer at every resolution level.

    The mini presets have no attention at the full latent size (24x16 for 128x192 images), where a
    figure's limbs and garment borders are one or two latent pixels wide: a Standardizer's
    reference attention then never sees that level. This builds the config with every down and up
    block a CrossAttn one, copies every existing weight, and zeroes each new transformer's output
    projection, so the returned UNet computes exactly what `unet` does until it is trained.
    A UNet that already has attention everywhere is returned as is."""
    from diffusers import UNet2DConditionModel

    config = dict(unet.config)
    down = tuple(b if b.startswith("CrossAttn") else "CrossAttn" + b for b in config["down_block_types"])
    up = tuple(b if b.startswith("CrossAttn") else "CrossAttn" + b for b in config["up_block_types"])
    if down == tuple(config["down_block_types"]) and up == tuple(config["up_block_types"]):
        return unet
    config.update(down_block_types=down, up_block_types=up)
    out = UNet2DConditionModel.from_config(config).to(unet.dtype)
    missing, unexpected = out.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(".attentions." not in k for k in missing):
        raise ValueError(f"Adding attention levels changed more than attention weights: {(missing + unexpected)[:3]}")
    new_blocks = {k.split(".attentions.")[0] + ".attentions." + k.split(".attentions.")[1].split(".")[0] for k in missing}
    for name in new_blocks:
        proj = out.get_submodule(name).proj_out
        torch.nn.init.zeros_(proj.weight)
        torch.nn.init.zeros_(proj.bias)
    return out
