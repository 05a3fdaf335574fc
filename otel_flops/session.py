"""The facade: the one place that wires interceptors, Ledger, telemetry and report together."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from . import environment, ranks, report, tracebacks
from .energy import EnergyMonitor
from .ledger import Ledger, RootNames
from .settings import Settings, load
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .windows import Span

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
        self.names = RootNames(names)  # model labels: the user's names, else unique class names
        self._estimators = estimators
        self._meter_provider = meter_provider
        self._counting: Any = None
        self._undo: list[Any] = []
        self._owner_thread: int | None = None
        self._started = time.monotonic()
        self.alpha_profile: Any = None
        self.off: str | None = None  # why this session never counts (OTEL_SDK_DISABLED, a bad setting)
        self.open_windows: dict[int, Any] = {}  # otel_flops.window occurrences started and not yet stopped

    def start(self) -> Session:
        if self.energy is not None:
            self.energy.start()  # returns at once: its sources start in the background
        self._owner_thread = threading.get_ident()
        self._started = time.monotonic()
        self._undo = [*self._count_torch(), *self._instrument_sklearn()]
        tracebacks.install()
        self.telemetry.start(self._serve, self._meter_provider)
        return self

    def _count_torch(self) -> list[Any]:
        """Start torch counting (its dispatch mode, compile and CUDA-graph hooks); the undo callables.
        Where torch cannot be imported, nothing: scikit-learn is counted alone."""
        if not torch_importable():
            return []
        from .torch import compiled, cuda_graphs
        from .torch.full import FullCounting
        from .torch.steady import SteadyCounting

        counting = {"full": FullCounting, "steady": SteadyCounting}[self.settings.mode]
        self.alpha_profile = self._load_alpha_profile()
        self._counting = counting(self.ledger, self.settings, self.names, self.alpha_profile)
        self._counting.start()
        return [*compiled.install(), *cuda_graphs.install()]

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
        if self._counting is not None and self._owner_thread == threading.get_ident():
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
        tracker = self._counting.phase_tracker() if self._counting is not None else None
        if tracker is None:
            yield
            return
        with tracker.phase(name):
            yield

    def name_model(self, model: Any, name: str) -> None:
        """Label ``model``'s work ``name`` from now on (a nested ``track(model, name=...)``)."""
        self.names.give(model, name)
        if self._counting is not None:
            self._counting.relabel()

    def window_edge(self) -> None:
        """An ``otel_flops.window`` opens or closes on this thread (steady mode: a segment boundary)."""
        if self._owner_thread is not None and self._counting is not None:  # started, not stopped, torch counted
            self._counting.window_edge()

    def report(self, span: Span | None = None) -> Report:
        """The session's report, or with ``span`` (``windows.Span``: a nested ``track()``) its block's."""
        ledger, energy, seconds = span.figures() if span is not None else (self.ledger, self.energy, None)
        extra = {"steady": self._counting.stats()} if self.settings.mode == "steady" and self._counting else {}
        extra["incomplete"] = []
        if self._counting is not None:
            from .torch import compiled

            extra["incomplete"] = self._counting.incomplete() + compiled.incomplete()
        if self.off is not None:
            extra["off"] = self.off
        rank = ranks.current(self.settings.rank)
        if rank:
            extra["rank"] = rank
        elapsed = time.monotonic() - self._started if seconds is None else seconds
        extra["mfu"] = report.mfu_section(self.telemetry.peak_time, ledger,
                                          self.telemetry.elapsed if seconds is None else seconds)
        if self.alpha_profile is not None:
            extra["alpha"] = report.alpha_section(ledger, self.alpha_profile.key, elapsed)
        built = report.build(
            ledger, mode=self.settings.mode, environment=environment.describe(), energy=energy, extra=extra,
            open_windows=self._open_windows(),
        )
        return Report(built)

    def _open_windows(self) -> list[tuple[str, Any]]:
        """(name, work so far) of each window still open, so a report never drops one silently."""
        out = []
        for window in list(self.open_windows.values()):
            try:
                totals = window.so_far()
            except Exception:  # a failure here must not cost the user the rest of the report
                log.warning("otel-flops: cannot measure the open window %r", window.name, exc_info=True)
                continue
            if totals is not None:
                out.append((window.name, totals))
        return out


def torch_importable() -> bool:
    """Whether torch can be imported here (a scikit-learn-only service may have none). Only torch's
    own absence counts; any other import failure propagates."""
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "torch":
            raise
        return False
    return True


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
