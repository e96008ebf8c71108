"""Consistent self-attention (StoryDiffusion, Zhou et al. 2024, §3.1): training-free consistency of
one character across the images of a series. In every self-attention layer each image's queries
also attend to tokens sampled from the other images of the series, so the images share what the
layer carries (clothes, colours, hair) while keeping their own layout from their own tokens.

The series' first images (the "identity" images) are denoised together: each attends to a
sample of the others' tokens, and that sample is kept per layer and step (`mode = "write"`). The
later images, in batches of any size, attend to the kept tokens (`mode = "read"`), as
StoryDiffusion's long-story generation does. The guidance halves of a batch are kept apart: an
image's unconditional half samples only unconditional tokens. Cross-attention layers (and an
IP-Adapter's decoupled tokens there) are left as they are, so this composes with the
standardized-reference adapter.
"""

from __future__ import annotations

import torch

from .attention import attend


class ConsistentAttentionState:
    """What the processors of one UNet share: the mode ("off", "write", "read"), the sampling
    rate, the generator of the token samples, and the kept tokens per (layer, call, half)."""

    MODES = ("off", "write", "read")

    def __init__(self, sample_rate: float = 0.5, halves: int = 2):
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.sample_rate, self.halves = sample_rate, halves
        self.mode = "off"
        self.memory: dict[tuple[str, int, int], torch.Tensor] = {}
        self.calls: dict[str, int] = {}
        self.written: dict[str, int] = {}  # calls per layer of the last "write" batch: one denoising loop
        self.generator = torch.Generator().manual_seed(0)

    def start(self, mode: str, seed: int | None = None) -> None:
        """Begin a batch in `mode`; "write" forgets the kept tokens and reseeds the samples."""
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        if mode == "read" and not self.memory:
            raise ValueError("Nothing kept to read: denoise the identity images in mode 'write' first")
        if self.mode == "write":
            self.written = dict(self.calls)
        self.mode, self.calls = mode, {}
        if mode == "write":
            self.memory = {}
            self.generator.manual_seed(0 if seed is None else seed)


class ConsistentSelfAttnProcessor:
    """The self-attention (attn1) processor of one layer (`name`), sharing `state` with the others."""

    def __init__(self, name: str, state: ConsistentAttentionState):
        self.name, self.state = name, state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference=None, ip_tokens=None):
        if attention_mask is not None:
            raise ValueError("These attention processors take no attention_mask")
        state = self.state
        if encoder_hidden_states is not None or state.mode == "off":
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            return attend(attn, hidden_states, context)
        call = state.calls.get(self.name, 0)
        state.calls[self.name] = call + 1
        if state.mode == "read":  # every later batch runs the same loop: step k reads what step k kept
            call %= state.written[self.name]
        halves = hidden_states.chunk(state.halves) if len(hidden_states) % state.halves == 0 else (hidden_states,)
        out = []
        for h, half in enumerate(halves):
            b, t, c = half.shape
            if state.mode == "read":
                kept = state.memory[(self.name, call, h)].to(half)
                context = torch.cat([half, kept[None].expand(b, -1, -1)], 1)
            else:
                context = half
                if b > 1:  # each image: its own tokens, then a sample of the other images' (the same positions for all)
                    count = max(1, round(state.sample_rate * (b - 1) * t))
                    picks = torch.randperm((b - 1) * t, generator=state.generator)[:count].to(half.device)
                    others = torch.stack([torch.cat([half[:i], half[i + 1:]]).reshape(-1, c)[picks] for i in range(b)])
                    context = torch.cat([half, others], 1)
                # kept for the later images: a sample of all the identity images' tokens
                pool = torch.randperm(b * t, generator=state.generator)[:max(1, round(state.sample_rate * b * t))]
                state.memory[(self.name, call, h)] = half.reshape(-1, c)[pool.to(half.device)].detach()
            out.append(attend(attn, half, context))
        return torch.cat(out)
