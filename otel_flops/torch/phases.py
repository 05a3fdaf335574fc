"""Which phase of a training step an op belongs to, detected with no help from the user.

- backward: the op runs inside an autograd graph task (the engine itself says so);
- an explicit ``otel_flops.phase(name)`` block;
- optimizer: between the global optimizer step pre- and post-hooks;
- loss: inside a loss module (``nn.modules.loss._Loss``), or an ATen loss op;
- forward / inference: inside a model's forward, as its outermost module started with grad
  enabled / disabled (a block under ``no_grad`` inside a training forward, as reentrant
  activation checkpointing runs, is still forward);
- outside every module the step's stage decides: after a grad-enabled forward it is ``loss``
  (``F.cross_entropy(model(x), y)``), after a backward ``optimizer`` (gradient clipping,
  unscaling), and otherwise ``preprocessing`` (tensor work on the next batch).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.nn.modules.loss import _Loss

from ..containment import Containment, contained
from ..ledger import Ledger
from ..precision import module_bits
from . import relays

PREPROCESSING, FORWARD, INFERENCE, LOSS, BACKWARD, OPTIMIZER = (
    "preprocessing", "forward", "inference", "loss", "backward", "optimizer"
)

_current_graph_task_id = torch._C._current_graph_task_id


class PhaseTracker:
    """The current phase, model and quantized bits, fed by module and optimizer hook events.

    It installs nothing itself: the counting mode in use decides which hooks feed it and when.
    """

    def __init__(self, ledger: Ledger, names: dict[int, str] | None = None) -> None:
        self.ledger = ledger  # where completed optimizer steps are counted
        self.containment = Containment(ledger)  # failures of the hooks below: the session's errors
        # Told when an explicit phase block opens (True) or closes (False): steady mode's boundaries.
        self.on_phase: Callable[[bool], None] = _nothing
        self._names = names or {}
        self.explicit: tuple[str, ...] = ()  # open phase() blocks, innermost last (a tuple: part of keys)
        self.model = "none"
        self.optimizer_depth = 0
        self._bits_cache: weakref.WeakKeyDictionary[Any, int | None] = weakref.WeakKeyDictionary()
        # Autograd nodes a quantized module's forward created, and its bits: their backward ops
        # are that module's work too. Held for one step (cleared at the next root forward).
        self.backward_bits: dict[Any, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget open modules: used when the hooks that track them were off for a while."""
        self.stage = PREPROCESSING
        self.loss_depth = 0
        self.root_grad = True  # grad mode when the outermost open module started
        # One entry per open model-module forward: the quantized bits in force there, or None.
        self.module_bits: list[int | None] = []

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
            return FORWARD if self.root_grad else INFERENCE
        return self.stage

    @property
    def quantized_bits(self) -> int | None:
        return self.module_bits[-1] if self.module_bits else None

    @property
    def outside_modules(self) -> bool:
        return not self.module_bits and not self.loss_depth

    def _bits_of(self, module: torch.nn.Module) -> int | None:
        try:
            return self._bits_cache[module]
        except KeyError:
            bits = self._bits_cache[module] = self._probe_bits(module)
            return bits

    @contained("precision probe", "the module's ops take their dtype's bits")
    def _probe_bits(self, module: torch.nn.Module) -> int | None:
        return module_bits(module)  # reads attributes of the user's module (a property may raise)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """``otel_flops.phase(name)``: the ops in the block are ``name``'s."""
        outer = self.explicit
        self.explicit = (*outer, name)
        self.on_phase(True)
        try:
            yield
        finally:
            self.explicit = outer
            self.on_phase(False)

    @contained("module forward pre-hook", "the module's ops may get the wrong phase")
    def enter_module(self, module: torch.nn.Module, args: Any = None) -> None:
        if isinstance(module, _Loss):
            self.loss_depth += 1
            return
        if not self.module_bits:
            model = module._modules.get("_orig_mod", module)  # torch.compile's OptimizedModule: its model
            self.model = self._names.get(id(module)) or self._names.get(id(model)) or type(model).__name__
            self.optimizer_depth = 0  # a step that raised never ran its post-hook
            self.backward_bits.clear()
            self.root_grad = torch.is_grad_enabled()
        own = self._bits_of(module)
        self.module_bits.append(own if own is not None else self.quantized_bits)

    @contained("module forward hook", "the module's ops may get the wrong phase")
    def exit_module(self, module: torch.nn.Module, args: Any = None, output: Any = None) -> None:
        if isinstance(module, _Loss):
            self.loss_depth = max(0, self.loss_depth - 1)
            return
        if self.module_bits:
            self.module_bits.pop()
        own = self._bits_of(module)
        if own is not None and torch.is_grad_enabled():
            self._mark_backward(args, output, own)
        if not self.module_bits:
            self.stage = LOSS if torch.is_grad_enabled() else PREPROCESSING

    def _mark_backward(self, args: Any, output: Any, bits: int) -> None:
        """Walk the graph from the module's outputs back to its inputs, marking every node."""
        inputs = {t.grad_fn for t in _tensors_in(args) if t.grad_fn is not None}
        frontier = [t.grad_fn for t in _tensors_in(output) if t.grad_fn is not None]
        while frontier:
            node = frontier.pop()
            if node in inputs or node in self.backward_bits:
                continue
            self.backward_bits[node] = bits
            frontier.extend(n for n, _ in node.next_functions if n is not None)

    @contained("optimizer step pre-hook", "the step's ops may get the wrong phase")
    def enter_optimizer(self, optimizer: Any = None, args: Any = None, kwargs: Any = None) -> None:
        self.optimizer_depth += 1

    @contained("optimizer step hook", "the step may be missing from the step count")
    def exit_optimizer(self, optimizer: Any = None, args: Any = None, kwargs: Any = None) -> None:
        self.optimizer_depth = max(0, self.optimizer_depth - 1)
        self.stage = PREPROCESSING
        self.ledger.add_step()


def _nothing(opening: bool) -> None:
    return None


def _tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors_in(v)]
    return []


def module_hooks(pre: Any, post: Any) -> list[Any]:
    """Global forward pre- and post-hooks on every nn.Module (through relays: stable for
    torch.compile); returns their handles."""
    return [relays.MODULE_PRE.attach(pre), relays.MODULE_POST.attach(post)]


def optimizer_hooks(pre: Any, post: Any) -> list[Any]:
    """Global optimizer step pre- and post-hooks (through relays); returns their handles."""
    return [relays.OPTIMIZER_PRE.attach(pre), relays.OPTIMIZER_POST.attach(post)]


def remove(handles: list[Any]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()
