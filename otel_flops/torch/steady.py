"""Steady mode: exact counts at near-zero cost, because training steps repeat.

The work of a session is cut into segments at two boundaries, a root module's forward and an
optimizer step's start, so a plain training step is two segments:
- A forward segment runs from a root forward to the next boundary: the forward, the loss, the
  backward and what follows it (gradient clipping, the next micro-batch's data), or an
  evaluation forward and its metrics. Its key is the forward's signature: input shapes, dtypes
  and devices, grad and inference mode, autocast state, per module and parameter the
  train/eval, requires_grad and has-a-gradient flags, any explicit phase, and the number of
  backwards since the last optimizer step (so the clipping that follows only the last of
  several accumulated micro-batches has a key of its own).
- An optimizer segment runs from the step's pre-hook to the next boundary: the step, zero_grad
  and the next batch's preprocessing. Its key is the forward segment before it (whose key holds
  the flags that decide which parameters the backward gave gradients), the number of backwards
  since the last step, the groups' structural options and the state size.

The first time a key is seen its segment is intercepted in full and recorded (its counts reach
the session's Ledger as they happen). After that the segment runs with no dispatch mode and no
per-module hooks, and the record is credited to the Ledger (an O(1) call). Every
``audit_every``-th occurrence of a key is intercepted again and compared with the record; a
difference is reported as a mismatch and the record replaced. The assumption, checked by those
audits, is that a key determines its segment's work. Work before
the next batch's forward that depends on that batch's shapes (preprocessing a shorter last
batch in the training loop) is the one case a key cannot see in advance: the audits report it.

Roots are the modules called outside any other module while intercepting; a module first
called as a root after a replayed optimizer step is caught there by a global forward pre-hook
that is armed only from a replayed optimizer step to the next boundary (that stretch calls few
modules), so a new model's first step is intercepted. A root gets one forward pre-hook of its
own and nothing else, so no per-module hook runs in a replayed forward, backward or step.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import operator
import threading
import types
import weakref
from collections import OrderedDict
from itertools import chain, repeat
from typing import Any

import torch
from torch.nn.modules.loss import _Loss
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..ledger import Ledger, Record
from ..settings import Settings
from .dispatch import CountingMode
from .phases import PhaseTracker, module_hooks, optimizer_hooks, remove

log = logging.getLogger("otel_flops")

# Bound once: the hooks below run on every step.
Tensor = torch.Tensor
_get_ident = threading.get_ident
_graph_task_id = torch._C._current_graph_task_id
_grad_enabled = torch.is_grad_enabled
_inference_mode = torch.is_inference_mode_enabled
_any_autocast = torch._C._is_any_autocast_enabled
_register_global_pre_hook = torch.nn.modules.module.register_module_forward_pre_hook
_training = operator.attrgetter("training")
_requires_grad = operator.attrgetter("requires_grad")
_grad = operator.attrgetter("grad")

MAX_RECORDS = 4096
MAX_BACKWARDS = 64  # backwards since the last optimizer step that keys tell apart
# Modules whose fast paths turn off when any hook is attached to them: they are never given a
# root hook (that would change which kernels run), so their calls draw no boundary.
HOOK_SENSITIVE: tuple[type, ...] = (torch.nn.TransformerEncoderLayer,)
_PLAIN = (int, float, bool, str, type(None))


def _value_signature(value: Any) -> Any:
    if isinstance(value, Tensor):  # as in SteadyCounting._forward_key, which inlines this case
        return (value.shape, value.dtype, value.device, value.requires_grad)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(map(_value_signature, value))
    if isinstance(value, dict):
        return tuple(zip(value, map(_value_signature, value.values())))
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


def _autocast_state() -> tuple:
    return tuple(
        (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)) for device in ("cpu", "cuda")
    )


class _Root:
    """A root module's serial number (ids are reused after GC) and its cached module/param lists."""

    serials = itertools.count()

    def __init__(self, module: torch.nn.Module) -> None:
        self.serial = next(self.serials)
        self.hooked = not isinstance(module, HOOK_SENSITIVE)
        self.module = weakref.ref(module)
        self.refresh(module)

    def refresh(self, module: torch.nn.Module) -> None:
        self.modules = [m for m in module.modules() if reads_training(type(m))]
        self.params = list(module.parameters())


@functools.cache
def reads_training(cls: type) -> bool:
    """Whether a module class's own code reads ``training``: only such modules' train/eval flags
    can change what they compute, so only theirs enter the key (a Linear's or a ReLU's do not).
    Code that cannot be read (compiled, scripted) counts as reading it."""
    try:
        return any(
            _code_reads_training(value)
            for klass in cls.__mro__ if klass not in (torch.nn.Module, object)
            for value in vars(klass).values()
        )
    except Exception:  # an odd class attribute must not break the user's step: assume it reads it
        return True


def _code_reads_training(value: Any) -> bool:
    value = getattr(value, "__func__", None) or getattr(value, "fget", None) or value
    value = inspect.unwrap(value) if callable(value) else value
    if isinstance(value, type) or not callable(value):
        return False
    code = getattr(value, "__code__", None)
    return code is None or _names_training(code)


def _names_training(code: types.CodeType) -> bool:
    return "training" in code.co_names or any(
        const == "training" or (isinstance(const, types.CodeType) and _names_training(const))
        for const in code.co_consts
    )


class _Segment:
    """A keyed segment's record, the times its key was seen, and a short id for optimizer keys."""

    __slots__ = ("record", "seen", "id")
    ids = itertools.count()

    def __init__(self) -> None:
        self.record: Record | None = None
        self.seen = 0
        self.id = next(self.ids)


class _Optimizer:
    """An optimizer's serial number (ids are reused after GC) and its groups' structural options,
    re-read whenever a segment is being recorded: a change between recordings (weight decay set
    to zero mid-run) shows up at the next audit."""

    __slots__ = ("serial", "options")

    def __init__(self, optimizer: Any) -> None:
        self.serial = next(_Root.serials)
        self.read_options(optimizer)

    def read_options(self, optimizer: Any) -> None:
        self.options = tuple(_structural_options(group) for group in optimizer.param_groups)


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
        self._optimizers: dict[int, _Optimizer] = {}
        self._module_hooks: list[Any] = []
        self._optimizer_hooks: list[Any] = []
        self._key: Any = None  # the key of the segment being recorded
        self._sink: Ledger | None = None  # its own ledger, while it is recorded
        self._anchor = -1  # id of the last forward segment: what an optimizer step follows
        self._backwards = 0  # backward returns since the last optimizer step
        self._recording = False
        # A global forward pre-hook, armed after a replayed optimizer step by putting it in
        # torch's hook dict under a handle's id (cheaper than a new handle every step).
        self._watch = self._watch_pre
        handle = _register_global_pre_hook(self._watch)
        self._watched_hooks, self._watch_id = handle.hooks_dict_ref(), handle.id
        handle.remove()
        self._watching = False
        self._owner = threading.get_ident()
        self._original_backward: Any = None
        self.counters = {"recorded": 0, "audited": 0, "mismatches": 0, "unrecorded": 0}
        self._evicted_seen = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start, or start again after ``stop`` with the roots and records found so far."""
        self._owner = threading.get_ident()
        for root in self._roots.values():
            module = root.module()
            if module is not None:
                self._hook_root(root, module)
        self._optimizer_hooks = optimizer_hooks(self._optimizer_pre, self._optimizer_post)
        self._original_backward = torch.autograd.backward
        torch.autograd.backward = self._wrap_backward(self._original_backward)
        self._mode.sink = self.ledger
        self._set_recording(True)  # until the first boundary, count straight into the ledger

    def stop(self) -> None:
        self._disarm_watch()
        if self._sink is not None:
            self._close_recording()
        self._set_recording(False)
        remove(self._optimizer_hooks)
        remove(self._root_hooks)
        torch.autograd.backward = self._original_backward

    def stats(self) -> dict[str, int]:
        seen = sum(segment.seen for segment in self._segments.values()) + self._evicted_seen
        counters = self.counters
        replayed = seen - counters["recorded"] - counters["audited"] - counters["unrecorded"]
        return dict(counters, replayed=replayed, segments=len(self._segments))

    def _wrap_backward(self, backward: Any) -> Any:
        """``Tensor.backward`` goes through ``torch.autograd.backward``: it counts the backwards."""

        @functools.wraps(backward)
        def counted_backward(*args: Any, **kwargs: Any) -> Any:
            try:
                return backward(*args, **kwargs)
            finally:
                if self._backwards < MAX_BACKWARDS and _get_ident() == self._owner and _graph_task_id() == -1:
                    self._backwards += 1

        return counted_backward

    # ------------------------------------------------------------------ hook events
    # These run on every step, with the CPU caches cold from the step's own work: what a
    # replayed step runs is kept to few calls and few bytecodes, since each one shows there.
    def _global_pre(self, module: torch.nn.Module, args: tuple) -> None:
        """While intercepting: find new roots, and keep the phase tracker informed."""
        if self.tracker.outside_modules and not isinstance(module, _Loss) and id(module) not in self._roots:
            root = self._add_root(module)
            if root.hooked:
                self._anchor = self._boundary(self._forward_key(root, args, {}))
        self.tracker.enter_module(module)

    def _watch_pre(self, module: torch.nn.Module, args: tuple) -> None:
        """A module no root hook knows, called after a replayed step: a new root (a new model's first step)."""
        if isinstance(module, _Loss) or id(module) in self._roots or _get_ident() != self._owner:
            return
        if _graph_task_id() == -1:
            root = self._add_root(module)
            if root.hooked:
                self._anchor = self._boundary(self._forward_key(root, args, {}), module)

    def _root_pre(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        root = self._roots.get(id(module))
        if root is not None and _get_ident() == self._owner and _graph_task_id() == -1:
            self._anchor = self._boundary(self._forward_key(root, args, kwargs), module)

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if _get_ident() == self._owner:
            state = self._optimizers.get(id(optimizer)) or self._add_optimizer(optimizer)
            if self._recording:
                state.read_options(optimizer)
            self._boundary(("optimizer", state.serial, state.options, len(optimizer.state), self._anchor,
                            self._backwards, self.tracker.explicit))
            self._backwards = 0
            if not self._recording:  # a replayed step: the next model may start after it
                self._watched_hooks[self._watch_id] = self._watch
                self._watching = True
        if self._recording:
            self.tracker.enter_optimizer()

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._recording:  # a replayed step's record counts the step
            self.tracker.exit_optimizer()

    # ------------------------------------------------------------------ keys
    def _add_root(self, module: torch.nn.Module) -> _Root:
        root = self._roots[id(module)] = _Root(module)
        weakref.finalize(module, self._roots.pop, id(module), None)
        self._hook_root(root, module)
        return root

    def _hook_root(self, root: _Root, module: torch.nn.Module) -> None:
        if root.hooked:
            self._root_hooks.append(module.register_forward_pre_hook(self._root_pre, with_kwargs=True))

    def _add_optimizer(self, optimizer: Any) -> _Optimizer:
        state = self._optimizers[id(optimizer)] = _Optimizer(optimizer)
        weakref.finalize(optimizer, self._optimizers.pop, id(optimizer), None)
        return state

    def _forward_key(self, root: _Root, args: tuple, kwargs: dict) -> tuple:
        params = root.params
        return (
            "forward",
            root.serial,
            tuple([(a.shape, a.dtype, a.device, a.requires_grad) if isinstance(a, Tensor) else _value_signature(a)
                   for a in args]),
            _value_signature(kwargs) if kwargs else (),
            _grad_enabled(),
            _inference_mode(),
            _autocast_state() if _any_autocast() else None,
            bytes(chain(map(_training, root.modules), map(_requires_grad, params),
                        map(operator.is_, map(_grad, params), repeat(None)))),
            self.tracker.explicit,
            self._backwards,
        )

    # ------------------------------------------------------------------ segments
    def _boundary(self, key: tuple, entering: torch.nn.Module | None = None) -> int:
        """Close the open segment and open ``key``'s: credited at once if known, else intercepted.
        Returns the segment's id."""
        if self._watching:
            del self._watched_hooks[self._watch_id]
            self._watching = False
        segment = self._segments.get(key)
        if segment is not None and not self._recording:
            record = segment.record
            if record is not None and (segment.seen + 1) % self._audit_every:
                segment.seen += 1
                if record.replays:  # Ledger.credit's own fast path, inlined: this runs every step
                    record.replays += 1
                else:
                    self.ledger.credit(record)
                return segment.id
        return self._switch(key, segment, entering)

    def _switch(self, key: tuple, segment: _Segment | None, entering: torch.nn.Module | None) -> int:
        """The rest of a boundary: close a recording; record the new segment unless it can be credited."""
        if self._sink is not None:
            self._close_recording()
        if segment is None:
            segment = self._segments[key] = _Segment()
            self._evict()
        segment.seen += 1
        if segment.record is not None and segment.seen % self._audit_every and self._can_switch(on=False):
            self._set_recording(False)
            self.ledger.credit(segment.record)
            return segment.id
        self._key = key
        self._sink = self._mode.sink = self.tracker.ledger = Ledger(mirror=self.ledger)
        if entering is not None:
            self._roots[id(entering)].refresh(entering)
        self._set_recording(True, entering)
        if not self._recording:  # another dispatch mode is on top: this segment goes unrecorded
            self._sink = None
            self.counters["unrecorded"] += 1
        return segment.id

    def _disarm_watch(self) -> None:
        if self._watching:
            del self._watched_hooks[self._watch_id]
            self._watching = False

    def _close_recording(self) -> None:
        key, sink = self._key, self._sink
        self._key = self._sink = None
        record = sink.record()  # this occurrence's counts are in the ledger already, through the mirror
        segment = self._segments.get(key)
        if segment is None:
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

    def _evict(self) -> None:
        while len(self._segments) > MAX_RECORDS:
            _, old = self._segments.popitem(last=False)
            self._evicted_seen += old.seen
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
