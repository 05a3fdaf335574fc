"""Counting across scikit-learn's joblib tasks, so n_jobs > 1 loses and doubles nothing.

Every task ``sklearn.utils.parallel.delayed`` makes while counting is on carries the call that
made it. In a worker thread, the task runs under that call, so its nested calls are counted
(or suppressed) exactly as they would be inline. In a worker process, where the parent's
Ledger cannot reach, the task runs under a Ledger of its own with the classes patched, and
returns its counts with its result; ``Parallel`` unpacks them in the parent into the Ledger
of the call that dispatched the tasks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ..ledger import CountKey, Ledger, Totals
from . import frames


class Shipped:
    """A worker process's result and the counts it made."""

    def __init__(self, result: Any, counts: list[tuple[CountKey, Totals]], uncounted: dict[str, int],
                 errors: dict[str, int]) -> None:
        self.result = result
        self.counts = counts
        self.uncounted = uncounted
        self.errors = errors

    def merge_into(self, ledger: Ledger) -> Any:
        for key, t in self.counts:
            ledger.add(CountKey(*key), t.flops, t.bops, t.calls)
        for op, calls in self.uncounted.items():
            for _ in range(calls):
                ledger.add_uncounted(op)
        for op, calls in self.errors.items():
            ledger.add_error(op, calls)
        return self.result


class CountedTask:
    """A task function that knows the call which dispatched it."""

    def __init__(self, function: Callable[..., Any], frame: frames.Frame | None, count: bool) -> None:
        self.function = function
        self.frame = frame
        self.count = count  # False under a call that counts its own work: nothing inside is counted
        self.pid = os.getpid()
        self.thread = threading.get_ident()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "frame": None}

    def with_config_and_warning_filters(self, config: Any, warning_filters: Any) -> CountedTask:
        """Lets sklearn attach its configuration to the task inside, as it would without us."""
        attach = getattr(self.function, "with_config_and_warning_filters", None)
        if attach is not None:
            self.function = attach(config, warning_filters)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if os.getpid() != self.pid:
            if not self.count:
                return self.function(*args, **kwargs)
            return self._in_process(args, kwargs)
        if threading.get_ident() == self.thread:
            return self.function(*args, **kwargs)
        stack = frames.stack()
        saved = stack[:]
        stack[:] = [self.frame] if self.frame is not None else []
        try:
            return self.function(*args, **kwargs)
        finally:
            stack[:] = saved

    def _in_process(self, args: tuple, kwargs: dict) -> Shipped:
        from .wrap import acquire

        _worker_patch(acquire)
        ledger = Ledger()
        untrack = frames.push_global(ledger)
        stack = frames.stack()
        saved = stack[:]
        stack[:] = []
        try:
            result = self.function(*args, **kwargs)
        finally:
            stack[:] = saved
            untrack()
        return Shipped(result, [(tuple(k), t) for k, t in ledger.items()], dict(ledger.uncounted()),
                       dict(ledger.errors))


_worker_patched: list[Callable[[], None]] = []


def _worker_patch(acquire: Callable[[], Callable[[], None]]) -> None:
    """A worker process keeps the classes patched for its life; the wrappers are idle between tasks."""
    if not _worker_patched:
        _worker_patched.append(acquire())


def _unpack(results: Any, ledger: Ledger | None) -> Any:
    def one(r: Any) -> Any:
        if isinstance(r, Shipped):
            return r.merge_into(ledger) if ledger is not None else r.result
        return r

    if isinstance(results, list):
        return [one(r) for r in results]
    if isinstance(results, Iterable) and not isinstance(results, (str, bytes, dict, tuple)):
        return (one(r) for r in results)
    return results


def patch() -> Callable[[], None]:
    """Hook sklearn's Parallel; returns the undo.

    The dispatching call is captured when ``Parallel`` is called, in the caller's thread: joblib
    may build later tasks from the iterable in a thread of its own.
    """
    from sklearn.utils import parallel as skp

    parallel_call = skp.Parallel.__call__

    def call(self: Any, iterable: Any) -> Any:
        frame, ledger = frames.top(), frames.sink_for()
        if frame is None and ledger is None:
            return parallel_call(self, iterable)
        tasks = ((CountedTask(fn, frame, ledger is not None), args, kwargs) for fn, args, kwargs in iterable)
        return _unpack(parallel_call(self, tasks), ledger)

    skp.Parallel.__call__ = call
    return lambda: setattr(skp.Parallel, "__call__", parallel_call)
