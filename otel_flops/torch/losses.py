"""The loss phase by what the code does: ops inside a loss function are ``loss`` wherever it is called.

A loss computed inside a model's forward (a Hugging Face model called with ``labels=``, whose
``loss_function`` calls ``F.cross_entropy``; a model that applies ``nn.CrossEntropyLoss`` itself)
would otherwise count as ``forward``, and only the ATen loss op itself (the NLL) as ``loss``,
leaving the log-softmax in ``forward``. So while a session runs, the loss functions of
``torch.nn.functional`` named in ``LOSS_FUNCTIONS`` are wrapped: inside them the calling
thread's phase tracker says ``loss``. Their backward stays ``backward`` (the tracker puts every
op the autograd engine runs there).

The wrapper calls the original function once, with the same arguments, and returns its result:
it only raises and lowers a depth counter around it. A function compiled by ``torch.compile``
before the first session that called one of these is recompiled once (Dynamo guards on the
function object; the wrappers are made once per process, so later sessions reuse that variant);
inside compiled code the wrapper does nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .dispatch import counting_mode

_is_compiling = torch.compiler.is_compiling

# The loss functions of torch.nn.functional (torch's nn.modules.loss classes call these).
LOSS_FUNCTIONS = (
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "cosine_embedding_loss", "cross_entropy",
    "ctc_loss", "gaussian_nll_loss", "hinge_embedding_loss", "huber_loss", "kl_div", "l1_loss",
    "margin_ranking_loss", "mse_loss", "multi_margin_loss", "multilabel_margin_loss",
    "multilabel_soft_margin_loss", "nll_loss", "poisson_nll_loss", "smooth_l1_loss", "soft_margin_loss",
    "triplet_margin_loss", "triplet_margin_with_distance_loss",
)


def _tracker_here() -> Any:
    """The phase tracker of the counting mode on this thread, or None (none pushed, or compiling)."""
    if _is_compiling():
        return None
    try:
        mode = counting_mode()
    except Exception:
        return None
    return mode.tracker if mode is not None else None


def _marked(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def loss_function(*args: Any, **kwargs: Any) -> Any:
        tracker = _tracker_here()
        if tracker is None:
            return fn(*args, **kwargs)
        tracker.loss_depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            tracker.loss_depth = max(0, tracker.loss_depth - 1)

    loss_function.__wrapped_loss__ = fn  # type: ignore[attr-defined]
    return loss_function


# One wrapper per original for the life of the process: Dynamo guards on the function objects a
# compiled frame calls, so a new wrapper per session would recompile those frames every session.
_wrappers: dict[Callable[..., Any], Callable[..., Any]] = {}


def _wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    if fn not in _wrappers:
        _wrappers[fn] = _marked(fn)
    return _wrappers[fn]


def mark_loss_functions() -> Callable[[], None]:
    """Wrap the loss functions of ``torch.nn.functional``; returns the function that unwraps them."""
    originals = {name: getattr(F, name) for name in LOSS_FUNCTIONS if hasattr(F, name)}
    originals = {name: fn for name, fn in originals.items() if not hasattr(fn, "__wrapped_loss__")}
    wrapped = {name: _wrapper(fn) for name, fn in originals.items()}
    for name, fn in wrapped.items():
        setattr(F, name, fn)

    def unmark() -> None:
        for name, fn in wrapped.items():
            if getattr(F, name) is fn:
                setattr(F, name, originals[name])

    return unmark


def loss_functions() -> set[Callable[..., Any]]:
    """The loss functions themselves (unwrapped): what a compiled graph's nodes call."""
    found = (getattr(F, name, None) for name in LOSS_FUNCTIONS)
    return {getattr(fn, "__wrapped_loss__", fn) for fn in found if fn is not None}
