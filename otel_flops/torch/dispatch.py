"""The counting TorchDispatchMode: every ATen op becomes one count event in the Ledger.

The op runs first and its result is returned untouched, so outputs stay bitwise identical.
Counting is contained: a rule that raises is counted and logged once per op, never re-raised.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _get_dispatch_stack_at

from ..analysis.alpha import terms as alpha_terms
from ..containment import Containment
from ..ledger import CountKey, Ledger, Totals
from ..precision import dtype_bits, dtype_name
from . import dtensor
from .phases import BACKWARD, PhaseTracker, loss_phase
from .rules import RuleFn, resolve

FRAMEWORK = "torch"
_current_autograd_node = torch._C._current_autograd_node
_stack_len = torch._C._len_torch_dispatch_stack
_stack_at = _get_dispatch_stack_at
ALPHA_FAMILIES = ("conv", "matmul")


def _op_name(func: Any) -> str:
    packet = getattr(func, "overloadpacket", func)
    return str(packet)


class CountingMode(TorchDispatchMode):
    """Counts FLOPs and BOPs of every op it sees into a Ledger."""

    def __init__(self, sink: Ledger, phases: PhaseTracker, alpha_profile: Any = None) -> None:
        super().__init__()
        self.alpha_profile = alpha_profile  # with one, convolutions and dense products get a predicted time
        self.sink = sink  # where counts go; steady mode points it at a segment's own ledger
        self._phases = phases
        # Per op overload: (op name, family, rule, collective bytes, width), or None when the op has no rule.
        self._rules: dict[Any, tuple[str, str, RuleFn, Any, Any] | None] = {}
        self._dtypes: dict[Any, tuple[str, int]] = {}
        self._devices: dict[Any, str] = {}
        self.containment = Containment()
        self.paused = 0  # > 0 inside a compiled graph, whose work is credited from the graph (compiled.py)
        self.sharded = False  # a DTensor op was seen: its sharding propagation's fake ops are skipped

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        """Let Dynamo compile under this mode (it skips a frame for good under any other mode)."""
        return True

    @property
    def tracker(self) -> PhaseTracker:
        return self._phases

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if types and dtensor.delegated(types):
            self.sharded = True
            return NotImplemented  # DTensor runs it on the local shards, and those ops come back here
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused or (self.sharded and dtensor.propagating()):
            return out
        try:
            self._count(func, args, kwargs, out)
        except Exception:
            self.contain(_op_name(func))
        return out

    def _rule(self, func: Any) -> tuple[str, str, RuleFn, Any, Any] | None:
        try:
            return self._rules[func]
        except KeyError:
            rule = resolve(func)
            entry = self._rules[func] = (
                (_op_name(func), rule.family, rule.count, rule.comm_bytes, rule.width) if rule else None
            )
            return entry

    def _count(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        entry = self._rule(func)
        if entry is None:
            self.sink.add_uncounted(_op_name(func))
            return
        op, family, count, comm_bytes, width = entry
        flops = count(args, kwargs, out)
        operand = _widest_operand(args, out)
        if operand is None:
            dtype, bits, device = "none", 0, "none"
        else:
            dtype, bits = self._dtype(operand.dtype if width is None else width(args, kwargs))
            device = self._device(operand.device)
        phases = self._phases
        phase = phases.current()
        if family == "loss" and phase != BACKWARD:
            phase = loss_phase()
        model, module = phases.model, phases.module
        if phase == BACKWARD:
            node = _current_autograd_node()
            model, module = phases.backward_module(node)
            if phases.backward_bits:
                bits = phases.backward_bits.get(node, bits)
        elif phases.quantized_bits is not None:
            bits = phases.quantized_bits
        key = CountKey(FRAMEWORK, phase, op, family, dtype, bits, device, model, module)
        if self.alpha_profile is not None and family in ALPHA_FAMILIES:
            alpha_flops, predicted_ns = alpha_terms(self.alpha_profile, family, op, args, out, flops)
            self.sink.add_totals(key, Totals(flops, flops * bits, 1, 0, alpha_flops, predicted_ns))
            return
        self.sink.add(key, flops, flops * bits, 1, comm_bytes(args) if comm_bytes else 0)

    def _dtype(self, dtype: torch.dtype) -> tuple[str, int]:
        try:
            return self._dtypes[dtype]
        except KeyError:
            entry = self._dtypes[dtype] = (dtype_name(dtype), dtype_bits(dtype))
            return entry

    def _device(self, device: torch.device) -> str:
        try:
            return self._devices[device]
        except KeyError:
            label = self._devices[device] = str(device)
            return label

    def contain(self, op: str) -> None:
        """Count and log (once per op) a failure of our own; the user's work goes on."""
        self.containment.failed(op, "the op ran normally, uncounted", ledger=self.sink)


def counting_mode() -> CountingMode | None:
    """The innermost counting mode on this thread's dispatch stack, if any."""
    for i in range(_stack_len() - 1, -1, -1):
        mode = _stack_at(i)
        if isinstance(mode, CountingMode):
            return mode
    return None


def _widest_operand(args: tuple, out: Any) -> torch.Tensor | None:
    """The widest floating-point input, per the mixed-width convention.

    Integer inputs are indices (embedding, nll targets) unless nothing else is there, as in
    ``_int_mm``; an op with no tensor input (a factory) is described by its output.
    """
    best, best_rank = None, (False, -1)
    for a in args:
        if isinstance(a, (list, tuple)):
            a = a[0] if a else None
        if isinstance(a, torch.Tensor):
            rank = (a.dtype.is_floating_point, a.dtype.itemsize)
            if rank > best_rank:
                best, best_rank = a, rank
    if best is None:
        first = out[0] if isinstance(out, (list, tuple)) and out else out
        return first if isinstance(first, torch.Tensor) else None
    return best
