"""The one attention core every processor here runs: a diffusers `Attention` layer's own
computation (its projections, heads, output layers) with two extensions the paper's modules
need, a boolean key mask (reference attention's guidance halves) and a second, scaled attention
over extra keys and values with the same queries (IP-Adapter's decoupled cross-attention, eq. 5
of Ye et al. 2023). Processors (reference_attention.py, ip_adapter.py) only choose the context.
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F


@contextmanager
def processors_on(unet, layer: str, make: Callable[[str], object]) -> Iterator[None]:
    """Within the block, every attention of `unet` named `layer` ("attn1": the self-attentions,
    "attn2": the cross-attentions) runs the processor `make(name)` returns for it (name: diffusers'
    processor name); every processor the UNet had is back afterwards, whatever happened."""
    before = dict(unet.attn_processors)
    suffix = f"{layer}.processor"
    unet.set_attn_processor({name: make(name) if name.endswith(suffix) else processor
                             for name, processor in before.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(before)


def attend(attn, hidden_states: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
           extra: tuple[torch.Tensor, torch.Tensor] | None = None, extra_scale: float = 1.0,
           value_context: torch.Tensor | None = None, probabilities: list | None = None) -> torch.Tensor:
    """Queries from hidden_states (N, T, C), keys and values from context (N, S, Cc) through the
    layer's to_k / to_v; mask (N, 1, 1, S) bool of allowed keys. extra: already projected
    (keys, values) (N, S2, inner) attended with the same queries, added times extra_scale before
    the output projection. value_context: the values' own context (N, S, Cc) where it differs from
    the keys' (Beyond Inserting's disentangled identity tokens). probabilities: a list to append
    the attention probabilities (N, heads, T, S) to, computed explicitly (for a loss on them)
    rather than by the fused kernel. -> (N, T, C)."""
    if hidden_states.ndim != 3:
        raise ValueError(f"Attention expects (N, tokens, channels) hidden states, got {tuple(hidden_states.shape)}")
    n, t, _ = hidden_states.shape
    if attn.norm_cross is not None and context is not hidden_states:
        context = attn.norm_encoder_hidden_states(context)
        value_context = None if value_context is None else attn.norm_encoder_hidden_states(value_context)
    values = context if value_context is None else value_context
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(values)  # (N, T|S, inner)
    head = k.shape[-1] // attn.heads

    def split(x: torch.Tensor) -> torch.Tensor:  # (N, S, inner) -> (N, heads, S, head)
        return x.view(n, -1, attn.heads, head).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    if probabilities is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, T, head)
    else:
        logits = (q @ k.transpose(-1, -2)) * head ** -0.5
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = logits.softmax(-1)  # (N, heads, T, S)
        probabilities.append(weights)
        out = weights @ v
    if extra is not None:
        out = out + extra_scale * F.scaled_dot_product_attention(q, split(extra[0]), split(extra[1]))
    out = out.transpose(1, 2).reshape(n, t, attn.heads * head).to(q.dtype)  # (N, T, inner)
    out = attn.to_out[1](attn.to_out[0](out))  # (N, T, C)
    if attn.residual_connection:
        out = out + hidden_states
    return out / attn.rescale_output_factor


class PlainProcessor:
    """The stock computation, for layers that take no extra conditioning; it names the keyword
    arguments the other processors of the same UNet take, so diffusers passes them without a
    warning and this layer ignores them."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference=None, ip_tokens=None):
        if attention_mask is not None:
            raise ValueError("These attention processors take no attention_mask")
        return attend(attn, hidden_states, hidden_states if encoder_hidden_states is None else encoder_hidden_states)
