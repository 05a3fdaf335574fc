"""Counting in every thread of the process that runs torch work, not only the one that started it.

torch's dispatch mode stack is thread-local, so a mode entered by the thread that started the
session sees nothing another thread does. Here every thread that runs torch work gets a counting
mode and a phase tracker of its own (full interception: steady mode's recorded segments are the
session thread's alone; other threads are intercepted op by op):

- A thread started while the session runs is entered when its ``run`` starts (``Thread.start``
  wraps the thread's ``run``) and left when it returns: a thread pool's workers, a training
  thread, a server's request threads.
- A thread that was already running when the session started cannot be entered from outside: it
  is entered at its first optimizer step or ``otel_flops.phase`` block, its earlier work is not
  counted, and the report says so. ``otel-flops run`` starts the session before any user thread.
- An entered thread is dormant until it runs an op inside a module's forward: its ops count as
  ``preprocessing`` and no module hook is installed for it (a pin-memory or metrics thread stays
  so). At that op the modules open on its stack are read from its Python frames, and one shared
  pair of global module hooks, which look up the calling thread's tracker, is installed until
  the session stops. From then on every module call in the process takes torch's hooked path
  (about 5 us per module call on a CPU, measured): the price of giving another thread's work
  its model and phase. A program whose torch work stays on one thread never pays it.
- The backward a thread runs is that thread's (autograd carries the mode into its device
  threads), so each thread's phases are its own.
- At stop the calling thread's mode is popped; the modes of threads still running pass every
  op through from then on, and are popped when those threads end.

Work done in DataLoader worker *processes* is never counted (they are other processes).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ..containment import Containment
from ..ledger import Ledger, RootNames
from ..settings import Settings
from . import tls
from .dispatch import CountingMode
from .losses import mark_loss_functions
from .phases import PhaseTracker, module_hooks, optimizer_hooks, remove

_get_ident = threading.get_ident
_CALL_IMPL = torch.nn.Module._call_impl.__code__

INCOMPLETE = {
    "adopted": "{n} thread(s) already running when otel-flops started were counted from their first optimizer "
               "step or phase block on; their work before it is not counted (start otel-flops before the "
               "threads, as otel-flops run does)",
}


class _ThreadMode(CountingMode):
    """A thread's counting mode; while the thread is dormant it looks for an open module first."""

    wake: Any = None  # set while dormant: returns True once the thread has woken

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if self.wake is not None and self.wake():
            self.wake = None
        return super().__torch_dispatch__(func, types, args, kwargs)


class _Unit:
    """One thread's counting: its mode (pushed on that thread) and its phase tracker."""

    __slots__ = ("tracker", "mode", "awake")

    def __init__(self, ledger: Ledger, names: RootNames, alpha_profile: Any, module_depth: int) -> None:
        self.tracker = PhaseTracker(ledger, names, module_depth)
        self.mode = _ThreadMode(ledger, self.tracker, alpha_profile)
        self.awake = False


def open_modules() -> list[tuple[torch.nn.Module, tuple]]:
    """The modules whose forward is running on this thread, outermost first, with their args
    (read from the frames of ``Module._call_impl``)."""
    found = []
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _CALL_IMPL:
            local = frame.f_locals
            found.append((local["self"], local.get("args", ())))
        frame = frame.f_back
    return found[::-1]


class Threads:
    """Counting modes and phase trackers per thread, for every thread but the session's own
    (``include_owner=False``, steady mode keeps that one) or for all of them (full mode)."""

    include_owner = False

    def __init__(self, ledger: Ledger, settings: Settings | None = None, names: RootNames | None = None,
                 alpha_profile: Any = None) -> None:
        self.ledger = ledger
        self.containment = Containment(ledger)
        self._names = names if names is not None else RootNames()
        self._alpha_profile = alpha_profile
        self._module_depth = (settings or Settings()).module_depth
        self._units: dict[int, _Unit] = {}
        self._owner = _get_ident()
        self._live = False
        self._module_hooks: list[Any] = []
        self._optimizer_hooks: list[Any] = []
        self._unmark_losses: Any = None
        self._original_start: Any = None
        self._start: Any = None
        self._incomplete: Counter[str] = Counter()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Enter the threads started from now on (and this one, with ``include_owner``)."""
        self._owner = _get_ident()
        self._live = True
        for unit in self._units.values():  # threads still running since a previous stop
            unit.mode.paused -= 1
        self._optimizer_hooks = optimizer_hooks(self._optimizer_pre, self._optimizer_post)
        self._unmark_losses = mark_loss_functions()
        self._wrap_thread_start()
        if self.include_owner:
            self._install_module_hooks()
            self._enter()

    def stop(self) -> None:
        """Stop counting: this thread's mode is popped, other threads' pass ops through until they end."""
        self._live = False
        if threading.Thread.start is self._start:
            threading.Thread.start = self._original_start
        remove(self._optimizer_hooks)
        remove(self._module_hooks)
        if self._unmark_losses is not None:
            self._unmark_losses()
            self._unmark_losses = None
        here = _get_ident()
        for ident, unit in list(self._units.items()):
            if ident == here:
                self._leave(unit)
            else:
                unit.mode.paused += 1

    def phase_tracker(self) -> PhaseTracker | None:
        """This thread's phase tracker, for an explicit phase block (a thread that was running
        before the session is entered now); None where this object does not count the thread."""
        unit = self._units.get(_get_ident()) or self._adopt()
        return unit.tracker if unit is not None else None

    def stats(self) -> dict[str, int]:
        return {}

    def window_edge(self) -> None:
        """An ``otel_flops.window`` opens or closes: nothing to do, every op is counted as it runs."""

    def relabel(self) -> None:
        """A model was given a name: nothing to do, every op takes the label in force as it runs."""

    def incomplete(self) -> list[str]:
        """Why the count is incomplete, one line per reason; empty when it is complete."""
        return [INCOMPLETE[kind].format(n=n) for kind, n in self._incomplete.items()]

    # ------------------------------------------------------------------ threads
    def _wrap_thread_start(self) -> None:
        original = self._original_start = threading.Thread.start
        threads = self

        @functools.wraps(original)
        def start(thread: threading.Thread) -> None:
            if threads._live and not getattr(thread, "otel_flops_internal", False):
                try:
                    if getattr(thread.run, "func", None) != threads._run:
                        thread.run = functools.partial(threads._run, thread.run)  # type: ignore[method-assign]
                except Exception:
                    threads.containment.failed("thread start wrapper", "the thread's torch work is not counted")
            original(thread)

        self._start = threading.Thread.start = start  # type: ignore[method-assign]

    def _run(self, run: Any) -> Any:
        """A thread's ``run``, inside a counting mode of its own."""
        unit = self._enter() if self._live else None
        try:
            return run()
        finally:
            if unit is not None:
                self._leave(unit)

    def _enter(self) -> _Unit | None:
        try:
            unit = _Unit(self.ledger, self._names, self._alpha_profile, self._module_depth)
            if self._module_hooks and not open_modules():
                unit.awake = True
            else:
                unit.mode.wake = functools.partial(self._wake, unit)
            self._units[_get_ident()] = unit
            tls.push(unit.mode)
            return unit
        except Exception:
            self.containment.failed("thread entry", "this thread's torch work is not counted")
            return None

    def _adopt(self) -> _Unit | None:
        """A thread that was running before the session, met at an optimizer step or phase block."""
        if not self._live or (_get_ident() == self._owner and not self.include_owner):
            return None
        unit = self._enter()
        if unit is not None:
            self._incomplete["adopted"] += 1
        return unit

    def _leave(self, unit: _Unit) -> None:
        self._units.pop(_get_ident(), None)
        try:
            if _get_current_dispatch_mode() is unit.mode:
                tls.pop(unit.mode)
            else:  # another mode entered above ours stays; ours passes ops through
                unit.mode.paused += 1
        except Exception:
            self.containment.failed("thread exit", "the thread's counting mode may stay on its stack")

    def _wake(self, unit: _Unit) -> bool:
        """A dormant thread's op: once it runs inside a module, track that thread's modules."""
        try:
            opened = open_modules()
            if not opened:
                return False
            self._install_module_hooks()
            unit.awake = True
            for module, args in opened:
                unit.tracker.enter_module(module, args)
        except Exception:
            self.containment.failed("thread wake-up", "this thread's ops may get the wrong phase")
        return True

    # ------------------------------------------------------------------ hooks (every thread)
    def _install_module_hooks(self) -> None:
        if not self._module_hooks and self._live:
            self._module_hooks = module_hooks(self._module_pre, self._module_post)

    def _module_pre(self, module: torch.nn.Module, args: Any) -> None:
        unit = self._units.get(_get_ident())
        if unit is not None and unit.awake:
            unit.tracker.enter_module(module, args)

    def _module_post(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        unit = self._units.get(_get_ident())
        if unit is not None and unit.awake:
            unit.tracker.exit_module(module, args, output)

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        unit = self._units.get(_get_ident()) or self._adopt()
        if unit is not None:
            unit.tracker.enter_optimizer()

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        unit = self._units.get(_get_ident())
        if unit is not None:
            unit.tracker.exit_optimizer()
