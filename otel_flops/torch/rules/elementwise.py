"""Elementwise ops, reductions, scans, scatter-adds and distances.

Elementwise ops count max(N_in, N_out) (the seed paper's convention, sec. 3.1), reductions and
scans N_in. On complex values a FLOP is a real one: an add or subtract is 2, a multiply 6 (4
multiplies, 2 adds), a multiply-add 8, a divide 11 (6 multiplies, 3 adds, 2 divides), a modulus
4; any other elementwise function of a complex value counts as one complex multiply (6), and a
complex reduction adds (2 per element).
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch

from .norms import LOG_ADD_EXP
from .registry import Rule, first, flop_rule, largest, numel, packets, per_element

COMPLEX_DEFAULT = 6
COMPLEX_ELEMENTWISE = {
    "add": 2, "sub": 2, "rsub": 2, "neg": 2, "conj_physical": 1, "mul": 6, "addcmul": 8, "div": 11,
    "reciprocal": 11, "abs": 4, "sgn": 11, "real": 1, "imag": 1,
}
COMPLEX_REDUCTION = 2


def _is_complex(args: tuple, out: Any) -> bool:
    a = args[0] if args and isinstance(args[0], torch.Tensor) else first(out)
    return isinstance(a, torch.Tensor) and a.is_complex()


def elementwise_count(args: tuple, out: Any) -> int:
    """max(N_in, N_out), the seed paper's elementwise convention (sec. 3.1)."""
    return max(largest(args), numel(first(out)))


def elementwise_rule(name: str) -> Rule:
    """The rule of a pointwise op, its complex factor picked by name."""
    factor = COMPLEX_ELEMENTWISE.get(name.rstrip("_"), COMPLEX_DEFAULT)

    def count(args: tuple, kwargs: dict, out: Any) -> int:
        n = elementwise_count(args, out)
        return n * factor if _is_complex(args, out) else n

    return Rule("elementwise", count)


def _reduction(args: tuple, kwargs: dict, out: Any) -> int:
    n = largest(args)
    return n * COMPLEX_REDUCTION if _is_complex(args, out) else n


REDUCTION_RULE = Rule("reduction", _reduction)

# Elementwise ops whose schema carries no pointwise tag: activations, their gradients, and friends.
@flop_rule(
    "elementwise",
    *packets("rsub", "floor_divide", "glu", "glu_backward", "hardswish", "hardswish_backward", "elu_backward",
             "hardtanh_backward", "leaky_relu_backward", "softplus_backward", "hardshrink_backward",
             "softshrink_backward", "hardsigmoid_backward", "mish_backward", "log_sigmoid_forward",
             "log_sigmoid_backward", "rrelu_with_noise", "rrelu_with_noise_backward", "_prelu_kernel",
             "polar", "prelu"),
)
def untagged_elementwise_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """max(N_in, N_out), as for every pointwise op."""
    return elementwise_count(args, out)


@flop_rule("elementwise", *packets("_prelu_kernel_backward"))
def prelu_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Input gradient (one select-multiply per element) and weight gradient (a multiply-accumulate)."""
    return 3 * numel(args[1])


@flop_rule("elementwise", *packets("linalg_cross"))
def cross_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """A cross product: 6 multiplies and 3 subtracts per 3-vector, 3 per output element."""
    return 3 * numel(out)


@flop_rule("elementwise", *packets("allclose"))
def allclose_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """|a - b| <= atol + rtol |b|: six operations per element, and the all() over them."""
    return 7 * largest(args)


# ---------------------------------------------------------------- scans and reductions
flop_rule("reduction", *packets("cumsum", "cumprod", "cummax", "cummin", "_cummax_helper", "_cummin_helper",
                                "segment_reduce", "hash_tensor"))(per_element(1, "largest"))
flop_rule("reduction", *packets("logcumsumexp", "_logcumsumexp"))(per_element(LOG_ADD_EXP))


@flop_rule("reduction", *packets("_segment_reduce_backward"))
def segment_reduce_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """One gradient operation per element of the reduced data."""
    return numel(args[2])



@flop_rule("reduction", *packets("histc", "histogram", "_histogramdd_from_bin_cts", "_histogramdd_from_bin_tensors"))
def histogram_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Binning: subtract the lower edge, scale to a bin, increment it: 3 per input element."""
    return 3 * numel(args[0])


@flop_rule("reduction", *packets("trace"))
def trace_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """The sum of the diagonal."""
    return min(args[0].shape[-2:])


@flop_rule("reduction", *packets("renorm"))
def renorm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """A p-norm per slice (power and accumulate, 2 per element), then the rescale (1 per element)."""
    return 3 * numel(args[0])


# ---------------------------------------------------------------- scatter-adds
def _scattered(source_arg: int, accumulate_arg: int | None = None):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        if accumulate_arg is not None:
            accumulate = args[accumulate_arg] if len(args) > accumulate_arg else kwargs.get("accumulate", False)
            if not accumulate:
                return 0
        return numel(args[source_arg])

    count.__doc__ = "One add (or reduce) per scattered source element; a plain scatter copies (0)."
    return count


flop_rule("elementwise", *packets("scatter_add", "scatter_reduce", "index_add", "index_reduce"))(_scattered(3))
flop_rule("elementwise", *packets("put"))(_scattered(2, accumulate_arg=3))
flop_rule("elementwise", *packets("index_put", "_index_put_impl"))(_scattered(2, accumulate_arg=3))
flop_rule("elementwise", *packets("_unsafe_masked_index_put_accumulate"))(_scattered(3))


@flop_rule("elementwise", *packets("scatter"))
def scatter_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """A scatter copies; with ``reduce=`` it adds or multiplies once per index."""
    reduce = args[4] if len(args) > 4 else kwargs.get("reduce")
    return numel(args[2]) if reduce is not None else 0


# ---------------------------------------------------------------- distances
DISTANCE_TERM = 3  # per pair and coordinate: subtract, |.|^p, accumulate (backward: derivative, scale, add)


@flop_rule("elementwise", *packets("_cdist_forward"))
def cdist_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """p-norm distance of every pair of rows: 3 per pair and coordinate."""
    return DISTANCE_TERM * numel(out) * args[0].shape[-1]


@flop_rule("elementwise", *packets("_cdist_backward"))
def cdist_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Gradient of every pair's distance w.r.t. x1: 3 per pair and coordinate."""
    return DISTANCE_TERM * numel(args[0]) * args[1].shape[-1]


@flop_rule("elementwise", *packets("_pdist_forward", "_pdist_backward"))
def pdist_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Every unordered pair of the n rows, n (n - 1) / 2 of them: 3 per pair and coordinate."""
    x = args[0] if args[0].dim() == 2 else args[1]
    n, m = x.shape
    return DISTANCE_TERM * n * (n - 1) // 2 * m


@flop_rule("elementwise", *packets("dist"))
def dist_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """||a - b||_p over the broadcast elements: 3 per element."""
    return DISTANCE_TERM * prod(torch.broadcast_shapes(args[0].shape, args[1].shape))
