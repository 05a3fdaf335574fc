"""otel-flops: FLOPs and BOPs of PyTorch and scikit-learn work, as OpenTelemetry metrics.

    with otel_flops.track(model) as t:
        train()
    print(t.report().table())
"""

from __future__ import annotations

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (dynamic version)

import contextlib
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import wrapt

from .settings import Settings, SettingsError, load_or_tell, sdk_disabled
from .windows import CONTAINMENT, Span, Window

if TYPE_CHECKING:
    from .ledger import Ledger
    from .session import Report, Session

# Follow torch.compile from now on (at once if Dynamo is loaded, else when it is): graphs compiled
# before a session starts are counted in it too.
wrapt.register_post_import_hook("otel_flops.torch.compiled:follow_dynamo", "torch._dynamo.output_graph")

__all__ = ["track", "instrument", "uninstrument", "phase", "window", "Report", "Session", "Settings", "SettingsError"]

# Public names whose modules import torch, loaded on first access (PEP 562) so that importing the
# package, and with it every `otel-flops ... --help`, stays free of torch.
_LAZY = {"Report": ".session", "Session": ".session"}


def __getattr__(name: str) -> Any:
    """Load a name of ``_LAZY`` from its module on first access; AttributeError for any other."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class Tracker:
    """The handle ``track()`` returns: a context manager with a report. Inside a session it shares
    (``span``: a nested ``track()``) the report is the block's own work, not the session's."""

    def __init__(self, session: Session, owned: bool, span: Span | None = None) -> None:
        self.session = session
        self._owned = owned
        self._span = span

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
            from .session import end

            end(self.session)
        elif self._span is not None:
            try:
                self._span.stop()
            except Exception:
                CONTAINMENT.failed("track stop", "this block's report runs on to now", ledger=self.session.ledger)

    def report(self) -> Report:
        return self.session.report(self._span)

    def counts(self) -> Ledger:
        """The block's counts: the session's Ledger, or a nested ``track()``'s own (``Ledger.since``)."""
        return self._span.figures()[0] if self._span is not None else self.session.ledger

    @property
    def endpoint(self) -> Any:
        return self.session.telemetry.endpoint


def track(model: Any = None, *, name: str | None = None, serve: bool = False, **overrides: Any) -> Tracker:
    """Count everything torch does from here until the block ends.

    ``model`` and ``name`` set the model label of that module's work; a scikit-learn estimator
    given as ``model`` is wrapped alone (otherwise estimator classes are patched globally).
    ``serve=True`` also serves
    Prometheus /metrics (host and port from the settings or ``host=``/``port=``). Inside an
    already active session (``otel-flops run``, an outer ``track()``) this shares that session: its
    report is the work inside the block, and ``name`` labels ``model``'s work from here on.
    """
    from .session import Session, active, begin

    _check_call("track", serve, name)
    current = active()
    if current is not None:
        return _nested(current, model, name)
    from .sklearn import is_estimator

    settings = load_or_tell()
    if settings is None:
        return Tracker(_off(), owned=False)
    settings = settings.with_overrides("track", **overrides)
    if model is not None and is_estimator(model):
        return Tracker(begin(Session(settings, serve=serve, estimators=[model])), owned=True)
    names = {id(model): name} if model is not None and name else {}  # else its class name, made unique
    return Tracker(begin(Session(settings, serve=serve, names=names)), owned=True)


def _nested(session: Session, model: Any, name: str | None) -> Tracker:
    """A ``track()`` inside an active session: a span over the block (``windows.Span``); a failure of
    ours leaves it reporting the whole session, after one logged line."""
    try:
        if model is not None and name:
            session.name_model(model, name)
        return Tracker(session, owned=False, span=Span(session))
    except Exception:
        CONTAINMENT.failed("track start", "this block reports the whole session", ledger=session.ledger)
        return Tracker(session, owned=False)


def instrument(*, serve: bool = True, **overrides: Any) -> Session:
    """Start process-wide counting (what ``otel-flops run`` does); returns the session (one that never
    starts, after one line on stderr, under OTEL_SDK_DISABLED=true or a bad setting)."""
    from .session import Session, active, begin

    _check_call("instrument", serve)
    current = active()
    if current is not None:
        return current
    settings = load_or_tell()
    if settings is None:
        return _off()
    return begin(Session(settings.with_overrides("instrument", **overrides), serve=serve))


def _check_call(caller: str, serve: Any, name: Any = None) -> None:
    """SettingsError, one line naming the keyword, for a ``serve`` or ``name`` of the wrong kind (the
    setting keywords are checked by ``Settings.with_overrides``)."""
    if not isinstance(serve, bool):
        raise SettingsError(f"{caller}(serve={serve!r}) is not valid; use True or False")
    if name is not None and not (isinstance(name, str) and name):
        raise SettingsError(f"{caller}(name={name!r}) is not valid; use a non-empty string")


def _off() -> Session:
    """A session that never starts, for OTEL_SDK_DISABLED=true or a bad setting: its report counts
    nothing and says why (``off``), and it serves nothing."""
    from .session import Session

    session = Session(Settings(energy=False))
    session.off = "OTEL_SDK_DISABLED=true" if sdk_disabled() else "a bad setting (see stderr)"
    return session


def uninstrument() -> None:
    """End the session ``instrument()`` (or ``otel-flops run``) started; a no-op when idle."""
    from .session import active, end

    current = active()
    if current is not None:
        end(current)


def window(name: str) -> Window:
    """A named window: ``with otel_flops.window("eval"):`` or ``w = window("x").start(); ...; w.stop()``.

    Its FLOPs, BOPs, joules and seconds go to the report's ``windows`` and the
    ``otel_flops_window_*_total`` series (label ``window``); nested and repeated windows are
    fine, one name accumulates. A no-op outside a session. Raises ValueError for an empty name.
    """
    return Window(name)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Attribute the work in this block to ``name`` (e.g. "preprocessing"); a no-op when idle."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"otel_flops.phase: name must be a non-empty string, got {name!r}")
    from .session import active

    current = active()
    if current is None:
        yield
        return
    with current.phase(name):
        yield
