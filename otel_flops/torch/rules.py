"""FLOP rules for ATen ops: one small registered function per op family.

A rule takes the op's raw ``(args, kwargs, out)`` and returns an integer FLOP count. Raw
tensors, not pytree-mapped shapes, keep the per-op cost low. Every op that torch's
FlopCounterMode counts uses the same formula here, so totals agree with it exactly; everything
else follows the conventions in DESIGN.md (a multiply-add is 2 FLOPs; elementwise ops count
max(N_in, N_out); reductions count N_in; views, copies, allocation and indexing count 0).

``resolve(func)`` finds the rule for an op overload: the explicit registry first, then views
(0 FLOPs), then ATen's ``pointwise`` and ``reduction`` tags. An op with none is uncounted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

import torch

aten = torch.ops.aten

RuleFn = Callable[[tuple, dict, Any], int]


@dataclass(frozen=True)
class Rule:
    family: str
    count: RuleFn
    comm_bytes: Callable[[tuple], int] | None = None  # collectives: bytes moved, not FLOPs


REGISTRY: dict[Any, Rule] = {}


def flop_rule(family: str, *packets: Any) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the rule of ``packets`` (ATen overload packets)."""

    def register(fn: RuleFn) -> RuleFn:
        for packet in packets:
            REGISTRY[packet] = Rule(family, fn)
        return fn

    return register


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _tensors(args: tuple) -> list[torch.Tensor]:
    """Top-level tensor arguments, including those inside list arguments."""
    found: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, torch.Tensor))
    return found


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


# ---------------------------------------------------------------- matrix products
def _mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


@flop_rule("matmul", aten.mm, aten._int_mm)
def mm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    (m, k), n = args[0].shape, args[1].shape[1]
    return _mm(m, k, n)


@flop_rule("matmul", aten.addmm)
def addmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return mm_flops(args[1:], kwargs, out)


@flop_rule("matmul", aten._scaled_mm)
def scaled_mm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return mm_flops(args, kwargs, out)


@flop_rule("matmul", aten.bmm)
def bmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    (b, m, k), n = args[0].shape, args[1].shape[2]
    return b * _mm(m, k, n)


@flop_rule("matmul", aten.baddbmm)
def baddbmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return bmm_flops(args[1:], kwargs, out)


@flop_rule("matmul", aten.addbmm)
def addbmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return bmm_flops(args[1:], kwargs, out)


@flop_rule("matmul", aten.mv)
def mv_flops(args: tuple, kwargs: dict, out: Any) -> int:
    m, k = args[0].shape
    return _mm(m, k, 1)


@flop_rule("matmul", aten.addmv)
def addmv_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return mv_flops(args[1:], kwargs, out)


@flop_rule("matmul", aten.dot, aten.vdot)
def dot_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * _numel(args[0])


@flop_rule("matmul", aten.addr)
def addr_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * _numel(out)


@flop_rule(
    "matmul",
    aten._weight_int8pack_mm,
    aten._weight_int4pack_mm,
    aten._weight_int4pack_mm_for_cpu,
    aten._weight_int4pack_mm_with_scales_and_zeros,
)
def packed_weight_mm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Activations (m, k) times a packed (n, k) weight: k from the activations, n from the output."""
    x = args[0]
    k = x.shape[-1]
    return _mm(x.numel() // k, k, out.shape[-1])


# ---------------------------------------------------------------- convolution
def conv_flop_count(x_shape: Any, w_shape: Any, out_shape: Any, transposed: bool) -> int:
    """2 x batch x spatial points x filter size x c_out x (c_in / groups), FlopCounterMode's formula.

    The weight's second dimension already holds c_in / groups, so grouped and depthwise
    convolutions come out right; a transposed convolution iterates over the input's points.
    """
    batch = x_shape[0]
    spatial = (x_shape if transposed else out_shape)[2:]
    c_out, c_in, *kernel = w_shape
    return 2 * prod(spatial) * prod(kernel) * batch * c_out * c_in


@flop_rule("conv", aten.convolution, aten._convolution, aten.convolution_overrideable)
def convolution_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return conv_flop_count(args[0].shape, args[1].shape, out.shape, bool(args[6]))


@flop_rule("conv", aten.cudnn_convolution, aten._slow_conv2d_forward, aten.mkldnn_convolution)
def plain_convolution_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return conv_flop_count(args[0].shape, args[1].shape, out.shape, False)


def _swap01(shape: Any) -> list[int]:
    return [shape[1], shape[0], *shape[2:]]


@flop_rule("conv", aten.convolution_backward)
def convolution_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """grad_input is a transposed conv of grad_out; grad_weight a conv of input with grad_out."""
    grad_out, x, w = args[0].shape, args[1].shape, args[2].shape
    transposed, output_mask = bool(args[7]), args[10]
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out, w, out[0].shape, not transposed)
    if output_mask[1]:
        source = _swap01(grad_out) if transposed else _swap01(x)
        kernel = _swap01(x) if transposed else _swap01(grad_out)
        flops += conv_flop_count(source, kernel, _swap01(out[1].shape), False)
    return flops


# ---------------------------------------------------------------- attention
def sdpa_flop_count(q: Any, k: Any, v: Any) -> int:
    """Q K^T and P V for (batch, heads, seq, dim) operands; grouped KV heads broadcast."""
    b, h, s_q, d = q
    s_k, d_v = k[2], v[3]
    return b * h * (_mm(s_q, d, s_k) + _mm(s_q, s_k, d_v))


def sdpa_backward_flop_count(grad_out: Any, q: Any, k: Any, v: Any) -> int:
    """Recomputed scores, then the gradients through P V and through Q K^T."""
    b, h, s_q, d = q
    s_k, d_v = k[2], v[3]
    return b * h * (
        _mm(s_q, d, s_k) + _mm(s_q, d_v, s_k) + _mm(s_k, s_q, d_v) + _mm(s_q, s_k, d) + _mm(d, s_q, s_k)
    )


@flop_rule(
    "attention",
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_cudnn_attention,
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_fused_attention_overrideable,
)
def sdpa_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)


@flop_rule(
    "attention",
    aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention_backward,
    aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_fused_attention_overrideable_backward,
)
def sdpa_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return sdpa_backward_flop_count(args[0].shape, args[1].shape, args[2].shape, args[3].shape)


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


@flop_rule("attention", aten._flash_attention_forward)
def flash_forward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return sum(sdpa_flop_count(*s) for s in _varlen_shapes(*args[:5], head_axis=1))


@flop_rule("attention", aten._efficient_attention_forward)
def efficient_forward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    q, k, v, _bias, cu_q, cu_k = args[:6]
    return sum(sdpa_flop_count(*s) for s in _varlen_shapes(q, k, v, cu_q, cu_k, head_axis=2))


@flop_rule("attention", aten._flash_attention_backward)
def flash_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    grad_out, q, k, v, attn_out, _lse, cu_q, cu_k = args[:8]
    grad_shape = (grad_out if grad_out is not None else attn_out).shape
    shapes = _varlen_shapes(q, k, v, cu_q, cu_k, head_axis=1)
    if cu_q is None:
        return sdpa_backward_flop_count(grad_shape, *shapes[0])
    return sum(sdpa_backward_flop_count(s[0], *s) for s in shapes)


@flop_rule("attention", aten._efficient_attention_backward)
def efficient_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    grad_out, q, k, v, _bias, _out, cu_q, cu_k = args[:8]
    shapes = _varlen_shapes(q, k, v, cu_q, cu_k, head_axis=2)
    if cu_q is None:
        return sdpa_backward_flop_count(grad_out.shape, *shapes[0])
    return sum(sdpa_backward_flop_count(s[0], *s) for s in shapes)


# ---------------------------------------------------------------- per-element formulas
# FLOPs per element, documented in the README's counting conventions.
NORM_STATS = 3  # mean, centred square, its sum
NORM_APPLY = 2  # subtract mean, scale by rstd
NORM_AFFINE = 2  # weight multiply, bias add
NORM_BACKWARD = 9  # xhat, g*xhat, two sums, the combination for grad_input
SOFTMAX = 5  # max, subtract, exp, sum, divide (log_softmax: log and subtract)
SOFTMAX_BACKWARD = 4  # multiply, sum, subtract, multiply


def _elementwise_count(args: tuple, out: Any) -> int:
    """max(N_in, N_out), the seed paper's elementwise convention (sec. 3.1)."""
    largest_in = max((t.numel() for t in _tensors(args)), default=0)
    return max(largest_in, _numel(_first(out)))


# Position of the affine weight argument of each normalisation op.
NORM_WEIGHT_ARG = {
    aten.native_batch_norm: 1,
    aten._native_batch_norm_legit: 1,
    aten._native_batch_norm_legit_functional: 1,
    aten.native_layer_norm: 2,
    aten.native_group_norm: 1,
    aten._fused_rms_norm: 2,
    aten.cudnn_batch_norm: 1,  # CUDA picks these kernels at the dispatcher level
    aten.miopen_batch_norm: 1,
}
BATCH_NORMS = (
    aten.native_batch_norm,
    aten._native_batch_norm_legit,
    aten._native_batch_norm_legit_functional,
    aten.cudnn_batch_norm,
    aten.miopen_batch_norm,
)


def _norm_flops_for(packet: Any) -> RuleFn:
    weight_arg = NORM_WEIGHT_ARG[packet]
    # A batch norm outside training normalises with its running statistics.
    training_arg = 5 if packet in BATCH_NORMS else None

    def count(args: tuple, kwargs: dict, out: Any) -> int:
        stats = NORM_STATS if training_arg is None or args[training_arg] else 0
        affine = NORM_AFFINE if args[weight_arg] is not None else 0
        return _numel(args[0]) * (stats + NORM_APPLY + affine)

    return count


for _packet in NORM_WEIGHT_ARG:
    flop_rule("norm", _packet)(_norm_flops_for(_packet))


@flop_rule(
    "norm",
    aten.native_batch_norm_backward,
    aten.native_layer_norm_backward,
    aten.native_group_norm_backward,
    aten.batch_norm_backward,
    aten._fused_rms_norm_backward,
    aten.cudnn_batch_norm_backward,
    aten.miopen_batch_norm_backward,
)
def norm_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(args[0]) * NORM_BACKWARD


@flop_rule("softmax", aten._softmax, aten._log_softmax, aten._safe_softmax)
def softmax_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(args[0]) * SOFTMAX


@flop_rule("softmax", aten._softmax_backward_data, aten._log_softmax_backward_data)
def softmax_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(args[0]) * SOFTMAX_BACKWARD


LOSS_PER_ELEMENT = {
    aten.mse_loss: 3,  # subtract, square, accumulate
    aten.mse_loss_backward: 3,
    aten.l1_loss: 3,
    aten.smooth_l1_loss: 4,
    aten.smooth_l1_loss_backward: 4,
    aten.huber_loss: 4,
    aten.huber_loss_backward: 4,
    aten.binary_cross_entropy: 6,  # two logs, two multiplies, a subtract, accumulate
    aten.binary_cross_entropy_backward: 5,
    aten.binary_cross_entropy_with_logits: 7,
    aten.soft_margin_loss: 4,
    aten.soft_margin_loss_backward: 4,
    aten.multilabel_margin_loss_forward: 3,
    aten.multi_margin_loss: 3,
    aten.kl_div: 4,
}


def _loss_flops_for(per_element: int) -> RuleFn:
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return per_element * max(t.numel() for t in _tensors(args))

    return count


for _packet, _per_element in LOSS_PER_ELEMENT.items():
    flop_rule("loss", _packet)(_loss_flops_for(_per_element))


# Negative log-likelihood gathers and accumulates one value per target: the target's position.
NLL_TARGET_ARG = {
    aten.nll_loss_forward: 1,
    aten.nll_loss2d_forward: 1,
    aten.nll_loss_backward: 2,
    aten.nll_loss2d_backward: 2,
}


def _nll_flops_for(target_arg: int) -> RuleFn:
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return _numel(args[target_arg])

    return count


for _packet, _target_arg in NLL_TARGET_ARG.items():
    flop_rule("loss", _packet)(_nll_flops_for(_target_arg))


@flop_rule("elementwise", aten.native_dropout, aten.native_dropout_backward)
def dropout_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(args[0])


@flop_rule("pool", aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, aten.avg_pool2d, aten.avg_pool3d)
def pool_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return _numel(_first(out)) * prod(args[1])


@flop_rule(
    "pool",
    aten._adaptive_avg_pool2d,
    aten._adaptive_avg_pool3d,
    aten.adaptive_max_pool2d,
    aten.max_pool2d_with_indices_backward,
    aten.avg_pool2d_backward,
    aten._adaptive_avg_pool2d_backward,
    aten.adaptive_max_pool2d_backward,
)
def pool_input_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return max(_numel(args[0]), _numel(args[1]) if len(args) > 1 else 0)


@flop_rule("embedding", aten.embedding_dense_backward, aten._embedding_bag_backward)
def embedding_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Scatter-adding each gradient row into the table."""
    return _numel(args[0])


# ---------------------------------------------------------------- fused transformer layer
@flop_rule("attention", aten._transformer_encoder_layer_fwd)
def transformer_layer_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """The inference fast path of nn.TransformerEncoderLayer, as the sum of its parts."""
    src, width, heads = args[0], args[1], args[2]
    ffn = args[14].shape[0]
    tokens = src.numel() // width
    batch, seq = (src.shape[0], src.shape[1]) if src.dim() == 3 else (1, tokens)
    head_dim = width // heads
    shape = (batch, heads, seq, head_dim)
    projections = _mm(tokens, width, 3 * width) + _mm(tokens, width, width)
    feed_forward = _mm(tokens, width, ffn) + _mm(tokens, ffn, width) + tokens * ffn
    norms = 2 * tokens * width * (NORM_STATS + NORM_APPLY + NORM_AFFINE)
    residuals = 2 * tokens * width
    scores = batch * heads * seq * seq * SOFTMAX
    return sdpa_flop_count(shape, shape, shape) + projections + feed_forward + norms + residuals + scores


# ---------------------------------------------------------------- optimizer kernels
FUSED_ADAM_PER_ELEMENT = 9  # the single-tensor Adam(W) path, op for op, per parameter element


@flop_rule("optimizer", aten._fused_adam_, aten._fused_adamw_, aten._fused_adam, aten._fused_adamw)
def fused_adam_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return FUSED_ADAM_PER_ELEMENT * sum(t.numel() for t in args[0])


def _foreach_elementwise(args: tuple, kwargs: dict, out: Any) -> int:
    """Each list element is one elementwise op: the sum over the first tensor list."""
    return sum(t.numel() for t in args[0])


# ---------------------------------------------------------------- zero-FLOP ops
ZERO_FLOP = [
    # copies and conversions
    aten._to_copy, aten.copy_, aten.clone, aten._copy_from, aten._copy_from_and_resize, aten.lift_fresh,
    aten.lift_fresh_copy, aten.detach, aten.alias, aten._unsafe_view, aten.contiguous, aten.set_,
    aten.resize_, aten._local_scalar_dense, aten.cat, aten.stack, aten.constant_pad_nd, aten.flip, aten.roll,
    aten.repeat, aten.tril, aten.triu,
    # allocation and filling
    aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided, aten.zeros,
    aten.zeros_like, aten.ones, aten.ones_like, aten.full, aten.full_like, aten.new_zeros, aten.new_ones,
    aten.new_full, aten.fill_, aten.zero_, aten.scalar_tensor, aten.arange, aten.linspace,
    aten.randn, aten.rand, aten.randint, aten.randperm, aten.normal_, aten.uniform_, aten.bernoulli_,
    aten.bernoulli, aten.random_,
    # indexing and selection
    aten.embedding, aten.index, aten.index_select, aten.gather, aten.scatter, aten.index_put_,
    aten.index_put, aten.masked_fill, aten.masked_fill_, aten.where, aten.select_backward,
    aten.slice_backward, aten.index_select_backward, aten.select_scatter, aten.slice_scatter,
    aten.masked_select, aten.nonzero, aten.sort, aten.topk, aten.one_hot,
    # profiler and bookkeeping ops
    torch.ops.profiler._record_function_enter_new, torch.ops.profiler._record_function_exit,
    aten._foreach_copy_, aten._foreach_zero_,
    aten.is_same_size, aten._has_compatible_shallow_copy_type, aten.sym_size, aten.sym_numel,
    aten.sym_stride, aten.sym_storage_offset, aten.is_nonzero, aten.equal,
]


def _zero(args: tuple, kwargs: dict, out: Any) -> int:
    return 0


for _packet in ZERO_FLOP:
    flop_rule("zero", _packet)(_zero)


# ---------------------------------------------------------------- collectives
# c10d ops (what DDP's reducer and torch.distributed run) move bytes and do no FLOPs worth
# counting; their first argument holds the tensors sent.
COLLECTIVES = (
    "allreduce_", "allreduce_coalesced_", "allgather_", "_allgather_base_", "allgather_coalesced_",
    "allgather_into_tensor_coalesced_", "reduce_scatter_", "_reduce_scatter_base_",
    "reduce_scatter_tensor_coalesced_", "broadcast_", "reduce_", "gather_", "scatter_", "alltoall_",
    "alltoall_base_", "send", "recv_", "recv_any_source_",
)
FUNCTIONAL_COLLECTIVES = (
    "all_reduce", "all_reduce_coalesced", "all_gather_into_tensor", "all_gather_into_tensor_coalesced",
    "reduce_scatter_tensor", "reduce_scatter_tensor_coalesced", "all_to_all_single", "broadcast",
)


def _comm_bytes(args: tuple) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(args[:1]))


def _register_collectives() -> None:
    for namespace, names in (("c10d", COLLECTIVES), ("_c10d_functional", FUNCTIONAL_COLLECTIVES)):
        ops = getattr(torch.ops, namespace)
        for name in names:
            try:
                REGISTRY[getattr(ops, name)] = Rule("comm", _zero, _comm_bytes)
            except (AttributeError, RuntimeError):
                continue  # this build of torch has no such collective


_register_collectives()


# ---------------------------------------------------------------- resolution
VIEW_RULE = Rule("zero", _zero)
ELEMENTWISE_RULE = Rule("elementwise", lambda args, kwargs, out: _elementwise_count(args, out))
REDUCTION_RULE = Rule("reduction", lambda args, kwargs, out: max((t.numel() for t in _tensors(args)), default=0))
FOREACH_RULE = Rule("optimizer", _foreach_elementwise)
FOREACH_REDUCTION_RULE = Rule("reduction", _foreach_elementwise)


def _is_view(func: Any) -> bool:
    returns = func._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


def resolve(func: Any) -> Rule | None:
    """The rule for an ATen overload, or None when the op is uncounted. Callers cache this."""
    rule = REGISTRY.get(getattr(func, "overloadpacket", None))
    if rule is not None:
        return rule
    name = getattr(func, "__name__", "")
    if name.startswith("_foreach_"):
        return FOREACH_REDUCTION_RULE if name.startswith("_foreach_norm") else FOREACH_RULE
    if not isinstance(func, torch._ops.OpOverload):
        return None
    if _is_view(func):
        return VIEW_RULE
    if torch.Tag.pointwise in func.tags:
        return ELEMENTWISE_RULE
    if torch.Tag.reduction in func.tags:
        return REDUCTION_RULE
    return None
