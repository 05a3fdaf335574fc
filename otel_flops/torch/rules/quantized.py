"""Quantized ops of torch's CPU quantization paths (torch.ao.quantization, eager and FX): static and dynamic.

Each op counts what its float counterpart counts op by op, so a quantized model's FLOPs equal
its float model's: a linear ``2 m k n`` (bias inside, as addmm), a convolution conv.py's formula,
a fused activation (ReLU, the add of ``conv2d_add``) one per output, an add or multiply one per
output, norms, softmax and pooling as norms.py and resample.py, the quantized LSTM/GRU/RNN as rnn.py.
Quantizing and dequantizing are conversions, 0 FLOPs like a dtype cast.
Weights arrive packed in ScriptObjects: a linear's ``m``, ``k`` come from the activations and
``n`` from the output; a convolution's kernel and a recurrent layer's matrices from ``unpack()``.

Width (BOPs): a static op's operands are quint8/qint8 tensors, 8 bits by the dtype table. A
dynamic op takes float activations, quantizes them to 8 bits inside the kernel and multiplies
them with int8 weights: its width is the packed weight's (qint8, 8 bits), as precision.py's
convention for quantized modules has it (the narrow weight sets the width of the multiply); an
fp16-packed weight is float16 (16 bits).
"""

from __future__ import annotations

from typing import Any

import torch

from .conv import conv_flop_count
from .norms import NORM_AFFINE, NORM_APPLY, NORM_STATS, SOFTMAX
from .registry import WidthFn, aten, first, flop_rule, numel, packets, zero
from .resample import pool_flops
from .rnn import GRU, LSTM, RNN_TANH, _rows, layer_flops


def _fixed(dtype: torch.dtype) -> WidthFn:
    def width(args: tuple, kwargs: dict) -> torch.dtype:
        return dtype

    return width


INT8, FP16 = _fixed(torch.qint8), _fixed(torch.float16)


def _packed(args: tuple) -> Any:
    """The op's packed weight: its first ScriptObject argument."""
    return next(a for a in args if isinstance(a, torch.ScriptObject))


# ---------------------------------------------------------------- linear: op -> (fused activation per output, width)
LINEAR: dict[str, tuple[int, WidthFn | None]] = {
    "linear": (0, None), "linear_relu": (1, None), "linear_leaky_relu": (1, None), "linear_tanh": (1, None),
    "linear_dynamic": (0, INT8), "linear_relu_dynamic": (1, INT8),
    "linear_dynamic_fp16": (0, FP16), "linear_relu_dynamic_fp16": (1, FP16),
    "linear_dynamic_fp16_unpacked_weight": (0, FP16),
    "linear_with_input_q_dq_qweight_dq_output_fp32": (0, INT8),
    "linear_with_input_q_dq_qweight_dq_relu_output_fp32": (1, INT8),
}


def _linear(activation: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        x, n = args[0], out.shape[-1]
        k = x.shape[-1]
        rows = x.numel() // k
        return 2 * rows * k * n + activation * rows * n

    count.__doc__ = "Activations (m, k) times a packed (n, k) weight: ``2 m k n``, plus the fused activation."
    return count


for _name, (_activation, _width) in LINEAR.items():
    flop_rule("matmul", f"quantized::{_name}", width=_width)(_linear(_activation))


@flop_rule("matmul", "quantized::matmul")
def matmul_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Every output element a length-k dot product, as ``aten.matmul``."""
    return 2 * numel(out) * args[0].shape[-1]


# ---------------------------------------------------------------- conv: op -> (transposed, fused ops per output, width)
CONV: dict[str, tuple[bool, int, WidthFn | None]] = {
    **{f"conv{d}d": (False, 0, None) for d in (1, 2, 3)},
    **{f"conv{d}d_relu": (False, 1, None) for d in (1, 2, 3)},
    "conv2d_add": (False, 1, None), "conv2d_add_relu": (False, 2, None),
    **{f"conv_transpose{d}d": (True, 0, None) for d in (1, 2, 3)},
    **{f"conv{d}d_dynamic": (False, 0, INT8) for d in (1, 2, 3)},
    **{f"conv_transpose{d}d_dynamic": (True, 0, INT8) for d in (1, 2, 3)},
}


def _conv(transposed: bool, after: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        weight = _packed(args).unpack()[0]
        return conv_flop_count(args[0].shape, weight.shape, out.shape, transposed) + after * out.numel()

    count.__doc__ = "conv.py's formula on the unpacked weight's shape, plus a fused add or ReLU per output."
    return count


for _name, (_transposed, _after, _width) in CONV.items():
    flop_rule("conv", f"quantized::{_name}", width=_width)(_conv(_transposed, _after))


# ---------------------------------------------------------------- elementwise: op -> FLOPs per output element
ELEMENTWISE: dict[str, int] = {
    **{f"{op}{relu}{out}": 1 + bool(relu) for op in ("add", "mul", "add_scalar", "mul_scalar")
       for relu in ("", "_relu") for out in ("", "_out")},
    "cat": 0, "cat_out": 0, "cat_relu": 1, "cat_relu_out": 1, "dropout": 0,
    **dict.fromkeys(("relu6", "hardswish", "sigmoid", "leaky_relu", "elu", "celu", "threshold", "clamp", "prelu"), 1),
    "softmax": SOFTMAX,
}


def _per_output(n: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return n * numel(first(out))

    count.__doc__ = "As the float op: a fixed count per output element."
    return count


for _name, _n in ELEMENTWISE.items():
    flop_rule("softmax" if _name == "softmax" else "elementwise", f"quantized::{_name}")(_per_output(_n))


flop_rule("pool", "quantized::max_pool1d", "quantized::max_pool2d")(pool_flops)


def _input_width(args: tuple, kwargs: dict) -> torch.dtype:
    """The quantized input's width: a norm's float weight and statistics are not its operands' width."""
    return args[0].dtype


# Norms: op -> (computes statistics, position of the affine weight, fused ReLU per element)
NORMS: dict[str, tuple[bool, int, int]] = {
    **{f"batch_norm{d}{relu}": (False, 1, bool(relu)) for d in ("", "1d", "2d", "3d") for relu in ("", "_relu")},
    "layer_norm": (True, 2, 0), "group_norm": (True, 2, 0), "instance_norm": (True, 1, 0),
}


def _norm(statistics: bool, weight_arg: int, relu: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        affine = NORM_AFFINE if args[weight_arg] is not None else 0
        return numel(args[0]) * ((NORM_STATS if statistics else 0) + NORM_APPLY + affine + relu)

    count.__doc__ = "norms.py's per-element counts; batch norm here always uses its running statistics."
    return count


for _name, (_statistics, _weight_arg, _relu) in NORMS.items():
    flop_rule("norm", f"quantized::{_name}", width=_input_width)(_norm(_statistics, _weight_arg, _relu))

# Conversions between float and quantized values, like a dtype cast (``_to_copy``): 0 FLOPs, so a
# quantized model counts what its float model counts.
CONVERSIONS = [
    "quantize_per_tensor", "quantize_per_tensor_dynamic", "quantize_per_channel", "dequantize",
    "_make_per_tensor_quantized_tensor", "_make_per_channel_quantized_tensor", "int_repr",
    "q_scale", "q_zero_point", "q_per_channel_scales", "q_per_channel_zero_points", "q_per_channel_axis",
]
flop_rule("zero", *packets(*CONVERSIONS))(zero)


# ---------------------------------------------------------------- recurrent layers
CELL_WIDTH = {"quantized_dynamic": torch.qint8, "quantized_fp16": torch.float16}


def _cell_state(params: Any) -> tuple:
    """A CellParamsBase's (kind, tensors, doubles, longs, packed linears)."""
    return params.__getstate__()[0]


def _matrices(packed: list) -> list[torch.Tensor]:
    return [p.unpack()[0] for p in packed]


def _stack_params(args: tuple) -> list:
    """The CellParamsBase list, one per layer and direction; the ``.data`` overloads take batch sizes first."""
    data = isinstance(args[1], torch.Tensor) and args[1].dim() == 1
    return args[3] if data else args[2]


def _stack(mode: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        rows = _rows(args[0])
        return sum(layer_flops(_matrices(_cell_state(p)[4]), rows, mode) for p in _stack_params(args))

    count.__doc__ = "A dynamically quantized LSTM/GRU stack: rnn.py's formula for every layer and direction."
    return count


def _stack_width(args: tuple, kwargs: dict) -> torch.dtype:
    return CELL_WIDTH.get(_cell_state(_stack_params(args)[0])[0], torch.qint8)


flop_rule("rnn", aten.quantized_lstm, width=_stack_width)(_stack(LSTM))
flop_rule("rnn", aten.quantized_gru, width=_stack_width)(_stack(GRU))


def _dynamic_cell(mode: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        x = args[0]
        return layer_flops(_matrices([args[2], args[3]]), _rows(x) if x.dim() > 1 else 1, mode)

    count.__doc__ = "One step of a dynamically quantized cell: rnn.py's formula on the unpacked weights."
    return count


def _cell_width(args: tuple, kwargs: dict) -> torch.dtype:
    """int8 weights unpack to qint8; fp16-packed ones (torch's only float packing) unpack to float."""
    return torch.qint8 if args[2].unpack()[0].is_quantized else torch.float16


for _name, _mode in {"lstm": LSTM, "gru": GRU, "rnn_tanh": RNN_TANH, "rnn_relu": RNN_TANH}.items():
    flop_rule("rnn", f"quantized::quantized_{_name}_cell_dynamic", width=_cell_width)(_dynamic_cell(_mode))
