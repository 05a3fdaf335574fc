"""Our code on the user's call stack never raises into the user's program.

Every entry point otel-flops adds there (hooks, the backward wrapper, steady mode's keys,
precision probes, scikit-learn wrappers) runs its own work through ``Containment``: a failure
of ours is counted in the report's ``errors`` under the site's name, logged once per site, and
the caller takes its safe path (count nothing, intercept in full, fall back to the dtype's
bits). Only exceptions of ours are caught: the user's own code is always called outside the
guarded part, so its exceptions propagate unchanged.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from .ledger import Ledger

log = logging.getLogger("otel_flops")


def first_line(error: BaseException | None) -> str:
    """An exception's message in one line: torch's (Dynamo's, fake tensors') run to tracebacks."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


class Containment:
    """Where the failures of our own code go: a Ledger's ``errors``, and one log line per site."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger
        self._logged: set[str] = set()

    def failed(self, site: str, consequence: str, ledger: Ledger | None = None) -> None:
        """Call from an ``except Exception`` block: counts the failure under ``site`` (in
        ``ledger``, or the one given at construction) and logs it in one line the first time
        ``site`` fails (its traceback at debug level: a traceback through otel-flops on the
        user's stderr reads as a crash). ``consequence`` says what the program gets instead."""
        sink = ledger if ledger is not None else self.ledger
        if sink is not None:
            sink.add_error(site)
        if site not in self._logged:
            self._logged.add(site)
            error = sys.exc_info()[1]
            log.warning("otel-flops: %s failed (%s: %s); %s (counted under errors)", site,
                        type(error).__name__, first_line(error), consequence)
            log.debug("otel-flops: %s failed", site, exc_info=True)

    def guard(self, site: str, consequence: str, fn: Callable[..., Any],
              fallback: Callable[..., Any] | None = None) -> Callable[..., Any]:
        """``fn`` that never raises: on failure the result is ``fallback(*args, **kwargs)``
        (None without one). Only for functions that run no user code."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception:
                self.failed(site, consequence)
                return fallback(*args, **kwargs) if fallback is not None else None

        return guarded


def contained(site: str, consequence: str, fallback: Callable[..., Any] | None = None) -> Callable[[Any], Any]:
    """Method decorator: failures go to the object's ``containment``; the result is then
    ``fallback(self, *args, **kwargs)`` (None without one). Only for methods that run no user code."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception:
                self.containment.failed(site, consequence)
                return fallback(self, *args, **kwargs) if fallback is not None else None

        return guarded

    return decorate
