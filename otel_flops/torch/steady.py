"""Steady mode: exact counts at near-zero cost, because training steps repeat.

The work of a session is cut into segments at boundaries: a root module's forward, an optimizer
step's start, and an explicit ``otel_flops.phase`` block or an ``otel_flops.window`` opening or
closing outside any model or step. A plain training step is two segments:
- A forward segment runs from a root forward to the next boundary. Its head is the forward
  itself (until the root returns); its tail is what follows: the loss, the backward, gradient
  clipping, the next micro-batch's data, or an evaluation forward's metrics. Its key is the
  forward's signature: the shapes, dtypes and devices of the tensors in its arguments (wherever
  they sit: containers, dataclasses, objects; see ``keys``), the other argument values, grad
  and inference mode, autocast state, per module and parameter the train/eval, requires_grad
  and has-a-gradient flags, any explicit phase, the number of backwards since the last
  optimizer step, a counter of modules and parameters assigned under a root (a layer swapped
  mid-run), and the keys of the grad-enabled forwards since the last backward (the backward in
  its tail runs over their graphs too: a generator's chunks, a closure called after a module).
- An optimizer segment runs from a step's pre-hook to the next boundary: its head is the step
  (until its post-hook), its tail zero_grad and the next batch's preprocessing. Its key is the
  forward segment before it, the number of backwards since the last step, the groups'
  structural options and the state size.

The first time a key is seen its segment is intercepted in full and recorded, head and tail
apart (the counts reach the session's Ledger as they happen). After that the segment runs with
no dispatch mode and no per-module hooks, and each part is credited when it has run: the head
when the root forward returns or the step's post-hook runs, if it created as many autograd
nodes as its record (a thread-local counter, read in about 40 ns: a random or data-dependent
branch shows there); the tail at the next boundary when it ran as a record of it did: the same
number of backwards, none raised, as many autograd nodes, and the same next boundary (the next
root and its arguments, or the next optimizer: a tail is recorded once per such outcome). A
part that did not run as recorded is not credited, and the report says the count is
incomplete, and why; after a head that branched, its tail is intercepted and counted. Every
``audit_every``-th occurrence of a key is intercepted again and compared with the record; a
difference is reported as a mismatch and the record replaced.

Never replayed, so intercepted every time: a segment whose recording met an op whose output size
depends on values (``dynamic``), one whose arguments cannot be keyed, and explicit phase blocks
(their work has no arguments a key could see). A tail whose records did no FLOPs, or at most
``CHEAP_TAIL_CALLS`` ops and no backward, is intercepted on replays too:
it is cheap, and it is where work that follows the next batch runs (an optimizer step's
zero_grad and the next batch's preprocessing, in-place edits of the weights) and a serving
loop's work between requests. Not seen: a branch in a grad-disabled forward that creates no
autograd nodes either way, and a tail with a backward whose work varies with the same graph
size, backwards and next boundary (audits compare those).

Roots are the modules called outside any other module while intercepting; a module first
called as a root after a replayed optimizer step is caught there by a global forward pre-hook
that is armed only from a replayed optimizer step to the next boundary, so a new model's first
step is intercepted. A root gets one forward pre-hook and one forward hook of its own and
nothing else, so no per-module hook runs in a replayed forward, backward or step (a root whose
fast path a hook of its own turns off, ``relays.HOOK_SENSITIVE``, gets global ones that act on it only).

The dispatch mode is pushed only over the modes that were active when the session started
(and popped only from the top): a mode entered inside the session stays above ours, and the
segments that would need interception under it are reported as not counted. ``tls`` keeps
torch's thread-local state right when a switch happens inside ``torch.inference_mode``.

All of this is the session thread's. Every other thread that runs torch work is intercepted in
full, with a counting mode and a phase tracker of its own (``threads``); this class's hooks
ignore those threads.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import operator
import sys
import threading
import types
import weakref
from collections import Counter, OrderedDict
from itertools import chain, repeat
from typing import Any

import torch
from torch.nn.modules.loss import _Loss
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..containment import Containment, contained
from ..ledger import Ledger, Record, RootNames
from ..settings import Settings
from . import compiled, relays, tls
from .dispatch import CountingMode
from .dynamic import data_dependent
from .keys import Unkeyable, frozen_option, tensor_signature, value_signature
from .phases import LOSS, PREPROCESSING, PhaseTracker, module_hooks, optimizer_hooks, remove
from .threads import Threads

log = logging.getLogger("otel_flops")

# Bound once: the hooks below run on every step.
Tensor = torch.Tensor
_get_ident = threading.get_ident
_graph_task_id = torch._C._current_graph_task_id
_grad_enabled = torch.is_grad_enabled
_inference_mode = torch.is_inference_mode_enabled
_any_autocast = torch._C._is_any_autocast_enabled
_autograd_nodes = compiled.autograd_nodes  # this thread's autograd nodes so far, less compiling's
_global_forward_pre_hooks = torch.nn.modules.module._global_forward_pre_hooks
_training = operator.attrgetter("training")
_requires_grad = operator.attrgetter("requires_grad")
_grad = operator.attrgetter("grad")

MAX_RECORDS = 4096
MAX_BACKWARDS = 64  # backwards since the last optimizer step that keys tell apart
# A tail of at most this many ops is intercepted at every replay (about 6 us of Python each on
# CPU): what runs between an optimizer step and the next forward (zero_grad, the next batch's
# preprocessing, in-place edits of the weights) follows the next batch and the Python around it,
# which no key made at the step can see.
CHEAP_TAIL_CALLS = 32
PENDING_FORWARDS = 4  # grad-enabled forwards since the last backward that a forward's key holds
# How the open segment runs: replayed from its records, intercepted (and recorded), or neither
# (another dispatch mode on top kept ours from being pushed).
REPLAY, RECORD, BLIND = "replay", "record", "blind"
HEAD, TAIL = "head", "tail"

# Why a steady-mode count can be incomplete: the report's ``incomplete`` lines.
INCOMPLETE = {
    "foreign-mode": "{n} segment(s) ran while another TorchDispatchMode, entered after otel-flops started, "
                    "sat above its own, and were not counted (enter that mode first, or use mode=full)",
    "raised": "{n} replayed forward(s) or optimizer step(s) raised before finishing: the work they did "
              "before the exception is not counted (mode=full counts it)",
    "diverged": "{n} replayed segment(s) ran differently from their records after the forward or step "
                "(another number of backwards, a backward that raised, or another next step): that work "
                "is not counted",
    "branched": "{n} replayed forward(s) or optimizer step(s) built another autograd graph than their records "
                "(a random or data-dependent branch, a module that changed its own code path): their own work "
                "is not counted (what followed them is)",
    "audit": "{n} audit(s) found a repeated segment doing other work than its record (work that changes "
             "from step to step with nothing a key sees, e.g. clipping every other step): the replays "
             "between audits were credited with the record's counts (mode=full counts what ran)",
    "window": "{n} otel_flops.window edge(s) fell inside a replayed forward, optimizer step or backward, "
              "which is credited whole when it ends: those windows' FLOPs are approximate (open and close "
              "windows outside the model's forward and the step, or use mode=full)",
    "session-end": "{n} segment tail(s) cut short by the session's end ran differently from their records "
                   "and were not counted (work after the last forward or step outside otel_flops.phase())",
}

# Param-group options of torch's optimizers that change which ops a step runs.
STRUCTURAL_OPTIONS = (
    "weight_decay", "momentum", "dampening", "nesterov", "maximize", "amsgrad", "foreach", "fused",
    "capturable", "differentiable", "decoupled_weight_decay", "centered",
)


def _autocast_state() -> tuple:
    return tuple(
        (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)) for device in ("cpu", "cuda")
    )


class _Root:
    """A root module's serial number (ids are reused after GC) and its cached module/param lists."""

    serials = itertools.count()

    def __init__(self, module: torch.nn.Module) -> None:
        self.serial = next(self.serials)
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
    """A keyed segment's records: its head's, and its tail's per outcome (how the tail ran)."""

    __slots__ = ("head", "head_backwards", "tails", "seen", "id", "pinned", "learn", "replayable", "quiet",
                 "evaluating", "head_nodes", "follow")
    ids = itertools.count()

    def __init__(self, pinned: bool, evaluating: bool) -> None:
        self.head: Record | None = None
        self.head_backwards = 0  # backwards the head ran (an optimizer closure's)
        self.tails: dict[tuple, Record] = {}
        self.seen = 0
        self.id = next(self.ids)
        self.pinned = pinned  # never replayed: intercepted at every occurrence
        self.learn = False  # a part ran in a way never recorded: intercept the next occurrence
        self.replayable = False  # an attribute, not a property: read at every boundary
        # A segment whose recorded tails are cheap (no FLOPs, or at most CHEAP_TAIL_CALLS ops and
        # no backward: an evaluation forward's, or an optimizer step's zero_grad and the next
        # batch's preprocessing): replays intercept its tail, which costs little there and counts
        # what it does as it runs (however the next batch or the Python between steps varies it),
        # and sees the work a serving loop does between requests, or a final evaluation.
        self.evaluating = evaluating
        self.quiet = False
        self.head_nodes = 0  # autograd nodes the head created: a different number is another branch
        self.follow = -1  # what a tail ending at this segment's start ended at (see _boundary)

    def settle(self) -> None:
        self.replayable = self.head is not None and bool(self.tails) and not self.pinned and not self.learn
        self.quiet = all(not outcome[0] and _cheap(record) for outcome, record in self.tails.items())

    def relearn(self) -> None:
        self.learn = True
        self.replayable = False


class _Optimizer:
    """An optimizer's serial number (ids are reused after GC) and its groups' structural options,
    re-read whenever a segment is being recorded: a change between recordings (weight decay set
    to zero mid-run) shows up at the next audit."""

    __slots__ = ("serial", "options")

    def __init__(self, optimizer: Any) -> None:
        self.serial = next(_Root.serials)
        self.read_options(optimizer)

    def read_options(self, optimizer: Any) -> None:
        self.options = tuple(
            tuple([frozen_option(group.get(name)) for name in STRUCTURAL_OPTIONS]) for group in optimizer.param_groups
        )


class _RecordingMode(CountingMode):
    """The counting mode, also noting ops whose output size depends on values."""

    data_dependent = False
    containment = Containment()  # steady mode sets its own

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if not self.data_dependent:
            try:
                self.data_dependent = data_dependent(func, args)
            except Exception:
                self.data_dependent = True
                self.containment.failed("steady-mode data-dependence check", "the segment stays intercepted")
        return out


def _work(record: Record) -> bool:
    return any(t.flops or t.bops for t in record.counts.values())


def _cheap(record: Record) -> bool:
    """A tail cheap enough to intercept at every replay: no FLOPs, or few ops (and no backward,
    which the caller checks: a backward's phases and bits need the forward's hooks)."""
    calls = sum(t.calls for t in record.counts.values()) + sum(record.uncounted.values())
    return calls <= CHEAP_TAIL_CALLS or not _work(record)


_ROOT_RELAYS = (relays.ROOT_PRE, relays.ROOT_POST, relays.GLOBAL_ROOT_PRE, relays.GLOBAL_ROOT_POST)


def _forget_root(roots: dict[int, _Root], key: int) -> None:
    """A root was collected: its id may be reused by a new module, which is no root."""
    roots.pop(key, None)
    for relay in _ROOT_RELAYS:
        relay.roots.discard(key)


class SteadyCounting:
    """Intercepts each new segment once, then credits its records whenever its key repeats."""

    def __init__(self, ledger: Ledger, settings: Settings, roots: RootNames, alpha_profile: Any = None) -> None:
        self.ledger = ledger
        self.tracker = PhaseTracker(ledger, roots, settings.module_depth)
        self.tracker.on_phase = self._on_phase
        self.containment = self.tracker.containment
        self._mode = _RecordingMode(ledger, self.tracker, alpha_profile)
        self._mode.containment = self.containment
        self._audit_every = settings.audit_every
        self._segments: OrderedDict[Any, _Segment] = OrderedDict()
        # Keyed by id() for a plain dict lookup on the hot path; a finalizer drops dead entries.
        self._roots: dict[int, _Root] = {}
        self._root_hooks: list[Any] = []
        # A hook-sensitive root's global pre-hook reaches it from its first return on.
        self._entered_roots = relays.GLOBAL_ROOT_PRE.roots
        self._optimizers: dict[int, _Optimizer] = {}
        self._module_hooks: list[Any] = []
        self._optimizer_hooks: list[Any] = []
        # The open segment, how it runs, and which part of it is running.
        self._open: _Segment | None = None
        self._how = RECORD
        self._stage = TAIL
        self._quiet_tail = False  # the open replayed segment's quiet tail is being intercepted
        self._sink: Ledger | None = None  # the part being recorded, while one is
        self._head: Record | None = None  # this occurrence's recorded head
        self._head_backwards = 0  # and the backwards it ran
        self._head_mark = self._tail_mark = self._fault_mark = 0
        self._nodes_mark = 0  # autograd nodes created before the open part began
        self._head_nodes = 0  # and the ones the head being recorded created
        # Bumped when a module or parameter is assigned to a module under a root (a layer
        # swapped mid-run): forward keys hold it, so the next forward is recorded again.
        self._structure = 0
        self._members: set[int] = set()  # ids of the modules under the roots
        self._structure_hooks: list[Any] = []
        # The keys of the grad-enabled forwards since the last backward, newest last: a backward
        # runs over every graph they built, so a forward's key (and the tail holding that
        # backward) depends on them (a generator's chunks, a closure called after a module).
        self._pending: tuple = ()
        self._endings: dict[tuple, int] = {}  # _Segment.follow's values
        self._anchor = -1  # id of the last forward segment: what an optimizer step follows
        self._backwards = 0  # backward returns since the last optimizer step
        self._faults = 0  # backwards that raised
        self._forward_depth = 0  # open root forwards (a root called inside another is no boundary)
        self._step_depth = 0  # open optimizer steps
        self._step_closure = False  # the open step took a closure: its forwards are its own
        self._recording = False
        self._baseline: Any = None  # the dispatch mode on top when the session started
        # A global forward pre-hook (a relay: stable for torch.compile), armed after a replayed
        # optimizer step by putting it in torch's hook dict under its fixed id (cheaper than a
        # new handle every step).
        self._watch, self._watch_id = relays.WATCH, relays.WATCH.id
        self._watched_hooks = _global_forward_pre_hooks
        self._watching = False
        self._relay_handles: list[Any] = []
        self._owner = threading.get_ident()
        self._original_backward: Any = None
        self.counters = {"recorded": 0, "audited": 0, "mismatches": 0, "unrecorded": 0, "intercepted": 0}
        self._incomplete: Counter[str] = Counter()
        self._evicted_seen = 0
        self._threads = Threads(ledger, settings, roots, alpha_profile)  # every other thread: full interception

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start, or start again after ``stop`` with the roots and records found so far."""
        self._owner = threading.get_ident()
        self._forward_depth = self._step_depth = 0
        self._baseline = _get_current_dispatch_mode()
        for root in self._roots.values():
            module = root.module()
            if module is not None:
                self._hook_root(module)
        self._relay_handles = [relays.WATCH.attach(self._watch_pre)]
        for pre, post in ((relays.ROOT_PRE, relays.ROOT_POST), (relays.GLOBAL_ROOT_PRE, relays.GLOBAL_ROOT_POST)):
            self._relay_handles += [pre.attach(self._root_pre), post.attach(self._root_post)]
        relays.strip_from_copies(True)
        self._optimizer_hooks = optimizer_hooks(self._optimizer_pre, self._optimizer_post)
        registry = torch.nn.modules.module
        self._structure_hooks = [registry.register_module_module_registration_hook(self._on_structure),
                                 registry.register_module_parameter_registration_hook(self._on_structure)]
        self._original_backward = torch.autograd.backward
        torch.autograd.backward = self._wrap_backward(self._original_backward)
        self._threads.start()
        self._mode.sink = self.tracker.ledger = self.ledger
        self._open = None
        self._switch_to(True)  # until the first boundary, count straight into the ledger

    def stop(self) -> None:
        self._disarm_watch()
        self._close(True, -1)
        self._switch_to(False)
        remove(self._optimizer_hooks)
        remove(self._structure_hooks)
        self._unhook_roots()
        remove(self._relay_handles)
        relays.strip_from_copies(False)
        torch.autograd.backward = self._original_backward
        self._threads.stop()
        if self._incomplete.get("session-end"):
            self._warn("session-end")

    def stats(self) -> dict[str, int]:
        seen = sum(segment.seen for segment in self._segments.values()) + self._evicted_seen
        counters = self.counters
        replayed = seen - sum(counters[k] for k in ("recorded", "audited", "unrecorded", "intercepted"))
        return dict(counters, replayed=replayed, segments=len(self._segments))

    def incomplete(self) -> list[str]:
        """Why the count is incomplete, one line per reason; empty when it is complete."""
        return [INCOMPLETE[kind].format(n=n) for kind, n in self._incomplete.items()] + self._threads.incomplete()

    def phase_tracker(self) -> PhaseTracker | None:
        """The calling thread's phase tracker, for an explicit phase block."""
        return self.tracker if _get_ident() == self._owner else self._threads.phase_tracker()

    def window_edge(self) -> None:
        """An ``otel_flops.window`` opens or closes: a boundary, so a window is credited exactly the
        segments that ran inside it. Inside a forward, an optimizer step or a backward there is no
        boundary: a replayed forward or step is credited whole when it ends, so a window edge there
        makes the window's count approximate, and the report says so."""
        if _get_ident() != self._owner:
            return  # other threads are intercepted in full
        if self._forward_depth or self._step_depth or _graph_task_id() != -1:
            if self._how is REPLAY:
                self._flag("window")
            return
        self._on_phase(True)

    def relabel(self) -> None:
        """A model was given a name (a nested ``track(model, name=...)``): records carry the old label,
        so the next forwards are new segments, recorded with the new one."""
        self._structure += 1

    def _flag(self, kind: str) -> None:
        if not self._incomplete[kind] and kind != "session-end":
            self._warn(kind)
        self._incomplete[kind] += 1

    def _warn(self, kind: str) -> None:
        log.warning("otel-flops: the steady-mode count is incomplete: %s",
                    INCOMPLETE[kind].format(n=self._incomplete[kind] or 1))

    def _wrap_backward(self, backward: Any) -> Any:
        """``Tensor.backward`` goes through ``torch.autograd.backward``: it counts the backwards,
        and the ones that raised (whose exception goes on to the user unchanged)."""

        @functools.wraps(backward)
        def counted_backward(*args: Any, **kwargs: Any) -> Any:
            try:
                out = backward(*args, **kwargs)
            except BaseException:
                self._backward_ended(False)
                raise
            self._backward_ended(True)
            return out

        return counted_backward

    @contained("steady-mode backward wrapper", "the backward may be miscounted")
    def _backward_ended(self, ok: bool) -> None:
        if _get_ident() == self._owner and _graph_task_id() == -1:
            self._pending = ()
            if not ok:
                self._faults += 1
            elif self._backwards < MAX_BACKWARDS:
                self._backwards += 1

    # ------------------------------------------------------------------ hook events
    # These run on every step, with the CPU caches cold from the step's own work: what a
    # replayed step runs is kept to few calls and few bytecodes, since each one shows there.
    @contained("steady-mode module pre-hook", "a new model may be counted from its next step")
    def _global_pre(self, module: torch.nn.Module, args: tuple) -> None:
        """While intercepting: find new roots, and keep the phase tracker informed."""
        if _get_ident() != self._owner:  # other threads: threads.py
            return
        if (self.tracker.outside_modules and not isinstance(module, _Loss) and id(module) not in self._roots
                and _graph_task_id() == -1 and not self._step_depth):
            root = self._add_root(module)
            self._forward_depth = 1  # its forward hook, added now (or the global relay reaching it), sees it return
            self._anchor = self._boundary(self._forward_key(root, args, {}), HEAD)
        self.tracker.enter_module(module)

    def _global_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """While intercepting: the phase tracker sees this thread's modules return."""
        if _get_ident() == self._owner:
            self.tracker.exit_module(module, args, output)

    @contained("steady-mode watch hook", "a new model may be counted from its next step")
    def _watch_pre(self, module: torch.nn.Module, args: tuple) -> None:
        """A module no root hook knows, called after a replayed step: a new root (a new model's first step)."""
        if isinstance(module, _Loss) or id(module) in self._roots or _get_ident() != self._owner:
            return
        if _graph_task_id() == -1 and not self._step_depth:
            root = self._add_root(module)
            self._forward_depth = 1
            self._anchor = self._boundary(self._forward_key(root, args, {}), HEAD, module)

    @contained("steady-mode forward boundary", "this step may be miscounted")
    def _root_pre(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        root = self._roots.get(id(module))
        if root is None or _get_ident() != self._owner or _graph_task_id() != -1:
            return
        if self._forward_depth or (self._step_depth and self._step_closure):
            self._forward_depth += 1  # inside another root's forward, or an optimizer's closure
            return
        self._step_depth = 0  # a step still open here raised: its post-hook never ran
        self._forward_depth = 1
        self._anchor = self._boundary(self._forward_key(root, args, kwargs), HEAD, module)

    @contained("steady-mode forward hook", "this step may be miscounted")
    def _root_post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if id(module) in relays.GLOBAL_ROOT_POST.roots:
            self._entered_roots.add(id(module))
        if _get_ident() != self._owner or _graph_task_id() != -1 or not self._forward_depth:
            return
        self._forward_depth -= 1
        if self._forward_depth or self._step_depth:
            return
        if output is None and sys.exc_info()[1] is not None:
            return  # the forward raised (always-called hook): its head never finished
        self._head_done(True)

    @contained("steady-mode optimizer boundary", "this step may be miscounted")
    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if _get_ident() == self._owner:
            if self._step_depth:
                self._step_depth += 1  # a step inside a step (a wrapper optimizer's)
            else:
                state = self._optimizers.get(id(optimizer)) or self._add_optimizer(optimizer)
                if self._recording:
                    state.read_options(optimizer)
                self._forward_depth = 0  # a forward still open here raised
                self._boundary(("optimizer", state.serial, state.options, len(optimizer.state), self._anchor,
                                self._backwards, self.tracker.explicit), HEAD)
                self._step_depth = 1
                self._step_closure = bool(args) or bool(kwargs and kwargs.get("closure"))
                self._backwards = 0
                self._head_mark = 0
                if self._how is REPLAY:  # the next model may start after it
                    self._watched_hooks[self._watch_id] = self._watch
                    self._watching = True
        if self._recording and _get_ident() == self._owner:
            self.tracker.enter_optimizer()

    @contained("steady-mode optimizer hook", "this step may be miscounted")
    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._recording and _get_ident() == self._owner:  # a replayed step's head record counts the step
            self.tracker.exit_optimizer()
        if _get_ident() == self._owner and self._step_depth:
            self._step_depth -= 1
            if not self._step_depth:
                self._head_done(False)

    @contained("steady-mode phase boundary", "this phase block may be miscounted")
    def _on_phase(self, opening: bool) -> None:
        """An explicit phase block outside any model and step opens or closes: a boundary."""
        if (_get_ident() != self._owner or self._forward_depth or self._step_depth
                or _graph_task_id() != -1):
            return
        after = self._open.id if self._open is not None else -1
        self._boundary(("phase", self.tracker.explicit, after, self._anchor, self._backwards, _grad_enabled(),
                        _inference_mode()), TAIL)

    @contained("steady-mode module registration hook", "a replaced layer may be miscounted")
    def _on_structure(self, module: torch.nn.Module, name: str, value: Any) -> None:
        """A module or parameter assigned to a module: under a root, the next forwards are new."""
        if id(module) in self._members:
            self._structure += 1

    # ------------------------------------------------------------------ keys
    def _add_root(self, module: torch.nn.Module) -> _Root:
        root = self._roots[id(module)] = _Root(module)
        self._members.update(map(id, module.modules()))
        weakref.finalize(module, _forget_root, self._roots, id(module))
        self._hook_root(module, entered=False)
        return root

    def _hook_root(self, module: torch.nn.Module, entered: bool = True) -> None:
        """Let the root relays reach ``module``: hooks of its own (first, as the global pre-hook that
        found the root was: FSDP2's gather is in the head), or for a hook-sensitive root the global
        relays. A root found by a global pre-hook is in its forward already: GLOBAL_ROOT_PRE, later
        in that same call's hooks, must not see it enter twice, so it reaches it from its first return on."""
        if not isinstance(module, relays.HOOK_SENSITIVE):
            relays.ROOT_PRE.roots.add(id(module))
            relays.ROOT_POST.roots.add(id(module))
            self._root_hooks += [module.register_forward_pre_hook(relays.ROOT_PRE, with_kwargs=True, prepend=True),
                                 module.register_forward_hook(relays.ROOT_POST, always_call=True)]
            return
        module._forward_pre_hooks_with_kwargs[relays.GLOBAL_ROOT_PRE.id] = True
        relays.GLOBAL_ROOT_POST.roots.add(id(module))
        if entered:
            self._entered_roots.add(id(module))
        relays.GLOBAL_ROOT_PRE.arm()
        relays.GLOBAL_ROOT_POST.arm()

    def _unhook_roots(self) -> None:
        remove(self._root_hooks)
        for key, root in self._roots.items():
            module = root.module()
            if module is not None:
                module._forward_pre_hooks_with_kwargs.pop(relays.GLOBAL_ROOT_PRE.id, None)
            for relay in _ROOT_RELAYS:
                relay.roots.discard(key)
        relays.GLOBAL_ROOT_PRE.disarm()
        relays.GLOBAL_ROOT_POST.disarm()

    def _add_optimizer(self, optimizer: Any) -> _Optimizer:
        state = self._optimizers[id(optimizer)] = _Optimizer(optimizer)
        weakref.finalize(optimizer, self._optimizers.pop, id(optimizer), None)
        return state

    def _forward_key(self, root: _Root, args: tuple, kwargs: dict) -> tuple:
        """The forward's signature; ``("unkeyable", root)`` (intercepted at every occurrence) when
        its arguments cannot be described."""
        try:
            arguments: Any = tuple([(a.shape, a.dtype, a.device, a.requires_grad) if isinstance(a, Tensor)
                                    else value_signature(a) for a in args])
        except Exception:  # a nested tensor has no shape: the careful path below
            arguments = None
        try:
            if arguments is None:
                arguments = tuple([tensor_signature(a) if isinstance(a, Tensor) else value_signature(a) for a in args])
            params = root.params
            key = (
                "forward",
                root.serial,
                arguments,
                value_signature(kwargs) if kwargs else (),
                _grad_enabled(),
                _inference_mode(),
                _autocast_state() if _any_autocast() else None,
                bytes(chain(map(_training, root.modules), map(_requires_grad, params),
                            map(operator.is_, map(_grad, params), repeat(None)))),
                self.tracker.explicit,
                self._backwards,
                self._structure,
                self._pending,
            )
        except Unkeyable:
            key = ("unkeyable", root.serial, self._structure, self._pending)
        except Exception:
            self.containment.failed("steady-mode key", "the segment is intercepted in full")
            key = ("unkeyable", root.serial, self._structure, self._pending)
        if _grad_enabled() and not _inference_mode():  # it may build a graph a later backward runs over
            self._pending = (*self._pending[1 - PENDING_FORWARDS:], key[:-1])
        return key

    # ------------------------------------------------------------------ segments
    def _boundary(self, key: tuple, stage: str, entering: torch.nn.Module | None = None) -> int:
        """Close the open segment and open ``key``'s, at ``stage``: replayed if known, else
        intercepted. Returns the segment's id."""
        self._disarm_watch()
        segment = self._segments.get(key)
        if segment is None:
            pinned = key[0] == "unkeyable" or (key[0] == "phase" and bool(key[1]))
            segment = self._segments[key] = _Segment(pinned, evaluating=key[0] == "forward" and not key[4])
            # Where a tail ends, as its work may depend on it: the next root and its arguments
            # (the next batch's preprocessing), or the next optimizer (clipping before a step).
            ending = key[:4] if key[0] == "forward" else key[:3]
            segment.follow = self._endings.setdefault(ending, len(self._endings))
            self._evict()
        self._close(False, segment.follow)  # the open tail's outcome holds where it ended
        if not self._recording and segment.replayable and (segment.seen + 1) % self._audit_every:
            segment.seen += 1
            self._open, self._how, self._stage = segment, REPLAY, stage
            self._head_mark = self._tail_mark = self._backwards
            self._fault_mark = self._faults
            self._nodes_mark = _autograd_nodes()
            return segment.id
        return self._switch(segment, stage, entering)

    def _switch(self, segment: _Segment, stage: str, entering: torch.nn.Module | None) -> int:
        """The rest of a boundary: replay the segment if it can be, else intercept it."""
        segment.seen += 1
        self._open, self._stage, self._head = segment, stage, None
        self._head_mark = self._tail_mark = self._backwards
        self._fault_mark = self._faults
        self._nodes_mark = _autograd_nodes()
        if segment.replayable and segment.seen % self._audit_every and self._switch_to(False):
            self._how = REPLAY
            return segment.id
        if entering is not None:
            self._roots[id(entering)].refresh(entering)
            self._members.update(map(id, entering.modules()))
        if not self._switch_to(True, entering):  # another dispatch mode is on top
            self._how = BLIND
            self.counters["unrecorded"] += 1
            self._flag("foreign-mode")
            return segment.id
        self._how = RECORD
        self._mode.data_dependent = False
        self._sink = self._mode.sink = self.tracker.ledger = Ledger(mirror=self.ledger)
        return segment.id

    def _head_done(self, forward: bool) -> None:
        """The open segment's forward returned, or its step finished: credit or record its head."""
        segment = self._open
        if segment is None or self._stage is not HEAD:
            return
        self._stage = TAIL
        backwards = self._backwards - self._head_mark if self._head_mark <= self._backwards else 0
        self._tail_mark, self._fault_mark = self._backwards, self._faults
        nodes, self._nodes_mark = -self._nodes_mark, _autograd_nodes()
        nodes += self._nodes_mark
        if self._how is REPLAY:
            if backwards != segment.head_backwards or nodes != segment.head_nodes:
                self._flag("diverged" if backwards != segment.head_backwards else "branched")
                segment.relearn()
                self._count_tail(forward)  # what follows it is counted as it runs
                return
            record = segment.head
            if record.replays:  # Ledger.credit's own fast path, inlined: this runs every step
                record.replays += 1
            else:
                self.ledger.credit(record)
            if segment.quiet:
                self._count_tail(forward)
        elif self._how is RECORD:
            self._head, self._head_backwards, self._head_nodes = self._sink.record(), backwards, nodes
            self._sink = self._mode.sink = self.tracker.ledger = Ledger(mirror=self.ledger)

    def _count_tail(self, forward: bool) -> None:
        """Intercept the rest of a replayed segment, counting it as it runs (no record kept)."""
        if not self._switch_to(True):  # another dispatch mode is on top
            self._how = BLIND
            self.counters["unrecorded"] += 1
            self._flag("foreign-mode")
            return
        self._how, self._quiet_tail = RECORD, True
        self._sink = self._mode.sink = self.tracker.ledger = Ledger(mirror=self.ledger)
        self.tracker.stage = LOSS if forward and _grad_enabled() else PREPROCESSING  # as after the head

    def _close(self, at_stop: bool, following: int) -> None:
        """The open segment ends, at a boundary or when the session stops: ``following`` is
        where (the next segment's ``follow``, -1 at stop). A tail's outcome is how it ran (its
        backwards, the ones that raised, the autograd nodes it created) and where it ended."""
        segment = self._open
        if segment is None:
            return
        self._open = None
        if self._how is BLIND:
            return
        outcome = (self._backwards - self._tail_mark, self._faults - self._fault_mark, following,
                   _autograd_nodes() - self._nodes_mark)
        if self._quiet_tail:  # counted as it ran; the record stays
            self._quiet_tail = False
            self._sink = None
            self._mode.sink = self.tracker.ledger = self.ledger
            return
        if self._how is RECORD:
            self._store(segment, at_stop, outcome)
            return
        if self._stage is HEAD:
            self._flag("raised")
            return
        record = segment.tails.get(outcome)
        if record is not None:
            if record.replays:
                record.replays += 1
            else:
                self.ledger.credit(record)
        elif at_stop:
            if any(map(_work, segment.tails.values())):
                self._incomplete["session-end"] += 1
        else:
            self._flag("diverged")
            segment.relearn()

    def _store(self, segment: _Segment, at_stop: bool, outcome: tuple) -> None:
        """Keep an intercepted occurrence's records (its counts are in the ledger already)."""
        sink, head = self._sink, self._head
        self._sink, self._head = None, None
        self._mode.sink = self.tracker.ledger = self.ledger
        if self._mode.data_dependent:
            segment.pinned = True
            segment.settle()
        if segment.pinned:
            self.counters["intercepted"] += 1
            return
        if self._stage is HEAD:  # the forward or step raised, or the session ended inside it
            self.counters["intercepted"] += 1
            return
        first = segment.head is None
        self.counters["recorded" if first else "audited"] += 1
        if head is not None:
            self._keep(segment, "head", head)
            segment.head_backwards, segment.head_nodes = self._head_backwards, self._head_nodes
        elif first:
            segment.head = Record({}, Counter())  # a tail-only segment (after a phase block)
        if not at_stop:  # a tail the session's end cut short is no record
            segment.learn = False
            self._keep(segment, outcome, sink.record())
        segment.settle()

    def _keep(self, segment: _Segment, part: Any, record: Record) -> None:
        old = segment.head if part == "head" else segment.tails.get(part)
        if old is not None:
            if not old.same_counts(record):
                self.counters["mismatches"] += 1
                self._flag("audit")
            self.ledger.fold(old)
        if part == "head":
            segment.head = record
        else:
            segment.tails[part] = record

    def _evict(self) -> None:
        while len(self._segments) > MAX_RECORDS:
            _, old = self._segments.popitem(last=False)
            self._evicted_seen += old.seen
            for record in (old.head, *old.tails.values()):
                if record is not None:
                    self.ledger.fold(record)

    def _disarm_watch(self) -> None:
        """Take the new-model watch out of torch's global pre-hooks (it may be gone already: a
        ``stop`` while a replayed step's watch was armed)."""
        if self._watching:
            self._watched_hooks.pop(self._watch_id, None)
            self._watching = False

    # ------------------------------------------------------------------ interception on/off
    def _switch_to(self, on: bool, entering: torch.nn.Module | None = None) -> bool:
        """Push or pop our mode; whether interception is now ``on``. It is pushed only over the
        modes active at start, and popped only from the top of the stack."""
        if on == self._recording:
            return True
        top = _get_current_dispatch_mode()
        if top is not (self._baseline if on else self._mode):
            return False
        if on:
            self.tracker.reset()
            self._module_hooks = module_hooks(self._global_pre, self._global_post)
            tls.push(self._mode)
            if entering is not None:
                self.tracker.enter_module(entering)  # its global pre-hook was not called yet
        else:
            tls.pop(self._mode)
            remove(self._module_hooks)
        self._recording = on
        return True
