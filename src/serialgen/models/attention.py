"""The one attention core every processor here runs: a diffusers `Attention` layer's own
computation (its projections, heads, output layers) with two extensions the paper's modules
need, a boolean key mask (reference attention's guidance halves) and a second, scaled attention
over extra keys and values with the same queries (IP-Adapter's decoupled cross-attention, eq. 5
of Ye et al. 2023). Processors (reference_attention.py, ip_adapter.py) only choose the context.
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attend(attn, hidden_states: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
           extra: tuple[torch.Tensor, torch.Tensor] | None = None, extra_scale: float = 1.0) -> torch.Tensor:
    """Queries from hidden_states (N, T, C), keys and values from context (N, S, Cc) through the
    layer's to_k / to_v; mask (N, 1, 1, S) bool of allowed keys. extra: already projected
    (keys, values) (N, S2, inner) attended with the same queries, added times extra_scale before
    the output projection. -> (N, T, C)."""
    if hidden_states.ndim != 3:
        raise ValueError(f"Attention expects (N, tokens, channels) hidden states, got {tuple(hidden_states.shape)}")
    n, t, _ = hidden_states.shape
    if attn.norm_cross is not None and context is not hidden_states:
        context = attn.norm_encoder_hidden_states(context)
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)  # (N, T|S, inner)
    head = k.shape[-1] // attn.heads

    def split(x: torch.Tensor) -> torch.Tensor:  # (N, S, inner) -> (N, heads, S, head)
        return x.view(n, -1, attn.heads, head).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    if attn.norm_q is not None:
        q, k = attn.norm_q(q), attn.norm_k(k)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, heads, T, head)
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
