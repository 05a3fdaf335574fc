"""Named windows: the FLOPs, BOPs, joules and seconds of a block of the user's program.

``otel_flops.window("eval")`` is a context manager, or ``start()``/``stop()`` for spans that do
not fit a block. At each edge the window reads the session's running totals: the Ledger's FLOPs
and BOPs (``Ledger.work``), the energy sources' cumulative joules, and a monotonic clock; at
stop the differences are added to the Ledger under the window's name, which the report
(``windows``) and the metrics (``otel_flops_window_*_total``) both read. Windows may nest and
repeat: every occurrence is measured on its own, and occurrences of one name add up.

Energy is what the sources measure: NVML's GPU counter is read at both edges, so a GPU's joules
are exact; CodeCarbon's CPU and RAM estimate is its latest reading (at most
``OTEL_FLOPS_ENERGY_INTERVAL`` seconds old), so short windows get it coarsely. Where no source
measures (no GPU and no CodeCarbon, or energy off), a window's joules are None.

In steady mode an edge is a segment boundary (like an explicit phase block), so a window gets
exactly the work that ran inside it; an edge inside a model's forward, an optimizer step or a
backward is no boundary, and the report says the count is approximate then.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .containment import Containment
from .ledger import WindowTotals

log = logging.getLogger("otel_flops")
CONTAINMENT = Containment()  # a failure of ours: counted in the session's errors, logged once per site


@dataclass(frozen=True)
class Mark:
    """The session's running totals at one edge: FLOPs, BOPs, joules per (hw_type, device, source)
    or None where energy is not measured, and a monotonic time in seconds."""

    flops: int
    bops: int
    joules: dict[tuple[str, str, str], float] | None
    at: float


def mark(session: Any) -> Mark:
    """Read ``session``'s running totals now (``Ledger.work``, ``EnergyMonitor.reading``)."""
    flops, bops = session.ledger.work()
    joules = dict(session.energy.reading().joules) if session.energy is not None else None
    return Mark(flops, bops, joules, time.perf_counter())


def between(start: Mark, stop: Mark) -> WindowTotals:
    """One occurrence's totals: ``stop`` less ``start``. Joules come from the (hw_type, device,
    source) counters read at both edges; one still starting at the first edge is left out."""
    both = (start.joules or {}).keys() & (stop.joules or {}).keys()
    joules = {key: stop.joules[key] - start.joules[key] for key in sorted(both)}  # type: ignore[index]
    return WindowTotals(stop.flops - start.flops, stop.bops - start.bops, joules, stop.at - start.at, 1, bool(both))


class Window:
    """``otel_flops.window(name)``: a context manager, or ``start()`` and ``stop()``.

    Outside a counting session it measures nothing. ``stop()`` returns the occurrence's
    ``WindowTotals`` (None when nothing was measured). Starting a started window or stopping one
    that is not started logs a warning and does nothing: the user's program goes on.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"otel_flops.window: name must be a non-empty string, got {name!r}")
        self.name = name
        self._open = False
        self._session: Any = None
        self._start: Mark | None = None

    def __enter__(self) -> Window:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> Window:
        """Open the window: its counts run from here."""
        from .session import active

        if self._open:
            log.warning("otel-flops: window %r is already started; stop it before starting it again", self.name)
            return self
        self._open = True
        session = active()
        if session is None:
            return self
        try:
            session.window_edge()
            self._session, self._start = session, mark(session)
            session.open_windows[id(self)] = self
        except Exception:
            CONTAINMENT.failed("window start", f"window {self.name!r} is not measured", ledger=session.ledger)
        return self

    def so_far(self) -> WindowTotals | None:
        """The work of this occurrence from its start until now, leaving it open (a report built while
        it is open shows it, marked open, rather than dropping it); None when it measures nothing."""
        if self._start is None:
            return None
        return between(self._start, mark(self._session))

    def stop(self) -> WindowTotals | None:
        """Close the window and add this occurrence to its name's totals; returns them."""
        if not self._open:
            log.warning("otel-flops: window %r is not started; start it before stopping it", self.name)
            return None
        session, start = self._session, self._start
        self._open, self._session, self._start = False, None, None
        if start is None:  # started outside a session
            return None
        session.open_windows.pop(id(self), None)
        try:
            session.window_edge()
            totals = between(start, mark(session))
            session.ledger.add_window(self.name, totals)
            return totals
        except Exception:
            CONTAINMENT.failed("window stop", f"this occurrence of window {self.name!r} is not counted",
                               ledger=session.ledger)
            return None


class Span:
    """A nested ``track()``'s block in the session it shares (``otel-flops run``, an outer ``track()``):
    its report is the work inside the block, as a window's totals are. At each edge (a steady-mode
    segment boundary, as a window's) it reads the Ledger (``Ledger.snapshot``) and the energy
    sources; after the block its figures stay those of the block."""

    def __init__(self, session: Any) -> None:
        session.window_edge()
        self.session = session
        self._start = session.ledger.snapshot()
        self._energy = session.energy.reading() if session.energy is not None else None
        self._at = time.perf_counter()
        self._end: tuple[Any, Any, float] | None = None  # (ledger, energy reading, seconds) once stopped

    def stop(self) -> None:
        """The block ended: freeze its figures."""
        if self._end is None:
            self.session.window_edge()
            self._end = self._now()

    def _now(self) -> tuple[Any, Any, float]:
        energy = self.session.energy
        return (self.session.ledger.since(self._start), energy.reading() if energy is not None else None,
                time.perf_counter() - self._at)

    def figures(self) -> tuple[Any, Any, float]:
        """(the block's ledger, its energy as an ``EnergyMonitor``-like reader or None, its seconds)."""
        ledger, reading, seconds = self._end or self._now()
        energy = None if reading is None else _EnergySince(self.session.energy, self._energy, reading)
        return ledger, energy, seconds


class _EnergySince:
    """The energy sources' readings between two edges, read as the report reads an ``EnergyMonitor``;
    a source that had not started at the first edge is left out (as in a window)."""

    def __init__(self, monitor: Any, start: Any, end: Any) -> None:
        self.unavailable = monitor.unavailable
        both = start.joules.keys() & end.joules.keys()
        self._reading = type(end)({key: end.joules[key] - start.joules[key] for key in sorted(both)},
                                  dict(end.watts), end.emissions_g - start.emissions_g)

    def reading(self) -> Any:
        return self._reading

