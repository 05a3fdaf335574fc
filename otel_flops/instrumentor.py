"""The OpenTelemetry instrumentor: ``opentelemetry-instrument python train.py`` counts FLOPs.

Registered under the ``opentelemetry_instrumentor`` entry point. It publishes through the
MeterProvider that ``opentelemetry-instrument`` configured (or the one passed as
``meter_provider=``), and ``uninstrument()`` removes every hook, mode and patch it installed.
"""

from __future__ import annotations

import atexit
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.dependencies import DependencyConflict, get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from .integrations import attach_to_trainers
from .session import Session, begin, end
from .settings import load_or_tell

_instruments: tuple[str, ...] = ()
_instruments_any = ("torch >= 2.4", "scikit-learn >= 1.3")


class OtelFlopsInstrumentor(BaseInstrumentor):
    """Counts torch and scikit-learn compute into the application's OpenTelemetry metrics."""

    _session: Session | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _check_dependency_conflicts(self) -> DependencyConflict | None:
        """Either library is enough: each one's work is counted where it is installed."""
        return get_dependency_conflicts(_instruments, _instruments_any)

    def _instrument(self, **kwargs: Any) -> None:
        """Start counting; OTEL_SDK_DISABLED=true or a bad setting: one line, and the program runs uncounted."""
        settings = load_or_tell()
        if settings is None:
            return
        session = Session(settings, meter_provider=kwargs.get("meter_provider"))
        OtelFlopsInstrumentor._session = begin(session)
        attach_to_trainers()
        if settings.report:
            atexit.register(_finish, session, settings.report)

    def _uninstrument(self, **kwargs: Any) -> None:
        session, OtelFlopsInstrumentor._session = OtelFlopsInstrumentor._session, None
        if session is not None:
            end(session)


def _finish(session: Session, path: str) -> None:
    """At exit: stop (energy takes its last reading), then write the report."""
    end(session)
    session.report().save(path)
