"""The facade: the one place that wires interceptors, Ledger, telemetry and report together."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import environment, ranks, report, tracebacks
from .energy import EnergyMonitor
from .ledger import Ledger
from .settings import Settings, load
from .telemetry import Telemetry

log = logging.getLogger("otel_flops")


class Report(dict):
    """The JSON report as a dict, with its terminal table and a writer."""

    def table(self) -> str:
        return report.table(self)

    def save(self, path: str) -> str:
        return str(report.write(self, path))


class Session:
    """One counting session: hooks and dispatch mode installed, counts flowing to the Ledger."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        serve: bool = False,
        names: dict[int, str] | None = None,
        estimators: list[Any] | None = None,
        meter_provider: Any = None,
    ):
        self.settings = settings or load()
        self.ledger = Ledger()
        self.energy = EnergyMonitor(self.settings) if self.settings.energy else None
        self.telemetry = Telemetry(self.ledger, self.settings, self.energy)
        self._serve = serve
        self._names = names or {}
        self._estimators = estimators
        self._meter_provider = meter_provider
        self._counting: Any = None
        self._undo: list[Any] = []
        self._owner_thread: int | None = None
        self._started = time.monotonic()
        self.alpha_profile: Any = None

    def start(self) -> Session:
        from .torch import compiled, cuda_graphs
        from .torch.full import FullCounting
        from .torch.steady import SteadyCounting

        if self.energy is not None:
            self.energy.start()  # returns at once: its sources start in the background
        counting = {"full": FullCounting, "steady": SteadyCounting}[self.settings.mode]
        self.alpha_profile = self._load_alpha_profile()
        self._counting = counting(self.ledger, self.settings, self._names, self.alpha_profile)
        self._counting.start()
        self._owner_thread = threading.get_ident()
        self._started = time.monotonic()
        self._undo = [*compiled.install(), *cuda_graphs.install(), *self._instrument_sklearn()]
        tracebacks.install()
        self.telemetry.start(self._serve, self._meter_provider)
        return self

    def _load_alpha_profile(self) -> Any:
        if not self.settings.alpha_profile:
            return None
        from .analysis import alpha

        try:
            return alpha.load_for_this_device(self.settings.alpha_profile)
        except (ValueError, KeyError, OSError) as exc:
            log.error("otel-flops: cannot use the alpha-FLOPs profile %s (%s); counting goes on without it",
                      self.settings.alpha_profile, exc)
            return None

    def _instrument_sklearn(self) -> list[Any]:
        """Given estimators are wrapped one by one; with none given, estimator classes are patched."""
        if not self.settings.sklearn:
            return []
        try:
            from . import sklearn as backend
        except ImportError:
            return []
        if self._estimators is not None:
            return [backend.track_estimator(e, self.ledger) for e in self._estimators]
        return [backend.install(self.ledger)]

    def stop(self) -> None:
        if self._owner_thread is not None and threading.get_ident() == self._owner_thread:
            self._counting.stop()
        self._owner_thread = None
        for undo in reversed(self._undo):
            undo()
        self._undo = []
        if self.energy is not None:
            self.energy.stop()
        self.telemetry.stop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        tracker = self._counting.phase_tracker()
        if tracker is None:
            yield
            return
        with tracker.phase(name):
            yield

    def report(self) -> Report:
        from .torch import compiled

        extra = {"steady": self._counting.stats()} if self.settings.mode == "steady" and self._counting else {}
        extra["incomplete"] = (self._counting.incomplete() if self._counting else []) + compiled.incomplete()
        rank = ranks.current(self.settings.rank)
        if rank:
            extra["rank"] = rank
        elapsed = time.monotonic() - self._started
        extra["mfu"] = report.mfu_section(self.ledger, elapsed, self.settings.peak_flops)
        if self.alpha_profile is not None:
            extra["alpha"] = report.alpha_section(self.ledger, self.alpha_profile.key, elapsed)
        built = report.build(
            self.ledger, mode=self.settings.mode, environment=environment.describe(), energy=self.energy, extra=extra
        )
        return Report(built)


_active: Session | None = None


def active() -> Session | None:
    return _active


def begin(session: Session) -> Session:
    global _active
    if _active is not None:
        raise RuntimeError("otel-flops: a counting session is already active; stop it first")
    _active = session.start()
    return session


def end(session: Session) -> None:
    global _active
    session.stop()
    if _active is session:
        _active = None
