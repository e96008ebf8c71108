"""Reference attention (Animate Anyone, Hu et al. 2023, §3.2; SerialGen §3.3), as attention
processors on stock diffusers UNets, with FBDM (fbdm.py, eq. 3) and RPIM (rpim.py, eq. 4) on
the ReferenceNet's side.

The ReferenceNet runs once on the clean reference latent (t = 0); each of its self-attentions
(`ReferenceWriteProcessor`) adapts its normed input with FBDM and RPIM (`LayerAdapter`) and
*writes* it to a `ReferenceBank`. The matching self-attention of the denoising UNet
(`ReferenceReadProcessor`) *reads* it: keys and values over its own tokens concatenated with the
bank's (2hw tokens), queries over its own tokens only. Every other layer is a `PlainProcessor`.
Conditioning reaches the processors through `cross_attention_kwargs={"reference": bank}`, so
the UNets stay stock. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from . import fbdm, rpim
from .attention import PlainProcessor, attend


@dataclass
class ReferenceBank:
    """What the ReferenceNet hands the denoising UNet, plus the inputs its adapters need.

    features: self-attention name -> (Nr, T, C) features written by the ReferenceNet.
    keep: (N,) bool over the denoising batch, False where a row must not see the reference
        (classifier-free guidance's unconditional half, condition dropout); None = all see it.
    background_mask: (Nr, 1, H, W) in [0, 1], 1 on background (FBDM); None = no FBDM term.
    pose_features: (Nr, C0, h, w) RPIM encoder output at latent size; None = no RPIM term.
    latent_size: (h, w) of the reference latent, to find each block's spatial size.
    """

    latent_size: tuple[int, int]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    keep: torch.Tensor | None = None
    background_mask: torch.Tensor | None = None
    pose_features: torch.Tensor | None = None

    def for_batch(self, name: str, n: int) -> torch.Tensor:
        """The bank entry repeated to a batch of n rows (row i uses reference i % Nr)."""
        if name not in self.features:
            raise KeyError(f"The reference bank has no features for {name}: run the ReferenceNet (encode_reference) "
                           "with the same architecture as the denoising UNet first")
        f = self.features[name]  # (Nr, T, C)
        if n % len(f):
            raise ValueError(f"A denoising batch of {n} cannot share {len(f)} references: use a multiple of {len(f)}")
        return f if n == len(f) else f.repeat(n // len(f), 1, 1)  # (N, T, C)


def block_size(latent_size: tuple[int, int], tokens: int) -> tuple[int, int]:
    """Spatial size of a UNet block with `tokens` positions: the latent halved (rounding up,
    as diffusers' stride-2 downsampling does) until it matches."""
    h, w = latent_size
    for level in range(8):
        bh, bw = math.ceil(h / 2 ** level), math.ceil(w / 2 ** level)
        if bh * bw == tokens:
            return bh, bw
    raise ValueError(f"{tokens} tokens match no downsampling of a {h}x{w} latent")


class LayerAdapter(nn.Module):
    """FBDM's v_f, v_b (eq. 3, fbdm.py) and RPIM's conv (eq. 4, rpim.py) for one ReferenceNet
    self-attention; either may be off."""

    def __init__(self, width: int, pose_channels: int, use_fbdm: bool = True, use_rpim: bool = True):
        super().__init__()
        self.v_f, self.v_b = fbdm.vectors(width) if use_fbdm else (None, None)
        self.pose_proj = rpim.projection(pose_channels, width) if use_rpim else None

    def forward(self, f: torch.Tensor, bank: ReferenceBank) -> torch.Tensor:
        """f: (N, T, C) normed hidden states -> f~ (N, T, C)."""
        size = block_size(bank.latent_size, f.shape[1])
        if self.v_f is not None and bank.background_mask is not None:
            f = fbdm.distinguish(f, self.v_f, self.v_b, bank.background_mask, size)
        if self.pose_proj is not None and bank.pose_features is not None:
            f = rpim.inject(f, self.pose_proj, bank.pose_features, size)
        return f


class _ReferenceProcessor:
    """What both reference processors share: no attention mask, and without a bank (a UNet called
    outside the standardizer) the stock self-attention. Subclasses say what a bank changes."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference: ReferenceBank | None = None):
        if attention_mask is not None:
            raise ValueError("Reference attention takes no attention_mask")
        if reference is None:
            return attend(attn, hidden_states, hidden_states)
        return self.with_bank(attn, hidden_states, reference)


class ReferenceWriteProcessor(_ReferenceProcessor):
    """A ReferenceNet self-attention: adapt f with FBDM/RPIM, store it in the bank, attend over it."""

    def __init__(self, name: str, adapter: LayerAdapter | None = None):
        super().__init__(name)
        self.adapter = adapter

    def with_bank(self, attn, hidden_states: torch.Tensor, reference: ReferenceBank) -> torch.Tensor:
        f = self.adapter(hidden_states, reference) if self.adapter is not None else hidden_states
        reference.features[self.name] = f  # (Nr, T, C)
        return attend(attn, f, f)


class ReferenceReadProcessor(_ReferenceProcessor):
    """A denoising-UNet self-attention: attend over its own tokens and the bank's."""

    def with_bank(self, attn, hidden_states: torch.Tensor, reference: ReferenceBank) -> torch.Tensor:
        n, t, _ = hidden_states.shape
        bank = reference.for_batch(self.name, n).to(hidden_states.dtype)  # (N, T', C)
        context = torch.cat([hidden_states, bank], dim=1)  # (N, T + T', C)
        mask = None
        if reference.keep is not None and not bool(reference.keep.all()):
            keep = reference.keep.to(hidden_states.device).view(n, 1, 1, 1)
            mask = torch.cat([torch.ones(n, 1, 1, t, dtype=torch.bool, device=keep.device),
                              keep.expand(n, 1, 1, bank.shape[1])], dim=-1)  # (N, 1, 1, T + T')
        return attend(attn, hidden_states, context, mask)


def self_attention_layers(unet) -> dict[str, nn.Module]:
    """name -> diffusers Attention module, for every self-attention (attn1) of a UNet, in module order."""
    from diffusers.models.attention_processor import Attention

    return {name: m for name, m in unet.named_modules() if isinstance(m, Attention) and name.endswith("attn1")}


def _attach(unet, self_attention) -> None:
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            module.set_processor(self_attention(name) if name.endswith("attn1") else PlainProcessor())


def attach_writer(unet, adapters: dict[str, LayerAdapter] | None = None) -> None:
    """Make a stock UNet the ReferenceNet (weights untouched): its self-attentions write the bank,
    through `adapters` (self-attention name -> LayerAdapter) where given."""
    _attach(unet, lambda name: ReferenceWriteProcessor(name, (adapters or {}).get(name)))


def attach_reader(unet) -> None:
    """Make a stock UNet the denoising UNet (weights untouched): its self-attentions read the bank."""
    _attach(unet, ReferenceReadProcessor)


@contextmanager
def added_after_conv_in(unet, features: torch.Tensor | None):
    """Within the block, the UNet's conv_in output gets `features` (N, C0, h, w) added: how the
    PoseGuider enters the denoising UNet in Animate Anyone, without editing the UNet."""
    if features is None:
        yield
        return
    handle = unet.conv_in.register_forward_hook(lambda module, args, out: out + features.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()
