"""otel-flops: FLOPs and BOPs of PyTorch and scikit-learn work, as OpenTelemetry metrics.

    with otel_flops.track(model) as t:
        train()
    print(t.report().table())
"""

from __future__ import annotations

__version__ = "0.1.0"

import contextlib
from collections.abc import Iterator
from typing import Any

import wrapt

from .session import Report, Session, active, begin, end
from .settings import Settings, SettingsError, load

# Follow torch.compile from now on (at once if Dynamo is loaded, else when it is): graphs compiled
# before a session starts are counted in it too.
wrapt.register_post_import_hook("otel_flops.torch.compiled:follow_dynamo", "torch._dynamo.output_graph")

__all__ = ["track", "instrument", "uninstrument", "phase", "Report", "Session", "Settings", "SettingsError"]


class Tracker:
    """The handle ``track()`` returns: a context manager with a report."""

    def __init__(self, session: Session, owned: bool) -> None:
        self.session = session
        self._owned = owned

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned:
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
    current = active()
    if current is not None:
        return Tracker(current, owned=False)
    from .sklearn import is_estimator

    settings = load().with_overrides(**overrides)
    if model is not None and is_estimator(model):
        return Tracker(begin(Session(settings, serve=serve, estimators=[model])), owned=True)
    names = {id(model): name or type(model).__name__} if model is not None else {}
    return Tracker(begin(Session(settings, serve=serve, names=names)), owned=True)


def instrument(*, serve: bool = True, **overrides: Any) -> Session:
    """Start process-wide counting (what ``otel-flops run`` does); returns the session."""
    current = active()
    if current is not None:
        return current
    return begin(Session(load().with_overrides(**overrides), serve=serve))


def uninstrument() -> None:
    current = active()
    if current is not None:
        end(current)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Attribute the work in this block to ``name`` (e.g. "preprocessing"); a no-op when idle."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"otel_flops.phase: name must be a non-empty string, got {name!r}")
    current = active()
    if current is None:
        yield
        return
    with current.phase(name):
        yield
