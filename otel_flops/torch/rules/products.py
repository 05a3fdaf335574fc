"""Matrix products: dense, batched, composite (seen whole under inference_mode), complex and sparse.

A multiply-add is 2 FLOPs. On real operands every dense product uses FlopCounterMode's formula
(``2 m k n``; the bias of addmm is not counted). A complex multiply-add is 8 real FLOPs (4
multiplies, 4 adds), so a complex product counts 4x its real formula. A sparse operand (COO,
CSR, CSC, BSR) counts its stored elements only: ``2 x stored x n``.
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch

from .registry import RuleFn, aten, flop_rule, numel, packets

COMPLEX_MULTIPLY_ADD = 4  # 8 real FLOPs per complex multiply-add, 4x the real 2


def mm(m: int, k: int, n: int) -> int:
    return 2 * m * k * n


def _complex(t: torch.Tensor) -> int:
    return COMPLEX_MULTIPLY_ADD if t.is_complex() else 1


def _sparse_mm(a: torch.Tensor, b: Any) -> int:
    """Each stored element of ``a`` meets one row of ``b``: 2 FLOPs per element of that row."""
    n = b.shape[-1] if b.dim() > 1 else 1
    return 2 * a.values().numel() * n


def _product(a: torch.Tensor, b: torch.Tensor, m: int, k: int, n: int) -> int:
    if a.layout is not torch.strided:
        return _sparse_mm(a, b) * _complex(b)
    if b.layout is not torch.strided:  # dense @ sparse: each stored element of b meets a column of a
        return 2 * b.values().numel() * m * _complex(a)
    return mm(m, k, n) * _complex(a)


@flop_rule("matmul", aten.mm, aten._int_mm, aten._scaled_mm, *packets("_sparse_mm"))
def mm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    a, b = args[0], args[1]
    (m, k), n = a.shape, b.shape[1]
    return _product(a, b, m, k, n)


@flop_rule("matmul", aten.addmm, aten._sparse_addmm, aten.sspaddmm, *packets("_addmm_activation"))
def addmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return mm_flops(args[1:], kwargs, out)


@flop_rule("matmul", aten.bmm)
def bmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    (b, m, k), n = args[0].shape, args[1].shape[2]
    return b * mm(m, k, n) * _complex(args[0])


@flop_rule("matmul", aten.baddbmm, aten.addbmm)
def baddbmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return bmm_flops(args[1:], kwargs, out)


@flop_rule("matmul", *packets("_grouped_mm", "_scaled_grouped_mm"))
def grouped_mm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Mixture-of-experts products (torch's ``_grouped_mm``): each output value is a dot product
    over ``k`` (2 x out x k), whether the groups split the rows of ``a`` (2-D x 3-D), the columns
    of ``b`` (3-D x 2-D) or form a batch (3-D x 3-D); 2-D x 2-D splits the inner dimension, so
    each group's ``m x n`` output sums over its share of ``k``: 2 x m x k x n in all."""
    a, b = args[0], args[1]
    if a.dim() == 2 and b.dim() == 2:
        return 2 * a.shape[0] * a.shape[1] * b.shape[1] * _complex(a)
    return 2 * out.numel() * a.shape[-1] * _complex(a)


@flop_rule("matmul", aten.mv)
def mv_flops(args: tuple, kwargs: dict, out: Any) -> int:
    a = args[0]
    m, k = a.shape
    return _product(a, args[1], m, k, 1)


@flop_rule("matmul", aten.addmv)
def addmv_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return mv_flops(args[1:], kwargs, out)


@flop_rule("matmul", aten.dot, aten.vdot)
def dot_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * numel(args[0]) * _complex(args[0])


@flop_rule("matmul", aten.addr)
def addr_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return 2 * numel(out) * _complex(out)


@flop_rule(
    "matmul",
    *packets("_weight_int8pack_mm", "_weight_int4pack_mm", "_weight_int4pack_mm_for_cpu",
             "_weight_int4pack_mm_with_scales_and_zeros"),
)
def packed_weight_mm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Activations (m, k) times a packed (n, k) weight: k from the activations, n from the output."""
    x = args[0]
    k = x.shape[-1]
    return mm(x.numel() // k, k, out.shape[-1])


# ---------------------------------------------------------------- composites seen whole
@flop_rule("matmul", aten.linear)
def linear_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """``aten.linear`` under inference_mode: what it becomes otherwise (ATen's Linear.cpp), an
    addmm for a 2-D or contiguous input (``2 x rows x in x out``, the bias inside, as
    FlopCounterMode counts addmm), else a matmul and a bias ``add_`` of one FLOP per output."""
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    k = w.shape[-1]
    products = _product(x, w, x.numel() // k, k, w.shape[0] if w.dim() == 2 else 1)
    separate_bias = bias is not None and x.dim() != 2 and not x.is_contiguous()
    return products + (numel(out) * (2 if x.is_complex() else 1) if separate_bias else 0)


@flop_rule("matmul", aten.matmul)
def matmul_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """``aten.matmul`` under inference_mode: every output element is a length-k dot product, ``2 x out x k``.

    That is what its dot/mv/mm/bmm decomposition counts for every rank combination.
    """
    a, b = args[0], args[1]
    if a.layout is not torch.strided:
        return _sparse_mm(a, b) * _complex(b)
    return 2 * numel(out) * a.shape[-1] * _complex(a)


@flop_rule("matmul", aten._trilinear)
def trilinear_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """``_trilinear`` (nn.Bilinear's kernel): ``x1^T W_o x2`` for every output, as torch computes it.

    torch multiplies the expanded operands pairwise and sums the ``sumdim`` dimensions: over the
    broadcast index space of all three operands, 2 multiplies and 1 add per point.
    """
    i1, i2, i3 = args[0], args[1], args[2]
    expand1, expand2, expand3 = args[3], args[4], args[5]
    shapes = [_expanded(t.shape, e) for t, e in ((i1, expand1), (i2, expand2), (i3, expand3))]
    return 3 * prod(torch.broadcast_shapes(*shapes))


def _expanded(shape: Any, dims: list[int]) -> list[int]:
    sizes = list(shape)
    for d in sorted(dims):
        sizes.insert(d, 1)
    return sizes


@flop_rule("matmul", aten.bilinear)
def bilinear_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """``aten.bilinear`` under inference_mode: its ``_trilinear`` (3 per index point) plus the bias add."""
    x1, w = args[0], args[2]
    bias = args[3] if len(args) > 3 else kwargs.get("bias")
    rows = x1.numel() // x1.shape[-1]
    return 3 * rows * w.numel() + (numel(out) if bias is not None else 0)


# ---------------------------------------------------------------- sparse kernels
@flop_rule("matmul", aten._sparse_mm_reduce_impl)
def sparse_mm_reduce_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """CSR x dense with a sum/mean/amax/amin reduction: one multiply and one reduce per stored element and column."""
    return _sparse_mm(args[0], args[1])


@flop_rule("matmul", aten._sparse_mm_reduce_impl_backward)
def sparse_mm_reduce_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """grad_self: a length-n dot product per stored element; grad_other: the transposed sparse product."""
    a, grad_out, mask = args[0], args[1], args[5]
    return sum(_sparse_mm(a, grad_out) for wanted in mask if wanted)


@flop_rule("matmul", aten.sparse_sampled_addmm)
def sampled_addmm_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """``(mat1 @ mat2)`` only where ``self`` stores an element: a length-k dot product each."""
    return 2 * args[0].values().numel() * args[1].shape[-1]


def _linear_cross_entropy(grads: bool) -> RuleFn:
    """torch.nn's chunked linear cross-entropy custom ops, whose bodies the mode cannot see.

    Logits ``2 N D C`` (+ ``N C`` bias), log-softmax 5 per logit, NLL 1 per row; the scalar op
    also precomputes the gradients: 4 per logit (softmax backward), ``2 N C D`` each for the input
    and weight gradients it is asked for, ``N C`` for the bias gradient.
    """

    def count(args: tuple, kwargs: dict, out: Any) -> int:
        x, w, bias = args[0], args[1], args[3]
        classes, width = w.shape[0], w.shape[-1]
        rows = x.numel() // width
        logits = rows * classes
        flops = mm(rows, width, classes) + (logits if bias is not None else 0) + 5 * logits + rows
        if grads:
            wanted = args[12:15]
            flops += 4 * logits + mm(rows, classes, width) * (wanted[0] + wanted[1]) + logits * wanted[2]
        return flops

    return count


flop_rule("loss", "torch_nn::_linear_cross_entropy_batch_chunked")(_linear_cross_entropy(grads=True))
flop_rule("loss", "torch_nn::_linear_cross_entropy_batch_chunked_no_reduction")(_linear_cross_entropy(grads=False))
