"""Process-wide counting for an unmodified script: start now, write the report at exit."""

from __future__ import annotations

import atexit
import logging
import sys

from . import instrument, uninstrument
from .settings import SettingsError, load

log = logging.getLogger("otel_flops")


def start() -> None:
    """Never lets an internal failure reach the user's program; a bad setting stops start-up."""
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        settings = load()
    except SettingsError as exc:
        print(f"otel-flops: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        session = instrument(serve=True)
    except Exception:
        log.exception("otel-flops: could not start counting; the program runs uninstrumented")
        return
    atexit.register(_finish, session, settings.report)


def _finish(session, path: str | None) -> None:
    try:
        report = session.report()
        uninstrument()
        if path:
            report.save(path)
    except Exception:
        log.exception("otel-flops: could not write the report")
