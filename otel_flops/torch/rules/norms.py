"""Normalisation, softmax, losses, dropout and embeddings: per-element formulas, forward and backward.

The per-element counts are documented in the README's counting conventions.
"""

from __future__ import annotations

from typing import Any

from .registry import aten, flop_rule, numel, packets, per_element

NORM_STATS = 3  # mean, centred square, its sum
NORM_APPLY = 2  # subtract mean, scale by rstd
NORM_AFFINE = 2  # weight multiply, bias add
NORM_BACKWARD = 9  # xhat, g*xhat, two sums, the combination for grad_input
SOFTMAX = 5  # max, subtract, exp, sum, divide (log_softmax: log and subtract)
SOFTMAX_BACKWARD = 4  # multiply, sum, subtract, multiply
LOG_ADD_EXP = 6  # ATen's _log_add_exp_helper: min, max, subtract, exp, log1p, add

# Position of the affine weight argument of each normalisation op, and whether it always
# computes batch statistics (None: read the ``training`` argument at position 5).
NORMS = {
    "native_batch_norm": (1, None),
    "_native_batch_norm_legit": (1, None),
    "_native_batch_norm_legit_functional": (1, None),
    "cudnn_batch_norm": (1, None),  # CUDA picks these kernels at the dispatcher level
    "miopen_batch_norm": (1, None),
    "_batch_norm_with_update": (1, True),
    "_batch_norm_with_update_functional": (1, True),
    "_batch_norm_no_update": (1, False),
    "native_layer_norm": (2, True),
    "native_group_norm": (1, True),
    "_fused_rms_norm": (2, True),
    "layer_norm": (2, True),  # composites seen whole under inference_mode
    "group_norm": (2, True),
}


def _norm_rule(weight_arg: int, statistics: bool | None):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        stats = NORM_STATS if (args[5] if statistics is None else statistics) else 0
        weight = args[weight_arg] if len(args) > weight_arg else kwargs.get("weight")
        return numel(args[0]) * (stats + NORM_APPLY + (NORM_AFFINE if weight is not None else 0))

    count.__doc__ = "Statistics (unless running ones are used), normalisation, affine: per input element."
    return count


for _name, (_weight_arg, _statistics) in NORMS.items():
    flop_rule("norm", *packets(_name))(_norm_rule(_weight_arg, _statistics))


@flop_rule("norm", aten.batch_norm)
def batch_norm_composite_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """``aten.batch_norm`` under inference_mode: batch statistics when training or without running ones."""
    training = args[5] or args[3] is None
    affine = NORM_AFFINE if args[1] is not None else 0
    return numel(args[0]) * ((NORM_STATS if training else 0) + NORM_APPLY + affine)


flop_rule(
    "norm",
    *packets("native_batch_norm_backward", "native_layer_norm_backward", "native_group_norm_backward",
             "batch_norm_backward", "_fused_rms_norm_backward", "cudnn_batch_norm_backward",
             "miopen_batch_norm_backward"),
)(per_element(NORM_BACKWARD))

flop_rule("softmax", aten._softmax, aten._log_softmax, aten._safe_softmax, aten.softmax, aten.log_softmax)(
    per_element(SOFTMAX)
)
flop_rule("softmax", aten._softmax_backward_data, aten._log_softmax_backward_data)(per_element(SOFTMAX_BACKWARD))

LOSS_PER_ELEMENT = {
    "mse_loss": 3,  # subtract, square, accumulate
    "mse_loss_backward": 3,
    "l1_loss": 3,
    "smooth_l1_loss": 4,
    "smooth_l1_loss_backward": 4,
    "huber_loss": 4,
    "huber_loss_backward": 4,
    "binary_cross_entropy": 6,  # two logs, two multiplies, a subtract, accumulate
    "binary_cross_entropy_backward": 5,
    "binary_cross_entropy_with_logits": 7,
    "soft_margin_loss": 4,
    "soft_margin_loss_backward": 4,
    "multilabel_margin_loss_forward": 3,
    "multilabel_margin_loss_backward": 3,
    "multi_margin_loss": 3,  # margin minus the target score, clamp, accumulate
    "multi_margin_loss_backward": 3,
    "kl_div": 4,
}
for _name, _n in LOSS_PER_ELEMENT.items():
    flop_rule("loss", *packets(_name))(per_element(_n, "largest"))

# Negative log-likelihood gathers and accumulates one value per target: the target's position.
NLL_TARGET_ARG = {"nll_loss_forward": 1, "nll_loss2d_forward": 1, "nll_loss_backward": 2, "nll_loss2d_backward": 2}


def _nll_rule(target_arg: int):
    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return numel(args[target_arg])

    count.__doc__ = "One gathered value accumulated per target."
    return count


for _name, _target_arg in NLL_TARGET_ARG.items():
    flop_rule("loss", *packets(_name))(_nll_rule(_target_arg))


def _ctc_lattice(input_lengths: Any, target_lengths: Any) -> int:
    """Nodes of the CTC lattice: each time step of each sequence meets 2 x label length + 1 states."""
    if not isinstance(input_lengths, (list, tuple)):
        input_lengths, target_lengths = input_lengths.tolist(), target_lengths.tolist()
    return sum(t * (2 * s + 1) for t, s in zip(input_lengths, target_lengths))


CTC_NODE = 2 * LOG_ADD_EXP + 1  # up to three predecessors: two log-add-exps, plus the emission


@flop_rule("loss", aten._ctc_loss)
def ctc_loss_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """The alpha recursion of Graves et al. (2006): 13 FLOPs per lattice node (ATen's log-space kernel)."""
    return CTC_NODE * _ctc_lattice(args[2], args[3])


@flop_rule("loss", aten._ctc_loss_backward)
def ctc_loss_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """The beta recursion (13 per node), alpha + beta folded into per-class sums (log-add-exp + add, 7
    per node), then the gradient per log-probability (exp, subtract, multiply: 3)."""
    return (CTC_NODE + LOG_ADD_EXP + 1) * _ctc_lattice(args[3], args[4]) + 3 * numel(args[1])


@flop_rule("elementwise", aten.native_dropout, aten.native_dropout_backward)
def dropout_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """The mask multiply (scaled): one per element."""
    return numel(args[0])


@flop_rule("embedding", aten.embedding_dense_backward, aten._embedding_bag_backward)
def embedding_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Scatter-adding each gradient row into the table."""
    return numel(args[0])


@flop_rule("embedding", aten._embedding_bag, aten._embedding_bag_forward_only, aten.embedding_bag)
def embedding_bag_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Each looked-up row is accumulated into its bag (sum, max) and, with per-sample weights,
    scaled first; mean divides each bag once."""
    weight, indices = args[0], args[1]
    mode = args[4] if len(args) > 4 else 0
    weighted = len(args) > 6 and args[6] is not None
    width = weight.shape[-1]
    bags = out[0].shape[0]
    return indices.numel() * width * (2 if weighted else 1) + (bags * width if mode == 1 else 0)


@flop_rule("embedding", aten._embedding_bag_per_sample_weights_backward)
def embedding_bag_weights_backward_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """The gradient of each per-sample weight: a dot product of its gradient row and table row."""
    return 2 * numel(args[2]) * args[1].shape[-1]

