"""Process-wide counting for an unmodified script: start now, write the report at exit.

``otel-flops run`` sets OTEL_FLOPS_AUTOSTART for the command it starts. Every Python process
that inherits it comes here; only one per rank counts: the first instrumented process marks
itself in OTEL_FLOPS_OWNER, multiprocessing helpers (DataLoader workers, fork or spawn) and
torchrun's launcher step aside, and torchrun's workers each count as their own rank. The report
is written at exit, or when SIGTERM or SIGHUP ends the program (see ``signals``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

from . import instrument, signals, uninstrument
from .settings import SettingsError, load

log = logging.getLogger("otel_flops")

LAUNCHERS = ("torchrun", "torch.distributed.run", "torch.distributed.launch")


def _should_count() -> bool:
    argv = getattr(sys, "orig_argv", sys.argv)
    if "--multiprocessing-fork" in argv or any(a.startswith("from multiprocessing") for a in argv):
        return False  # a multiprocessing helper: DataLoader workers, resource tracker
    if any(Path(a).name in LAUNCHERS or a in LAUNCHERS for a in argv[1:3]):
        return False  # torchrun's launcher: its workers count, each as a rank
    owner = os.environ.get("OTEL_FLOPS_OWNER")
    return owner is None or owner == str(os.getpid())


def report_path(path: str, rank: dict[str, int] | None) -> str:
    """One report per rank under torchrun: ``run.json`` becomes ``run.rank1.json``."""
    if not rank:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.rank{rank['rank']}{p.suffix}"))


def start() -> None:
    """Never lets an internal failure reach the user's program; a bad setting stops start-up."""
    try:
        signals.tell_parent()
    except (OSError, ValueError) as exc:
        log.warning("otel-flops: cannot tell `otel-flops run` which signals the program caught (%s); "
                    "a signal sent to its whole process group may reach the program twice", exc)
    if not _should_count():
        return
    os.environ["OTEL_FLOPS_OWNER"] = str(os.getpid())
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
    path = report_path(settings.report, settings.rank) if settings.report else None
    atexit.register(_finish, session, path)
    signals.report_on_signals(lambda: _finish(session, path))


def _finish(session, path: str | None) -> None:
    """Stop first: the energy sources take their last reading as they stop. Runs at exit, or on
    the signal that ends the program; a report that cannot be written is one line, no traceback."""
    atexit.unregister(_finish)
    try:
        uninstrument()
        if path:
            session.report().save(path)
    except OSError as exc:
        print(f"otel-flops: cannot write the report to {exc.filename or path} ({exc.strerror or exc})",
              file=sys.stderr)
    except Exception:
        log.exception("otel-flops: could not write the report")
