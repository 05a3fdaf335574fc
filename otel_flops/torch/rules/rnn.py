"""Recurrent layers: the mkldnn and cuDNN kernels, the fused cells, and the composites seen under inference_mode.

Every form counts what ATen's unfused cells (aten/src/ATen/native/RNN.cpp) count op by op with
these rules: per step and sequence, the input and hidden products (``2 x in x gates x hidden``
and ``2 x hidden x gates x hidden``, biases inside addmm as in FlopCounterMode), an LSTM
projection ``2 x hidden x proj``, and the gate arithmetic per hidden unit:
LSTM 13 (gate add 4, three sigmoids, tanh, ``f*c + i*g`` 3, ``o*tanh(c)`` 2), GRU 10 (two gate
adds, two sigmoids, ``tanh(i_n + r*h_n)`` 3, ``n + z*(h - n)`` 3), plain RNN 2 (add, tanh/relu).
A batch_first GRU with biases runs its first layer's hidden-side product as a matmul and a
separate bias ``add_`` (ATen's Linear.cpp path for a non-contiguous operand): 3 more per hidden
unit there (measured against the no_grad path, which runs the cell op by op).
A backward counts the products twice (data and weight gradients) and the gate arithmetic twice.
"""

from __future__ import annotations

from typing import Any

import torch

from .registry import aten, flop_rule, numel, packets

# cuDNN's mode numbers (also used by mkldnn_rnn_layer): gates per hidden unit, gate arithmetic.
MODES = {0: (1, 2), 1: (1, 2), 2: (4, 13), 3: (3, 10)}
RNN_TANH, LSTM, GRU = 1, 2, 3


def layer_flops(weights: list[torch.Tensor], rows: int, mode: int) -> int:
    """Forward FLOPs of recurrent weights applied to ``rows`` (steps x sequences) inputs.

    ``weights`` are the layers' 2-D matrices in order: input-hidden and hidden-hidden products
    (``gates x hidden`` rows each, one pair per layer and direction) and LSTM projections.
    """
    gates, arithmetic = MODES[mode]
    matrices = [w for w in weights if w.dim() == 2]
    if not matrices:
        return 0
    gate_rows = matrices[0].shape[0]
    products = sum(w.numel() for w in matrices)
    pairs = sum(1 for w in matrices if w.shape[0] == gate_rows) // 2
    return rows * (2 * products + pairs * arithmetic * (gate_rows // gates))


def _rows(x: torch.Tensor) -> int:
    """Steps x sequences: a padded (seq, batch, in) input or a packed (sum of lengths, in) one."""
    return x.numel() // x.shape[-1]


@flop_rule("rnn", *packets("mkldnn_rnn_layer"))
def mkldnn_rnn_layer_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """One layer and direction on CPU (oneDNN)."""
    return layer_flops([args[1], args[2]], _rows(args[0]), args[9])


@flop_rule("rnn", *packets("mkldnn_rnn_layer_backward"))
def mkldnn_rnn_layer_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Data and weight gradients of one layer and direction: twice the forward."""
    return 2 * layer_flops([args[1], args[2]], _rows(args[0]), args[14])


@flop_rule("rnn", *packets("_cudnn_rnn"))
def cudnn_rnn_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Every layer and direction of a cuDNN RNN, from its weight list."""
    return layer_flops(list(args[1]), _rows(args[0]), args[6])


@flop_rule("rnn", *packets("_cudnn_rnn_backward"))
def cudnn_rnn_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Data gradients (the forward's products and twice its gate arithmetic), plus the weight
    gradients' products when asked for (output_mask[3])."""
    weights, rows, mode = list(args[1]), _rows(args[0]), args[10]
    matrices = [w for w in weights if w.dim() == 2]
    products = 2 * rows * sum(w.numel() for w in matrices)
    forward = layer_flops(weights, rows, mode)
    return 2 * forward - products + (products if args[21][3] else 0)


def _composite(mode: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        packed = isinstance(args[1], torch.Tensor) and args[1].dim() == 1  # the .data overload
        params = args[3] if packed else args[2]
        flops = layer_flops(list(params), _rows(args[0]), mode)
        if mode == GRU and not packed and args[3] and args[8]:  # has_biases, batch_first
            hidden = [w for w in params if w.dim() == 2][1].shape[1]
            directions = 2 if args[7] else 1  # the first layer's: later layers get contiguous inputs
            flops += 3 * hidden * _rows(args[0]) * directions
        return flops

    count.__doc__ = "The whole stack seen at once under inference_mode: every layer and direction."
    return count


flop_rule("rnn", aten.lstm)(_composite(LSTM))
flop_rule("rnn", aten.gru)(_composite(GRU))
flop_rule("rnn", aten.rnn_tanh, aten.rnn_relu)(_composite(RNN_TANH))


def _cell(mode: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return layer_flops([args[2], args[3]], _rows(args[0]) if args[0].dim() > 1 else 1, mode)

    count.__doc__ = "One step of a cell, seen whole under inference_mode."
    return count


flop_rule("rnn", aten.lstm_cell)(_cell(LSTM))
flop_rule("rnn", aten.gru_cell)(_cell(GRU))
flop_rule("rnn", aten.rnn_tanh_cell, aten.rnn_relu_cell)(_cell(RNN_TANH))


def _fused_cell(arithmetic: int, state_arg: int, backward: bool):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return (2 if backward else 1) * arithmetic * numel(args[state_arg])

    count.__doc__ = "A fused CUDA cell's gate arithmetic (its products ran before as mm ops)."
    return count


flop_rule("rnn", *packets("_thnn_fused_lstm_cell"))(_fused_cell(MODES[LSTM][1], 2, backward=False))
flop_rule("rnn", *packets("_thnn_fused_lstm_cell_backward_impl"))(_fused_cell(MODES[LSTM][1], 2, backward=True))
flop_rule("rnn", *packets("_thnn_fused_gru_cell"))(_fused_cell(MODES[GRU][1], 2, backward=False))
flop_rule("rnn", *packets("_thnn_fused_gru_cell_backward"))(_fused_cell(MODES[GRU][1], 0, backward=True))
