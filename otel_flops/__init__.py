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
from .windows import Window

if TYPE_CHECKING:
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
    """The handle ``track()`` returns: a context manager with a report."""

    def __init__(self, session: Session, owned: bool) -> None:
        self.session = session
        self._owned = owned

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
            from .session import end

            end(self.session)

    def report(self) -> Report:
        return self.session.report()

    @property
    def endpoint(self) -> Any:
        return self.session.telemetry.endpoint


def track(model: Any = None, *, name: str | None = None, serve: bool = False, **overrides: Any) -> Tracker:
    """Count everything torch does from here until the block ends.

    ``model`` and ``name`` set the model label of that module's work; a scikit-learn estimator
    given as ``model`` is wrapped alone (otherwise estimator classes are patched globally).
    ``serve=True`` also serves
    Prometheus /metrics (host and port from the settings or ``host=``/``port=``). Inside an
    already active session (``otel-flops run``) this shares that session.
    """
    from .session import Session, active, begin

    current = active()
    if current is not None:
        return Tracker(current, owned=False)
    from .sklearn import is_estimator

    settings = load_or_tell()
    if settings is None:
        return Tracker(_off(), owned=False)
    settings = settings.with_overrides(**overrides)
    if model is not None and is_estimator(model):
        return Tracker(begin(Session(settings, serve=serve, estimators=[model])), owned=True)
    names = {id(model): name or type(model).__name__} if model is not None else {}
    return Tracker(begin(Session(settings, serve=serve, names=names)), owned=True)


def instrument(*, serve: bool = True, **overrides: Any) -> Session:
    """Start process-wide counting (what ``otel-flops run`` does); returns the session (one that never
    starts, after one line on stderr, under OTEL_SDK_DISABLED=true or a bad setting)."""
    from .session import Session, active, begin

    current = active()
    if current is not None:
        return current
    settings = load_or_tell()
    if settings is None:
        return _off()
    return begin(Session(settings.with_overrides(**overrides), serve=serve))


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
