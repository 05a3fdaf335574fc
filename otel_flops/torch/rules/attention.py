"""Attention: the SDPA kernels (FlopCounterMode's formulas), SDPA seen whole, and the fused fast paths.

The fused ops (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``) count what
the same module counts on its unfused eval path in torch 2.13, op for op: there the in-projection
of a (batch, seq) pair both above 1 runs on a transposed, non-contiguous view, so torch does a
matmul plus a bias add; otherwise one addmm (bias inside, uncounted as in FlopCounterMode).
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch

from .norms import NORM_AFFINE, NORM_APPLY, NORM_STATS, SOFTMAX
from .products import mm
from .registry import aten, flop_rule, packets


def sdpa_flop_count(q: Any, k: Any, v: Any) -> int:
    """Q K^T and P V for (batch, heads, seq, dim) operands; grouped KV heads broadcast."""
    b, h, s_q, d = q
    s_k, d_v = k[2], v[3]
    return b * h * (mm(s_q, d, s_k) + mm(s_q, s_k, d_v))


def sdpa_backward_flop_count(grad_out: Any, q: Any, k: Any, v: Any) -> int:
    """Recomputed scores, then the gradients through P V and through Q K^T."""
    b, h, s_q, d = q
    s_k, d_v = k[2], v[3]
    return b * h * (
        mm(s_q, d, s_k) + mm(s_q, d_v, s_k) + mm(s_k, s_q, d_v) + mm(s_q, s_k, d) + mm(d, s_q, s_k)
    )


@flop_rule(
    "attention",
    *packets("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
             "_scaled_dot_product_fused_attention_overrideable"),
)
def sdpa_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)


@flop_rule(
    "attention",
    *packets("_scaled_dot_product_efficient_attention_backward", "_scaled_dot_product_flash_attention_backward",
             "_scaled_dot_product_cudnn_attention_backward",
             "_scaled_dot_product_flash_attention_for_cpu_backward",
             "_scaled_dot_product_fused_attention_overrideable_backward"),
)
def sdpa_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape, args[3].shape)


def _four_d(shape: Any) -> tuple[int, int, int, int]:
    """(..., seq, dim) as (batch, 1, seq, dim): SDPA accepts any number of leading dimensions."""
    return (prod(shape[:-3]), shape[-3], shape[-2], shape[-1]) if len(shape) >= 3 else (1, 1, *shape)


@flop_rule("attention", aten.scaled_dot_product_attention)
def sdpa_composite_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """SDPA seen whole under inference_mode: the fused kernels' formula (what GPUs and CPU flash run)."""
    return sdpa_flop_count(_four_d(args[0].shape), _four_d(args[1].shape), _four_d(args[2].shape))


def _sequence_lengths(offsets: torch.Tensor) -> list[int]:
    bounds = offsets.tolist()
    return [end - start for start, end in zip(bounds, bounds[1:])]


def _varlen_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: Any, cu_k: Any, head_axis: int):
    """Per-sequence (1, h, s, d) shapes for jagged inputs; the dense shapes otherwise.

    Dense inputs are passed through as they come, the interpretation FlopCounterMode uses for
    these low-level kernels (it reads their (b, s, h, d) layout as (b, h, s, d)).
    """
    if cu_q is None:
        return [(q.shape, k.shape, v.shape)]
    h_q, d_q = q.shape[head_axis], q.shape[-1]
    h_k, d_k = k.shape[head_axis], k.shape[-1]
    h_v, d_v = v.shape[head_axis], v.shape[-1]
    return [
        ((1, h_q, s_q, d_q), (1, h_k, s_k, d_k), (1, h_v, s_k, d_v))
        for s_q, s_k in zip(_sequence_lengths(cu_q), _sequence_lengths(cu_k))
    ]


@flop_rule("attention", *packets("_flash_attention_forward"))
def flash_forward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return sum(sdpa_flop_count(*s) for s in _varlen_shapes(*args[:5], head_axis=1))


@flop_rule("attention", *packets("_efficient_attention_forward"))
def efficient_forward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    q, k, v, _bias, cu_q, cu_k = args[:6]
    return sum(sdpa_flop_count(*s) for s in _varlen_shapes(q, k, v, cu_q, cu_k, head_axis=2))


@flop_rule("attention", *packets("_flash_attention_backward"))
def flash_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    grad_out, q, k, v, attn_out, _lse, cu_q, cu_k = args[:8]
    grad_shape = (grad_out if grad_out is not None else attn_out).shape
    shapes = _varlen_shapes(q, k, v, cu_q, cu_k, head_axis=1)
    if cu_q is None:
        return sdpa_backward_flop_count(grad_shape, *shapes[0])
    return sum(sdpa_backward_flop_count(s[0], *s) for s in shapes)


@flop_rule("attention", *packets("_efficient_attention_backward"))
def efficient_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    grad_out, q, k, v, _bias, _out, cu_q, cu_k = args[:8]
    shapes = _varlen_shapes(q, k, v, cu_q, cu_k, head_axis=2)
    if cu_q is None:
        return sdpa_backward_flop_count(grad_out.shape, *shapes[0])
    return sum(sdpa_backward_flop_count(s[0], *s) for s in shapes)


# ---------------------------------------------------------------- fused fast paths
def _in_projection(x: torch.Tensor, width: int, blocks: int) -> int:
    """One (batch, seq, width) input projected to ``blocks`` x width, as the unfused path counts it."""
    batch, seq = x.shape[0], x.shape[1]
    rows = batch * seq
    bias_add = rows * blocks * width if batch > 1 and seq > 1 else 0
    return mm(rows, width, blocks * width) + bias_add


def _projection_groups(q: Any, k: Any, v: Any) -> list[tuple[Any, int]]:
    """The unfused path's packed projections: self-attention in one, shared key/value in two."""
    if q is k and k is v:
        return [(q, 3)]
    if k is v:
        return [(q, 1), (k, 2)]
    return [(q, 1), (k, 1), (v, 1)]


@flop_rule("attention", aten._native_multi_head_attention)
def native_mha_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """nn.MultiheadAttention's fast path, as its unfused eval path counts (torch 2.13 F.multi_head_attention_forward).

    In-projections and out-projection; then without weights one SDPA, with weights the scaled
    query (1 per element), Q K^T, softmax (5 per score), P V and, when averaged, the mean over heads.
    """
    q, k, v, width, heads = args[0], args[1], args[2], args[3], args[4]
    need_weights = args[10] if len(args) > 10 else kwargs.get("need_weights", True)
    average = args[11] if len(args) > 11 else kwargs.get("average_attn_weights", True)
    batch, s_q, s_k = q.shape[0], q.shape[1], k.shape[1]
    head_dim = width // heads
    flops = sum(_in_projection(x, width, blocks) for x, blocks in _projection_groups(q, k, v))
    flops += mm(batch * s_q, width, width)
    scores = batch * heads * s_q * s_k
    products = sdpa_flop_count((batch, heads, s_q, head_dim), (batch, heads, s_k, head_dim),
                               (batch, heads, s_k, head_dim))
    if need_weights:
        flops += batch * s_q * width + SOFTMAX * scores + (scores if average else 0)
    return flops + products


def _token_lengths(src: torch.Tensor) -> list[int]:
    """Real tokens per sequence: a nested tensor's own lengths, or every position of a dense batch."""
    if src.is_nested:
        return [int(n) for n in src._nested_tensor_size()[:, 0].tolist()]
    if src.dim() == 2:
        return [src.shape[0]]
    return [src.shape[1]] * src.shape[0]


@flop_rule("attention", aten._transformer_encoder_layer_fwd)
def transformer_layer_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """nn.TransformerEncoderLayer's fast path, as its unfused eval path counts, on the real tokens.

    Packed in-projection (+ its bias add, see the module docstring), SDPA per sequence,
    out-projection, feed-forward with its activation (1 per element), two layer norms with
    affine (7 per element), two residual adds. A nested input counts each sequence's own length.
    """
    src, width, heads = args[0], args[1], args[2]
    ffn = args[14].shape[0]
    lengths = _token_lengths(src)
    tokens = sum(lengths)
    head_dim = width // heads
    qkv_bias = tokens * 3 * width if src.is_nested or (len(lengths) > 1 and lengths[0] > 1) else 0
    projections = mm(tokens, width, 3 * width) + qkv_bias + mm(tokens, width, width)
    attention = sum(sdpa_flop_count(*[(1, heads, n, head_dim)] * 3) for n in lengths)
    feed_forward = mm(tokens, width, ffn) + mm(tokens, ffn, width) + tokens * ffn
    norms = 2 * tokens * width * (NORM_STATS + NORM_APPLY + NORM_AFFINE)
    residuals = 2 * tokens * width
    return projections + attention + feed_forward + norms + residuals
