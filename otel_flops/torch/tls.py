"""Pushing and popping a dispatch mode anywhere, with torch's thread-local state left right.

Pushing the first dispatch mode includes the ``Python`` dispatch key in the thread's local key
set, and popping the last one removes it. ``torch.inference_mode`` (enabled or not) saves the
whole local key set when its block starts and restores it when the block ends. So a mode
popped inside a block that started with it pushed leaves the key included over an empty mode
stack once the block ends, and the next tensor op fails inside torch ("Hit Python dispatch key
but no arguments had PyInterpreter"); a mode pushed inside such a block goes silent when the
block ends.

Steady mode switches its mode at training-step boundaries, which can sit inside such a block
(a serving loop under ``inference_mode``). ``push`` and ``pop`` therefore note each switch,
and the end of an ``inference_mode`` block in which a switch happened brings the key back in
line with the mode stack (included exactly when a mode is pushed). Blocks with no switch in
them are left exactly as torch leaves them. The wrapper on ``inference_mode``'s enter and exit
is installed at the first push and stays: it costs one integer comparison per block.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import torch
from torch.autograd.grad_mode import inference_mode
from torch.utils._python_dispatch import TorchDispatchMode

_PYTHON_KEYS = (torch._C.DispatchKey.Python, torch._C.DispatchKey.PythonTLSSnapshot)
_EPOCH = "_otel_flops_switches"  # set on each inference_mode object at its block's start
_state = threading.local()
_install_lock = threading.Lock()
_installed = False


def _switches() -> int:
    return getattr(_state, "switches", 0)


def _note_switch() -> None:
    _state.switches = _switches() + 1


def resync() -> None:
    """Include the Python dispatch keys exactly when a dispatch mode is pushed on this thread."""
    pushed = torch._C._len_torch_dispatch_stack() > 0
    if torch._C._dispatch_tls_is_dispatch_key_included(_PYTHON_KEYS[0]) != pushed:
        for key in _PYTHON_KEYS:
            torch._C._dispatch_tls_set_dispatch_key_included(key, pushed)


def _install() -> None:
    global _installed
    with _install_lock:
        if _installed:
            return
        enter, exit_ = inference_mode.__enter__, inference_mode.__exit__

        @functools.wraps(enter)
        def entered(self: Any) -> None:
            enter(self)
            setattr(self, _EPOCH, _switches())

        @functools.wraps(exit_)
        def exited(self: Any, *exc: Any) -> None:
            exit_(self, *exc)
            if getattr(self, _EPOCH, None) not in (None, _switches()):
                resync()

        inference_mode.__enter__, inference_mode.__exit__ = entered, exited
        _installed = True


def push(mode: TorchDispatchMode) -> None:
    """Enter ``mode`` (on top of the dispatch stack), wherever the caller is."""
    _install()
    _note_switch()
    mode.__enter__()


def pop(mode: TorchDispatchMode) -> None:
    """Exit ``mode``, which must be on top of the dispatch stack."""
    _note_switch()
    mode.__exit__(None, None, None)
