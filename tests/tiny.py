"""Tiny model configs shared by tests: the same classes as the presets, a few thousand weights."""

from serialgen.models.backbones import CLIPConfig, UNetConfig, VAEConfig

TINY_VAE = VAEConfig(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64)
TINY_CLIP = CLIPConfig(vision_hidden=32, vision_layers=2, vision_heads=2, image_size=32, patch_size=8, text_hidden=32,
                       text_layers=2, text_heads=2, max_text_length=64, projection_dim=16)
TINY_UNET = UNetConfig(block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1, cross_attention_dim=32,
                       attention_head_dim=8, norm_num_groups=8, sample_size=(24, 16))
