"""Pooling, resampling (upsample_*), grid sampling and padding backward.

Interpolation counts each output value as the weighted sum of its taps, nested per axis the way
ATen's CPU kernels compute it: a two-tap step is 3 FLOPs (2 multiplies, 1 add), so linear = 3,
bilinear = 9, trilinear = 21 per output value; bicubic = 4 four-tap rows + 1 column at 7 each = 35;
nearest copies (0). A backward scatters each output gradient into the same taps: a multiply and
an add per tap (nearest: the add only). Interpolation weights and source indices depend on the
output position alone and are not counted.
"""

from __future__ import annotations

from math import ceil, prod
from typing import Any

from .registry import first, flop_rule, numel, packets


@flop_rule("pool", *packets("max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool2d", "avg_pool3d",
                            "fractional_max_pool2d", "fractional_max_pool3d",
                            "max_pool1d", "max_pool2d", "max_pool3d", "quantized_max_pool1d", "quantized_max_pool2d",
                            "quantized_max_pool3d"))
def pool_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """One comparison or add per window element of every output. The ``max_poolNd`` composites
    (seen whole under inference_mode) count as the kernels they become; their decomposition
    cannot be traced for a quantized input, which fake tensors do not support."""
    return numel(first(out)) * prod(args[1])


@flop_rule(
    "pool",
    *packets("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d", "adaptive_max_pool3d",
             "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "avg_pool2d_backward",
             "avg_pool3d_backward", "_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward",
             "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward", "fractional_max_pool2d_backward",
             "fractional_max_pool3d_backward"),
)
def pool_input_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Adaptive pools and pool gradients: one operation per element of the larger of input and gradient."""
    return max(numel(args[0]), numel(args[1]) if len(args) > 1 else 0)


# ---------------------------------------------------------------- upsampling
# FLOPs per output value (forward) and per output gradient (backward).
UPSAMPLE = {
    "upsample_nearest1d": (0, 1), "upsample_nearest2d": (0, 1), "upsample_nearest3d": (0, 1),
    "_upsample_nearest_exact1d": (0, 1), "_upsample_nearest_exact2d": (0, 1), "_upsample_nearest_exact3d": (0, 1),
    "upsample_linear1d": (3, 4), "upsample_bilinear2d": (9, 8), "upsample_trilinear3d": (21, 16),
    "upsample_bicubic2d": (35, 32),
}


def _upsample_rule(per_value: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return per_value * numel(out)

    count.__doc__ = "A fixed count per output value (module docstring)."
    return count


def _upsample_backward_rule(per_gradient: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return per_gradient * numel(args[0])

    count.__doc__ = "A fixed count per output gradient scattered into its taps (module docstring)."
    return count


for _name, (_forward, _backward) in UPSAMPLE.items():
    flop_rule("resample", *packets(_name))(_upsample_rule(_forward))
    flop_rule("resample", *packets(_name + "_backward"))(_upsample_backward_rule(_backward))

ANTIALIAS_SUPPORT = {"_upsample_bilinear2d_aa": 1, "_upsample_bicubic2d_aa": 2}


def _taps(support: int, size_in: int, size_out: int) -> int:
    """Filter taps per output along one axis: the kernel widens by the downscaling factor."""
    return ceil(2 * support * max(1.0, size_in / size_out))


def _antialias_flops(support: int, sizes_in: Any, sizes_out: Any, values: int) -> int:
    """Separable filter: a multiply-add per tap and axis, 2 x (taps_h + taps_w) per output value."""
    taps = sum(_taps(support, i, o) for i, o in zip(sizes_in, sizes_out))
    return 2 * taps * values


def _antialias_rule(support: int, backward: bool):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        if backward:
            return _antialias_flops(support, args[2][-2:], args[1], numel(args[0]))
        return _antialias_flops(support, args[0].shape[-2:], out.shape[-2:], numel(out))

    count.__doc__ = "Antialiased resampling (PIL's separable filter): 2 x (taps_h + taps_w) per output value."
    return count


for _name, _support in ANTIALIAS_SUPPORT.items():
    flop_rule("resample", *packets(_name))(_antialias_rule(_support, backward=False))
    flop_rule("resample", *packets(_name + "_backward"))(_antialias_rule(_support, backward=True))


# ---------------------------------------------------------------- grid sampling
# interpolation_mode 0 bilinear, 1 nearest, 2 bicubic: FLOPs per output value, forward and backward.
GRID_2D = {0: (7, 8), 1: (0, 1), 2: (35, 32)}  # bilinear: 4 products, 3 adds; 16 taps for bicubic
GRID_3D = {0: (15, 16), 1: (0, 1)}  # trilinear: 8 products, 7 adds
UNNORMALISE = 2  # per coordinate of each sampling location: a multiply and an add


def _grid_rule(table: dict[int, tuple[int, int]], backward: bool):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        if backward:
            grad, grid, mode, mask = args[0], args[2], args[3], args[6]
            return sum(table[mode][1] * grad.numel() for wanted in mask if wanted) + UNNORMALISE * grid.numel()
        grid, mode = args[1], args[2]
        return table[mode][0] * numel(out) + UNNORMALISE * grid.numel()

    count.__doc__ = ("Per output value the weighted sum of its taps (a multiply and add per tap in the "
                     "backward, per gradient asked for), plus unnormalising each grid coordinate.")
    return count


flop_rule("resample", *packets("grid_sampler_2d", "cudnn_grid_sampler"))(_grid_rule(GRID_2D, backward=False))
flop_rule("resample", *packets("grid_sampler_2d_backward"))(_grid_rule(GRID_2D, backward=True))
flop_rule("resample", *packets("grid_sampler_3d"))(_grid_rule(GRID_3D, backward=False))
flop_rule("resample", *packets("grid_sampler_3d_backward"))(_grid_rule(GRID_3D, backward=True))


# ---------------------------------------------------------------- scatter-adds of gradients
@flop_rule(
    "elementwise",
    *packets("reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
             "replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward",
             "unfold_backward"),
)
def scatter_gradient_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Gradients of copies that read some inputs several times: each gradient element is added back."""
    return numel(args[0])


