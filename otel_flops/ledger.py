"""Count events in, aggregates out: the single source of both the metrics and the report.

Interceptors call ``add``; nothing here knows OpenTelemetry. Label sets stay bounded: every
label a user controls (model, op, phase, window) is capped by ``LabelCaps``, and values past
the cap fold into "other".
Steady mode credits whole recorded segments with ``credit``, an O(1) call per replay; the
records are multiplied out only when someone reads the totals. ``work`` (running FLOPs and BOPs,
O(records)) is what ``otel_flops.window`` reads at its edges; the windows' totals live here too.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

OTHER = "other"
NO_MODULE = "(none)"  # the module path of work outside every model module (optimizer, preprocessing)
ROOT_MODULE = "(root)"  # the module path of a model's own ops, outside its submodules
# The phases torch counting sets itself (torch/phases.py names them from here); never capped.
TORCH_PHASES = ("preprocessing", "forward", "inference", "loss", "backward", "optimizer")


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
    module: str = NO_MODULE  # submodule path under the model, to OTEL_FLOPS_MODULE_DEPTH ("transformer.h.0")


@dataclass
class Totals:
    flops: int = 0
    bops: int = 0
    calls: int = 0
    comm_bytes: int = 0  # bytes moved by collectives: communication, not FLOPs
    alpha_flops: int = 0  # "perceived" FLOPs, with an alpha-FLOPs profile loaded
    predicted_ns: int = 0  # the time that profile predicts

    def absorb(self, other: Totals, times: int = 1) -> None:
        self.flops += other.flops * times
        self.bops += other.bops * times
        self.calls += other.calls * times
        self.comm_bytes += other.comm_bytes * times
        self.alpha_flops += other.alpha_flops * times
        self.predicted_ns += other.predicted_ns * times

    def less(self, other: Totals | None) -> Totals:
        """These totals less ``other`` (an earlier reading of the same key; None: nothing then)."""
        if other is None:
            return Totals(*(getattr(self, f.name) for f in fields(Totals)))
        return Totals(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(Totals)))


@dataclass(eq=False)
class Record:
    """The counts of one recorded segment, and how many times it has been credited."""

    counts: dict[CountKey, Totals]
    uncounted: Counter[str]
    steps: int = 0  # optimizer steps the segment completed
    replays: int = 0

    def __post_init__(self) -> None:
        self.work = (sum(t.flops for t in self.counts.values()), sum(t.bops for t in self.counts.values()))

    def same_counts(self, other: Record) -> bool:
        """Same FLOPs and BOPs per key, and the same uncounted ops; zero-FLOP call counts may differ."""
        return self.uncounted == other.uncounted and _work(self.counts) == _work(other.counts)


def _absorb_into(table: dict, key: CountKey, totals: Totals, times: int = 1) -> None:
    target = table.get(key)
    if target is None:
        target = table[key] = Totals()
    target.absorb(totals, times)


def _work(counts: dict[CountKey, Totals]) -> dict[CountKey, tuple[int, int, int]]:
    return {k: (t.flops, t.bops, t.comm_bytes) for k, t in counts.items() if t.flops or t.bops or t.comm_bytes}


@dataclass
class WindowTotals:
    """What the occurrences of one named window did: FLOPs, BOPs, joules per (hw_type, device,
    source) as the energy sources measured them, wall-clock seconds, and how many times it ran."""

    flops: int = 0
    bops: int = 0
    joules: dict[tuple[str, str, str], float] = field(default_factory=dict)
    seconds: float = 0.0
    count: int = 0
    measured: bool = False  # an energy source gave its joules (else joules is empty: not measured)

    def absorb(self, other: WindowTotals) -> None:
        self.flops += other.flops
        self.bops += other.bops
        for key, j in other.joules.items():
            self.joules[key] = self.joules.get(key, 0.0) + j
        self.seconds += other.seconds
        self.count += other.count
        self.measured = self.measured or other.measured

    def less(self, other: WindowTotals | None) -> WindowTotals:
        """These totals less ``other`` (an earlier reading of the same window; None: none then)."""
        if other is None:
            other = WindowTotals()
        joules = {key: j - other.joules.get(key, 0.0) for key, j in self.joules.items()}
        return WindowTotals(self.flops - other.flops, self.bops - other.bops, joules, self.seconds - other.seconds,
                            self.count - other.count, self.measured)

    @property
    def total_joules(self) -> float | None:
        """Joules summed over components, or None where no energy source measured the window."""
        return sum(self.joules.values()) if self.measured else None


class Ledger:
    """Thread-safe running totals per CountKey, plus the ops it could not count."""

    def __init__(self, mirror: Ledger | None = None) -> None:
        # Steady mode records a segment into a ledger of its own that writes through to the
        # session's, so readers see the counts of a segment still being recorded.
        self._mirror = mirror
        self._lock = threading.Lock()
        self._totals: dict[CountKey, Totals] = {}
        self._uncounted: Counter[str] = Counter()
        self._records: list[Record] = []
        self.errors: Counter[str] = Counter()
        self._steps = 0
        self._flops = self._bops = 0  # running sums of _totals: windows read them at every edge
        self._windows: dict[str, WindowTotals] = {}

    @property
    def root(self) -> Ledger:
        """The ledger this one writes through to in the end: the session's."""
        return self._mirror.root if self._mirror is not None else self

    def add(self, key: CountKey, flops: int, bops: int, calls: int = 1, comm_bytes: int = 0) -> None:
        with self._lock:
            totals = self._totals.get(key)
            if totals is None:
                totals = self._totals[key] = Totals()
            totals.flops += flops
            totals.bops += bops
            totals.calls += calls
            totals.comm_bytes += comm_bytes
            self._flops += flops
            self._bops += bops
        if self._mirror is not None:
            self._mirror.add(key, flops, bops, calls, comm_bytes)

    def add_totals(self, key: CountKey, totals: Totals) -> None:
        """Add counts that carry more than FLOPs and BOPs (an alpha-FLOPs prediction)."""
        with self._lock:
            _absorb_into(self._totals, key, totals)
            self._flops += totals.flops
            self._bops += totals.bops
        if self._mirror is not None:
            self._mirror.add_totals(key, totals)

    def add_uncounted(self, op: str) -> None:
        with self._lock:
            self._uncounted[op] += 1
        if self._mirror is not None:
            self._mirror.add_uncounted(op)

    def add_error(self, op: str, n: int = 1) -> None:
        with self._lock:
            self.errors[op] += n
        if self._mirror is not None:
            self._mirror.add_error(op, n)

    def add_step(self) -> None:
        with self._lock:
            self._steps += 1
        if self._mirror is not None:
            self._mirror.add_step()

    @property
    def steps(self) -> int:
        with self._lock:
            return self._steps + sum(record.steps * record.replays for record in self._records)

    def record(self) -> Record:
        """This ledger's counts, frozen as a segment record."""
        return Record(dict(self.items()), self.uncounted(), self.steps)

    def credit(self, record: Record) -> None:
        """Add a recorded segment's counts once more: one integer increment once it is known.
        (Its recorded occurrence itself reached the totals through the mirror.)"""
        if record.replays:
            record.replays += 1  # only the session's thread credits; readers see n or n + 1
            return
        with self._lock:
            self._records.append(record)
            record.replays = 1

    def fold(self, record: Record) -> None:
        """Move a record's credited counts into the plain totals, so the record can be dropped."""
        with self._lock:
            if record not in self._records:
                return
            self._records.remove(record)
            for key, t in record.counts.items():
                _absorb_into(self._totals, key, t, record.replays)
            for op, calls in record.uncounted.items():
                self._uncounted[op] += calls * record.replays
            self._steps += record.steps * record.replays
            self._flops += record.work[0] * record.replays
            self._bops += record.work[1] * record.replays
            record.replays = 0

    def work(self) -> tuple[int, int]:
        """(FLOPs, BOPs) counted so far, credited records included: O(records), not O(keys)."""
        with self._lock:
            return (self._flops + sum(r.work[0] * r.replays for r in self._records),
                    self._bops + sum(r.work[1] * r.replays for r in self._records))

    def add_window(self, name: str, totals: WindowTotals) -> None:
        """Add one occurrence of the window ``name`` (occurrences of one name accumulate)."""
        with self._lock:
            self._windows.setdefault(name, WindowTotals()).absorb(totals)

    def windows(self) -> dict[str, WindowTotals]:
        """A copy of every window's totals, by name in the order first closed."""
        with self._lock:
            out = {}
            for name, totals in self._windows.items():
                out[name] = WindowTotals()
                out[name].absorb(totals)
            return out

    def snapshot(self) -> Snapshot:
        """Everything counted so far, frozen: the start of a nested ``track()``'s block (``since``)."""
        with self._lock:
            errors = Counter(self.errors)
        return Snapshot(dict(self.items()), self.uncounted(), errors, self.steps, self.windows())

    def since(self, start: Snapshot) -> Ledger:
        """A ledger of what was counted after ``start``: a nested ``track()``'s own work, as a window's."""
        now, out = self.snapshot(), Ledger()
        for key, totals in now.counts.items():
            delta = totals.less(start.counts.get(key))
            if delta.calls or delta.flops or delta.bops or delta.comm_bytes:
                out.add_totals(key, delta)
        out._uncounted = now.uncounted - start.uncounted
        out.errors = now.errors - start.errors
        out._steps = now.steps - start.steps
        out._windows = {name: w.less(start.windows.get(name)) for name, w in now.windows.items()
                        if w.count > getattr(start.windows.get(name), "count", 0)}
        return out

    def items(self) -> list[tuple[CountKey, Totals]]:
        """A consistent copy of every key and its totals, credited records multiplied out."""
        with self._lock:
            merged: dict[CountKey, Totals] = {}
            for key, t in self._totals.items():
                _absorb_into(merged, key, t)
            for record in self._records:
                for key, t in record.counts.items():
                    _absorb_into(merged, key, t, record.replays)
        return list(merged.items())

    def uncounted(self) -> Counter[str]:
        with self._lock:
            merged = Counter(self._uncounted)
            for record in self._records:
                for op, calls in record.uncounted.items():
                    merged[op] += calls * record.replays
        return merged

    def totals(self) -> Totals:
        out = Totals()
        for _, t in self.items():
            out.absorb(t)
        return out


@dataclass(frozen=True)
class Snapshot:
    """A Ledger's counts at one moment (``Ledger.snapshot``), to subtract later (``Ledger.since``)."""

    counts: dict[CountKey, Totals]
    uncounted: Counter[str]
    errors: Counter[str]
    steps: int
    windows: dict[str, WindowTotals]


def grouped(items: list[tuple[CountKey, Totals]], *fields: str) -> dict[tuple, Totals]:
    """Totals summed over every field not named."""
    out: dict[tuple, Totals] = {}
    for key, t in items:
        group = tuple(getattr(key, f) for f in fields)
        out.setdefault(group, Totals()).absorb(t)
    return out


class LabelCaps:
    """The one bound on every label a user controls: per label, the first ``cap`` distinct values
    keep their name and later ones fold into OTHER, for good, so a value never moves between its own
    series and OTHER from one collection to the next (counters stay monotonic). Values in ``keep``
    (the built-in phases) are never folded and use none of the cap. Thread-safe (readers collect
    on their own threads)."""

    def __init__(self, caps: Mapping[str, int], keep: Mapping[str, frozenset[str]] | None = None) -> None:
        self._caps = dict(caps)
        self._keep = dict(keep or {})
        self._seen: dict[str, dict[str, str]] = {label: {} for label in self._caps}
        self._admitted = dict.fromkeys(self._caps, 0)
        self._lock = threading.Lock()

    def fold(self, label: str, value: str) -> str:
        """``value`` itself while ``label`` is under its cap (or has none, or ``value`` is kept), else OTHER."""
        if label not in self._caps or value in self._keep.get(label, ()):
            return value
        with self._lock:
            seen = self._seen[label]
            folded = seen.get(value)
            if folded is None:
                folded = seen[value] = value if self._admitted[label] < self._caps[label] else OTHER
                self._admitted[label] += folded == value
            return folded


class RootNames:
    """The model label of each root module object: the user's name (``track(model, name=...)``) first,
    else its class name made unique per object in order of first use ("Sequential", "Sequential#2"),
    so two models of one class (a GAN's generator and discriminator) never merge. One per session,
    shared by every thread's phase tracker so an object has one label everywhere."""

    def __init__(self, given: Mapping[int, str] | None = None) -> None:
        self._given = dict(given or {})  # by id(): the user's names
        self._auto: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._taken = set(self._given.values())
        self._lock = threading.Lock()

    def give(self, model: Any, name: str) -> None:
        """Label ``model``'s work ``name`` from now on (a nested ``track(model, name=...)``)."""
        with self._lock:
            self._given[id(model)] = name
            self._taken.add(name)

    def of(self, module: Any, model: Any) -> str:
        """The label of a root forward of ``module`` (``model``: the module it wraps, or itself)."""
        given = self._given.get(id(module)) or self._given.get(id(model))
        if given:
            return given
        with self._lock:
            name = self._auto.get(model)
            if name is None:
                base = name = type(model).__name__
                n = 1
                while name in self._taken:
                    n += 1
                    name = f"{base}#{n}"
                self._taken.add(name)
                self._auto[model] = name
            return name
