"""Steady mode: exact counts at near-zero cost, because training steps repeat.

The work of a session is cut into segments at four boundaries: a root module's forward, the
return of a backward call, an optimizer step's start, and its end.
- A forward segment runs from a root forward to the next boundary: the forward, the loss and
  the backward, or an evaluation forward and its metrics. Its key is the forward's signature:
  input shapes, dtypes and devices, grad and inference mode, autocast state, per module and
  parameter the train/eval, requires_grad and has-a-gradient flags, and any explicit phase.
- An optimizer segment runs from the step's pre-hook to its post-hook. Its key is the forward
  segment before it (whose key holds the requires_grad and has-a-gradient flags that decide
  which parameters the backward gave gradients), the number of backwards since the last step,
  the groups' structural options and the state size.
- A gap runs from a backward's return or an optimizer step's end to the next boundary: gradient
  clipping and unscaling, zero_grad, the next batch's preprocessing. Its key is the segment
  before it and the number of backwards since the last optimizer step, so the clipping that
  follows only the last of several accumulated backwards has a key of its own.

The first time a key is seen its segment is intercepted in full and recorded. After that the
segment runs with no dispatch mode and no per-module hooks, and the record is credited to the
Ledger (an O(1) call). Every ``audit_every``-th occurrence of a key is intercepted again and
compared with the record; a difference is reported as a mismatch and the record replaced. The
assumption, checked by those audits, is that a key determines its segment's work.

Roots are the modules called outside any other module while intercepting; a module first
called as a root inside a replayed gap is caught there by a global forward pre-hook that
exists only while a gap is replayed (gaps call few modules), so a new model's first step is
intercepted. A root gets one forward pre-hook of its own and nothing else, so no per-module hook
runs in a replayed forward, backward or optimizer step.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any

import torch
from torch.nn.modules.loss import _Loss
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..ledger import Ledger, Record
from ..settings import Settings
from .dispatch import CountingMode
from .phases import OPTIMIZER, PhaseTracker, module_hooks, optimizer_hooks, remove

log = logging.getLogger("otel_flops")

_get_ident = threading.get_ident
_graph_task_id = torch._C._current_graph_task_id

MAX_RECORDS = 4096
MAX_BACKWARDS = 64  # backwards since the last optimizer step that gap keys tell apart
# Modules whose fast paths turn off when any hook is attached to them: they are never given a
# root hook (that would change which kernels run), so their calls draw no boundary.
HOOK_SENSITIVE: tuple[type, ...] = (torch.nn.TransformerEncoderLayer,)
_PLAIN = (int, float, bool, str, type(None))


def _value_signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return (value.shape, value.dtype, value.device, value.requires_grad)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_value_signature(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _value_signature(v)) for k, v in value.items())
    return type(value)


# Param-group options of torch's optimizers that change which ops a step runs.
STRUCTURAL_OPTIONS = (
    "weight_decay", "momentum", "dampening", "nesterov", "maximize", "amsgrad", "foreach", "fused",
    "capturable", "differentiable", "decoupled_weight_decay", "centered",
)


def _structural_options(group: dict) -> tuple:
    """Flags as they are; numbers as zero or not (a zero weight decay skips its ops, and a
    scheduler that cycles momentum must not make every step look new)."""
    return tuple([v == 0 if type(v) in (int, float) else v for v in map(group.get, STRUCTURAL_OPTIONS)])


def _autocast_state() -> tuple | None:
    if not torch._C._is_any_autocast_enabled():
        return None
    return tuple(
        (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)) for device in ("cpu", "cuda")
    )


class _Root:
    """A root module's serial number (ids are reused after GC) and its cached module/param lists."""

    serials = itertools.count()

    def __init__(self, module: torch.nn.Module) -> None:
        self.serial = next(self.serials)
        self.hooked = not isinstance(module, HOOK_SENSITIVE)
        self.refresh(module)

    def refresh(self, module: torch.nn.Module) -> None:
        self.modules = list(module.modules())
        self.params = list(module.parameters())

    def state(self) -> tuple:
        """Train/eval flags, and per parameter: trainable, and holding a gradient to accumulate into."""
        return (
            tuple([m.training for m in self.modules]),
            tuple([(p.requires_grad, p.grad is None) for p in self.params]),
        )


class _Segment:
    """A keyed segment's record, the times its key was seen, and a short id for gap keys."""

    ids = itertools.count()

    def __init__(self) -> None:
        self.record: Record | None = None
        self.seen = 0
        self.id = next(self.ids)


class SteadyCounting:
    """Intercepts each new segment once, then credits its record whenever its key repeats."""

    def __init__(self, ledger: Ledger, settings: Settings, roots: dict[int, str], alpha_profile: Any = None) -> None:
        self.ledger = ledger
        self.tracker = PhaseTracker(ledger, roots)
        self._mode = CountingMode(ledger, self.tracker, alpha_profile)
        self._audit_every = settings.audit_every
        self._segments: OrderedDict[Any, _Segment] = OrderedDict()
        # Keyed by id() for a plain dict lookup on the hot path; a finalizer drops dead entries.
        self._roots: dict[int, _Root] = {}
        self._root_hooks: list[Any] = []
        self._optimizers: dict[int, int] = {}
        # Param-group options per optimizer, re-read whenever a segment is being recorded: a
        # change between recordings (weight decay set to zero mid-run) shows up at the next audit.
        self._options: dict[int, tuple] = {}
        self._module_hooks: list[Any] = []
        self._optimizer_hooks: list[Any] = []
        self._key: Any = None  # the open keyed segment's key; None before the first boundary
        self._sink: Ledger | None = None  # the open keyed segment's own ledger while recording
        self._anchor = -1  # id of the last forward or optimizer segment: what a gap follows
        self._backwards = 0  # backward returns since the last optimizer step
        self._recording = False
        self._gap_watch: Any = None  # a global pre-hook while a gap is replayed: new roots start there
        self._owner = threading.get_ident()
        self._original_backward: Any = None
        self.counters = {"recorded": 0, "replayed": 0, "audited": 0, "mismatches": 0}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._owner = threading.get_ident()
        self._optimizer_hooks = optimizer_hooks(self._optimizer_pre, self._optimizer_post)
        self._original_backward = torch.autograd.backward
        torch.autograd.backward = self._wrap_backward(self._original_backward)
        self._mode.sink = self.ledger
        self._set_recording(True)  # until the first boundary, count straight into the ledger

    def stop(self) -> None:
        self._close_segment()
        self._set_recording(False)
        remove(self._optimizer_hooks)
        remove(self._root_hooks)
        torch.autograd.backward = self._original_backward

    def stats(self) -> dict[str, int]:
        return dict(self.counters, segments=len(self._segments))

    def _wrap_backward(self, backward: Any) -> Any:
        """``Tensor.backward`` goes through ``torch.autograd.backward``: its return is a boundary."""

        @functools.wraps(backward)
        def counted_backward(*args: Any, **kwargs: Any) -> Any:
            try:
                return backward(*args, **kwargs)
            finally:
                self._backward_returned()

        return counted_backward

    def _backward_returned(self) -> None:
        if self._on_owner_thread():
            self._backwards = min(self._backwards + 1, MAX_BACKWARDS)
            self._gap("backward")
            self.tracker.stage = OPTIMIZER  # after a backward, as the tracker itself would say

    def _on_owner_thread(self) -> bool:
        """Boundaries only count on the session's thread, outside the autograd engine."""
        return _get_ident() == self._owner and _graph_task_id() == -1

    # ------------------------------------------------------------------ hook events
    def _global_pre(self, module: torch.nn.Module, args: tuple) -> None:
        """While intercepting: find new roots, and keep the phase tracker informed."""
        if self.tracker.outside_modules and not isinstance(module, _Loss) and id(module) not in self._roots:
            root = self._add_root(module)
            if root.hooked:
                self._boundary(self._forward_key(root, args, {}))
        self.tracker.enter_module(module)

    def _gap_pre(self, module: torch.nn.Module, args: tuple) -> None:
        """A module no root hook knows, called in a replayed gap: a new root (a new model's first step)."""
        if isinstance(module, _Loss) or id(module) in self._roots or not self._on_owner_thread():
            return
        root = self._add_root(module)
        if root.hooked:
            self._boundary(self._forward_key(root, args, {}), entering=module)

    def _root_pre(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        root = self._roots.get(id(module))
        if root is not None and self._on_owner_thread():
            self._boundary(self._forward_key(root, args, kwargs), entering=module)

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if _get_ident() == self._owner:
            self._boundary(self._optimizer_key(optimizer))
        self.tracker.enter_optimizer()

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.tracker.exit_optimizer()
        if _get_ident() == self._owner:
            self._backwards = 0
            self._gap("optimizer")

    # ------------------------------------------------------------------ keys
    def _add_root(self, module: torch.nn.Module) -> _Root:
        root = self._roots[id(module)] = _Root(module)
        weakref.finalize(module, self._roots.pop, id(module), None)
        if root.hooked:
            self._root_hooks.append(module.register_forward_pre_hook(self._root_pre, with_kwargs=True))
        return root

    def _forget_optimizer(self, optimizer_id: int, serial: int) -> None:
        self._optimizers.pop(optimizer_id, None)
        self._options.pop(serial, None)

    def _forward_key(self, root: _Root, args: tuple, kwargs: dict) -> tuple:
        return (
            "forward",
            root.serial,
            _value_signature(args),
            _value_signature(kwargs) if kwargs else (),
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            _autocast_state(),
            root.state(),
            tuple(self.tracker.explicit),
        )

    def _optimizer_key(self, optimizer: Any) -> tuple:
        serial = self._optimizers.get(id(optimizer))
        if serial is None:
            serial = self._optimizers[id(optimizer)] = next(_Root.serials)
            weakref.finalize(optimizer, self._forget_optimizer, id(optimizer), serial)
        options = self._options.get(serial)
        if options is None or self._recording:
            options = self._options[serial] = tuple(_structural_options(g) for g in optimizer.param_groups)
        explicit = tuple(self.tracker.explicit)
        return ("optimizer", serial, len(optimizer.state), self._anchor, self._backwards, options, explicit)

    # ------------------------------------------------------------------ segments
    def _boundary(self, key: tuple, entering: torch.nn.Module | None = None) -> None:
        self._close_segment()
        self._open_segment(key, entering)

    def _gap(self, after: str) -> None:
        self._boundary(("gap", self._anchor, self._backwards, after, tuple(self.tracker.explicit)))

    def _open_segment(self, key: tuple, entering: torch.nn.Module | None) -> None:
        segment = self._segments.get(key)
        if segment is None:
            segment = self._segments[key] = _Segment()
            self._evict()
        segment.seen += 1
        self._key = key
        if key[0] != "gap":
            self._anchor = segment.id
        audit = segment.seen % self._audit_every == 0
        if segment.record is not None and not audit and (not self._recording or self._can_switch(on=False)):
            if self._recording:
                self._set_recording(False)
            self._sink = None
            self.ledger.credit(segment.record)
            self.counters["replayed"] += 1
            if key[0] == "gap" and key[3] == "optimizer":  # where a step ends, the next model may start
                self._gap_watch = torch.nn.modules.module.register_module_forward_pre_hook(self._gap_pre)
            return
        self._sink = Ledger()
        self._mode.sink = self._sink
        if entering is not None:
            self._roots[id(entering)].refresh(entering)
        self._set_recording(True, entering)
        if not self._recording:
            self._sink = None  # another dispatch mode is on top: this segment goes unrecorded

    def _close_segment(self) -> None:
        if self._gap_watch is not None:
            self._gap_watch.remove()
            self._gap_watch = None
        key, sink = self._key, self._sink
        self._key = None
        if key is None or sink is None:
            return  # before the first boundary (counted straight into the ledger), or replayed (credited)
        self._sink = None
        for op, n in sink.errors.items():
            self.ledger.add_error(op, n)
        record = sink.record()
        segment = self._segments.get(key)
        if segment is None:
            self.ledger.credit(record)
            return
        if segment.record is None:
            self.counters["recorded"] += 1
        else:
            self.counters["audited"] += 1
            if not segment.record.same_counts(record):
                self.counters["mismatches"] += 1
                log.warning("otel-flops: a steady-mode audit found different counts for a repeated step "
                            "(%s); re-traced it", key[0])
            self.ledger.fold(segment.record)
        segment.record = record
        self.ledger.credit(record)

    def _evict(self) -> None:
        while len(self._segments) > MAX_RECORDS:
            _, old = self._segments.popitem(last=False)
            if old.record is not None:
                self.ledger.fold(old.record)

    # ------------------------------------------------------------------ interception on/off
    def _can_switch(self, on: bool) -> bool:
        """Only push or pop our mode when no other dispatch mode sits above it."""
        if on == self._recording:
            return True
        top = _get_current_dispatch_mode()
        return top is self._mode if not on else top is None

    def _set_recording(self, on: bool, entering: torch.nn.Module | None = None) -> None:
        if on == self._recording:
            return
        if not self._can_switch(on):
            return
        if on:
            self.tracker.reset()
            self._module_hooks = module_hooks(self._global_pre, self.tracker.exit_module)
            self._mode.__enter__()
            if entering is not None:
                self.tracker.enter_module(entering)  # its global pre-hook was not called yet
        else:
            self._mode.__exit__(None, None, None)
            remove(self._module_hooks)
        self._recording = on
