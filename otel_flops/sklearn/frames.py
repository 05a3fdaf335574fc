"""Who is counting right now: the stack of wrapped calls in progress, per thread.

A call is counted into the sink (a Ledger) of the call around it, or, at the top level, of the
estimator's own tracker or the process-wide session. A call whose estimator has a formula for
the method (or whose ATen ops are measured, on torch input) counts its whole work itself, so the
wrapped calls it makes inside (a forest's trees,
a label encoder) are not counted again; a call with no formula (Pipeline, GridSearchCV, a
mixin's ``fit_transform`` or ``score``) leaves the counting to the calls inside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..ledger import Ledger

_local = threading.local()
_global_sinks: list[Ledger] = []
_tracked: dict[int, Ledger] = {}


@dataclass(eq=False)
class Frame:
    """One wrapped call in progress."""

    est: Any
    method: str
    phase: str
    sink: Ledger
    formula: Callable[..., float] | None
    nested: bool = False  # a wrapped call was made inside this one
    measured: Any = None  # a Measurement when the call's ATen ops are counted (torch input)

    @property
    def suppresses(self) -> bool:
        return self.formula is not None or self.measured is not None


def stack() -> list[Frame]:
    s = getattr(_local, "stack", None)
    if s is None:
        s = _local.stack = []
    return s


def top() -> Frame | None:
    s = stack()
    return s[-1] if s else None


def sink_for(est: Any = None) -> Ledger | None:
    """Where a call made here would be counted; None when it would not be counted at all."""
    parent = top()
    if parent is not None:
        return None if parent.suppresses else parent.sink
    if est is not None and id(est) in _tracked:
        return _tracked[id(est)]
    return _global_sinks[-1] if _global_sinks else None


def push_global(ledger: Ledger) -> Callable[[], None]:
    _global_sinks.append(ledger)
    return lambda: _global_sinks.remove(ledger) if ledger in _global_sinks else None


def track(est: Any, ledger: Ledger) -> Callable[[], None]:
    """Count this one object's calls (and the calls they make) into ``ledger``; no change to the object."""
    _tracked[id(est)] = ledger

    def untrack() -> None:
        if _tracked.get(id(est)) is ledger:
            del _tracked[id(est)]

    return untrack
