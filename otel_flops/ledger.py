"""Count events in, aggregates out: the single source of both the metrics and the report.

Interceptors call ``add``; nothing here knows OpenTelemetry. Label sets stay bounded: the
per-op and per-model labels are capped, and values past the cap fold into "other".
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

OTHER = "other"


class CountKey(NamedTuple):
    """One count event's labels. ``op`` is the ATen packet or the sklearn method target."""

    framework: str
    phase: str
    op: str
    family: str
    dtype: str
    bits: int
    device: str
    model: str


@dataclass
class Totals:
    flops: int = 0
    bops: int = 0
    calls: int = 0


class Ledger:
    """Thread-safe running totals per CountKey, plus the ops it could not count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[CountKey, Totals] = {}
        self.uncounted: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.steps = 0

    def add(self, key: CountKey, flops: int, bops: int, calls: int = 1) -> None:
        with self._lock:
            totals = self._totals.get(key)
            if totals is None:
                totals = self._totals[key] = Totals()
            totals.flops += flops
            totals.bops += bops
            totals.calls += calls

    def add_uncounted(self, op: str) -> None:
        with self._lock:
            self.uncounted[op] += 1

    def add_error(self, op: str) -> None:
        with self._lock:
            self.errors[op] += 1

    def add_step(self) -> None:
        with self._lock:
            self.steps += 1

    def items(self) -> list[tuple[CountKey, Totals]]:
        """A consistent copy of every key and its totals."""
        with self._lock:
            return [(k, Totals(t.flops, t.bops, t.calls)) for k, t in self._totals.items()]

    def totals(self) -> Totals:
        out = Totals()
        for _, t in self.items():
            out.flops += t.flops
            out.bops += t.bops
            out.calls += t.calls
        return out


def grouped(items: list[tuple[CountKey, Totals]], *fields: str) -> dict[tuple, Totals]:
    """Totals summed over every field not named."""
    out: dict[tuple, Totals] = {}
    for key, t in items:
        group = tuple(getattr(key, f) for f in fields)
        acc = out.setdefault(group, Totals())
        acc.flops += t.flops
        acc.bops += t.bops
        acc.calls += t.calls
    return out


def capped(values: Iterator[str] | list[str], cap: int) -> dict[str, str]:
    """Map each value to itself for the first ``cap`` distinct values seen, else to OTHER."""
    mapping: dict[str, str] = {}
    for value in values:
        if value not in mapping:
            mapping[value] = value if len(mapping) < cap else OTHER
    return mapping
