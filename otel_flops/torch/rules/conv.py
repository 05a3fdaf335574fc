"""Convolutions, forward and backward, and the conv1d/2d/3d composites seen whole under inference_mode.

The forward and input-gradient formulas are FlopCounterMode's. The weight-gradient term of the
backward differs on purpose for grouped convolutions: torch 2.13's FlopCounterMode counts it
``groups`` times too large (fixed upstream later); here it equals the same convolution split into
``groups`` separate convolutions.
"""

from __future__ import annotations

from math import prod
from typing import Any

from .registry import aten, flop_rule, packets


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


@flop_rule("conv", *packets("cudnn_convolution", "_slow_conv2d_forward", "mkldnn_convolution"))
def plain_convolution_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return conv_flop_count(args[0].shape, args[1].shape, out.shape, False)


def _batched(x: Any, w: Any, out: Any) -> tuple[Any, Any]:
    """Shapes with a batch dimension: an unbatched input (C, *spatial) counts as a batch of one."""
    if x.dim() == w.dim() - 1:
        return (1, *x.shape), (1, *out.shape)
    return x.shape, out.shape


def _composite(transposed: bool):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        x, w = args[0], args[1]
        x_shape, out_shape = _batched(x, w, out)
        return conv_flop_count(x_shape, w.shape, out_shape, transposed)

    count.__doc__ = "Under inference_mode: the ``convolution`` it becomes otherwise, same formula."
    return count


flop_rule("conv", aten.conv1d, aten.conv2d, aten.conv3d)(_composite(transposed=False))
flop_rule("conv", aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d)(_composite(transposed=True))


def _swap01(shape: Any) -> list[int]:
    return [shape[1], shape[0], *shape[2:]]


@flop_rule("conv", aten.convolution_backward)
def convolution_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """grad_input is a transposed conv of grad_out; grad_weight a conv of input with grad_out.

    The weight gradient is one convolution per group, each over ``1 / groups`` of the channels:
    FlopCounterMode's term divided by ``groups`` (torch 2.13's FlopCounterMode omits that division).
    """
    grad_out, x, w = args[0].shape, args[1].shape, args[2].shape
    transposed, groups, output_mask = bool(args[7]), args[9], args[10]
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out, w, out[0].shape, not transposed)
    if output_mask[1]:
        source = _swap01(grad_out) if transposed else _swap01(x)
        kernel = _swap01(x) if transposed else _swap01(grad_out)
        flops += conv_flop_count(source, kernel, _swap01(out[1].shape), False) // groups
    return flops


@flop_rule("conv", aten.col2im)
def col2im_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Folding sliding blocks back: every block element is added into its image position (overlaps add)."""
    return args[0].numel()
