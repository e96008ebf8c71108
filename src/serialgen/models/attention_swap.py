"""Multi-source attention swapping (Layout-and-Retouch, Kim et al. 2024, retouch stage): in every
self-attention layer, chosen rows of a batch (the images being retouched) take their keys and
values from other rows of the same batch (the sources: the image's own layout, the character's
reference) instead of from themselves, while their queries stay their own. The queries keep the
target's structure where it sits; the keys and values bring the sources' appearance. The source
rows attend to themselves, so they follow their own (reconstruction) trajectories alongside.

Training-free: only the self-attention (attn1) processors change; cross-attention and an
IP-Adapter's decoupled image attention are left as they are, so this composes with the
standardized-reference adapter. With no targets set every layer computes the stock attention.
"""

from __future__ import annotations

import torch

from .attention import attend


class AttentionSwapState:
    """What the processors of one UNet share: `targets` (T,) the batch rows whose keys and values
    come from `sources` (T, S), the rows (S of them per target) whose tokens they read, in order.
    None: every row attends to itself."""

    def __init__(self):
        self.targets: torch.Tensor | None = None
        self.sources: torch.Tensor | None = None

    def set(self, targets, sources) -> None:
        targets, sources = torch.as_tensor(targets, dtype=torch.long), torch.as_tensor(sources, dtype=torch.long)
        if targets.ndim != 1 or sources.ndim != 2 or len(sources) != len(targets) or sources.shape[1] < 1:
            raise ValueError(f"targets must be (T,) rows and sources (T, S >= 1) rows, got {tuple(targets.shape)} and "
                             f"{tuple(sources.shape)}")
        if set(targets.tolist()) & set(sources.flatten().tolist()):
            raise ValueError("A row cannot be both a target and a source of the swap")
        self.targets, self.sources = targets, sources

    def clear(self) -> None:
        self.targets = self.sources = None


class SwapSelfAttnProcessor:
    """The self-attention (attn1) processor of one layer, sharing `state` with the others."""

    def __init__(self, state: AttentionSwapState):
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference=None, ip_tokens=None):
        if attention_mask is not None:
            raise ValueError("These attention processors take no attention_mask")
        state = self.state
        if encoder_hidden_states is not None or state.targets is None:
            return attend(attn, hidden_states, hidden_states if encoder_hidden_states is None else encoder_hidden_states)
        n, _, c = hidden_states.shape
        targets, sources = state.targets.to(hidden_states.device), state.sources.to(hidden_states.device)
        if int(targets.max()) >= n or int(sources.max()) >= n:
            raise ValueError(f"The swap names rows up to {max(int(targets.max()), int(sources.max()))}; the batch has {n}")
        keep = torch.ones(n, dtype=torch.bool, device=hidden_states.device)
        keep[targets] = False
        out = torch.empty_like(hidden_states)
        own = hidden_states[keep]
        out[keep] = attend(attn, own, own)
        context = hidden_states[sources.reshape(-1)].reshape(len(targets), -1, c)  # (T, S * tokens, C)
        out[targets] = attend(attn, hidden_states[targets], context)
        return out
