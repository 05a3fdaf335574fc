"""Which phase of a training step an op belongs to, detected with no help from the user.

- backward: the op runs inside an autograd graph task (the engine itself says so);
- an explicit ``otel_flops.phase(name)`` block;
- optimizer: between the global optimizer step pre- and post-hooks;
- loss: inside a loss module (``nn.modules.loss._Loss``), or an ATen loss op;
- forward / inference: inside a model's forward, with grad enabled / disabled;
- outside every module the step's stage decides: after a grad-enabled forward it is ``loss``
  (``F.cross_entropy(model(x), y)``), after a backward ``optimizer`` (gradient clipping,
  unscaling), and otherwise ``preprocessing`` (tensor work on the next batch).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.nn.modules.loss import _Loss
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from ..ledger import Ledger
from ..precision import module_bits

PREPROCESSING, FORWARD, INFERENCE, LOSS, BACKWARD, OPTIMIZER = (
    "preprocessing", "forward", "inference", "loss", "backward", "optimizer"
)

_current_graph_task_id = torch._C._current_graph_task_id


class PhaseTracker:
    """Global module and optimizer hooks that keep the current phase, model and quantized bits."""

    def __init__(self, ledger: Ledger, names: dict[int, str] | None = None) -> None:
        self._ledger = ledger
        self._names = names or {}
        self.explicit: list[str] = []
        self.stage = PREPROCESSING
        self.model = "none"
        self.loss_depth = 0
        self.optimizer_depth = 0
        # One entry per open model-module forward: the quantized bits in force there, or None.
        self.module_bits: list[int | None] = []
        self._bits_cache: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
        self._handles: list[Any] = []

    def install(self) -> None:
        module_hooks = torch.nn.modules.module
        self._handles = [
            module_hooks.register_module_forward_pre_hook(self._enter_module),
            module_hooks.register_module_forward_hook(self._exit_module, always_call=True),
            register_optimizer_step_pre_hook(self._enter_optimizer),
            register_optimizer_step_post_hook(self._exit_optimizer),
        ]

    def uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def current(self) -> str:
        if _current_graph_task_id() != -1:
            self.stage = OPTIMIZER
            return BACKWARD
        if self.explicit:
            return self.explicit[-1]
        if self.optimizer_depth:
            return OPTIMIZER
        if self.loss_depth:
            return LOSS
        if self.module_bits:
            return FORWARD if torch.is_grad_enabled() else INFERENCE
        return self.stage

    @property
    def quantized_bits(self) -> int | None:
        return self.module_bits[-1] if self.module_bits else None

    def _bits_of(self, module: torch.nn.Module) -> int | None:
        try:
            return self._bits_cache[module]
        except KeyError:
            bits = self._bits_cache[module] = module_bits(module)
            return bits

    def _enter_module(self, module: torch.nn.Module, args: Any) -> None:
        if isinstance(module, _Loss):
            self.loss_depth += 1
            return
        if not self.module_bits:
            self.model = self._names.get(id(module)) or type(module).__name__
            self.optimizer_depth = 0  # a step that raised never ran its post-hook
        own = self._bits_of(module)
        self.module_bits.append(own if own is not None else self.quantized_bits)

    def _exit_module(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, _Loss):
            self.loss_depth = max(0, self.loss_depth - 1)
            return
        if self.module_bits:
            self.module_bits.pop()
        if not self.module_bits:
            self.stage = LOSS if torch.is_grad_enabled() else PREPROCESSING

    def _enter_optimizer(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.optimizer_depth += 1

    def _exit_optimizer(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.optimizer_depth = max(0, self.optimizer_depth - 1)
        self.stage = PREPROCESSING
        self._ledger.add_step()
