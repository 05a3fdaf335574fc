"""The facade: the one place that wires interceptors, Ledger, telemetry and report together."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from . import environment, report
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

    def __init__(self, settings: Settings | None = None, *, serve: bool = False, names: dict[int, str] | None = None):
        self.settings = settings or load()
        self.ledger = Ledger()
        self.telemetry = Telemetry(self.ledger, self.settings)
        self._serve = serve
        self._names = names or {}
        self._phases: Any = None
        self._mode: Any = None
        self._owner_thread: int | None = None

    def start(self) -> Session:
        from .torch.dispatch import CountingMode
        from .torch.phases import PhaseTracker

        self._phases = PhaseTracker(self.ledger, self._names)
        self._phases.install()
        self._mode = CountingMode(self.ledger, self._phases)
        self._mode.__enter__()
        self._owner_thread = threading.get_ident()
        self.telemetry.start(self._serve)
        return self

    def stop(self) -> None:
        if self._mode is not None:
            if threading.get_ident() == self._owner_thread:
                self._mode.__exit__(None, None, None)
            self._mode = None
            self._phases.uninstall()
        self.telemetry.stop()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._phases.explicit.append(name)
        try:
            yield
        finally:
            self._phases.explicit.pop()

    def report(self) -> Report:
        return Report(report.build(self.ledger, mode=self.settings.mode, environment=environment.describe()))


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
