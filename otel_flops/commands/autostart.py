"""Process-wide counting for an unmodified script: start now, write the report at exit.

``otel-flops run`` sets OTEL_FLOPS_AUTOSTART for the command it starts. Every Python process
that inherits it comes here, and what the process is decides whether it counts:
- a launcher (a registry of program and module names: torchrun, accelerate, deepspeed, Lightning's
  and Fabric's CLIs) never counts: the ranks it starts do;
- a multiprocessing helper (DataLoader workers, ``mp.spawn`` workers, the resource tracker)
  does not count when it starts, but starts counting as a rank the moment it joins a process
  group: that is how ``mp.spawn`` workers differ from DataLoader workers;
- any other process counts, once per rank: the first marks itself in OTEL_FLOPS_OWNER with its
  rank, and a later process steps aside when it has the owner's rank (a subprocess of a rank)
  but counts when it has another (the ranks Lightning re-launches from its first process);
- a counting process with no rank that starts ranks with ``mp.spawn`` hands its /metrics port
  to them (its own counts go on, into its report).
Each rank serves /metrics on base port + local rank and writes its own report; the report is
written at exit, or when SIGTERM or SIGHUP ends the program (see ``signals``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

from .. import instrument, ranks, signals, uninstrument
from ..integrations import attach_to_trainers
from ..settings import load, load_or_tell

log = logging.getLogger("otel_flops")

OWNER = "OTEL_FLOPS_OWNER"
# Launchers, by program name (argv[1]'s base name) or module (``python -m``).
LAUNCHERS = (
    "torchrun", "torch.distributed.run", "torch.distributed.launch", "accelerate", "accelerate-launch",
    "accelerate.commands.launch", "accelerate.commands.accelerate_cli", "deepspeed", "deepspeed.launcher.launch",
    "deepspeed.launcher.runner", "lightning", "fabric",
)
COUNT, HELPER, ASIDE = "count", "helper", "aside"


def _role(argv: list[str], env: dict[str, str] | os._Environ, rank: ranks.Rank | None) -> str:
    """COUNT, HELPER (counts once it joins a group) or ASIDE, from the process's own traits."""
    if "--multiprocessing-fork" in argv or any(a.startswith("from multiprocessing") for a in argv):
        return HELPER
    if _program(argv) in LAUNCHERS:
        return ASIDE
    owner_pid, _, owner_rank = env.get(OWNER, "").partition(":")
    if not owner_pid or owner_pid == str(os.getpid()) or owner_rank != ranks.key(rank):
        return COUNT
    return ASIDE


def _program(argv: list[str]) -> str | None:
    """What the interpreter in ``argv`` runs: the module of ``-m``, else the script's base name;
    None for ``-c`` and standard input. Interpreter options before it are skipped, so
    ``python -u -m deepspeed.launcher.launch`` (how DeepSpeed's runner starts its launcher) is
    seen as its module (options as in ``python --help``: -X and -W take a value)."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-":
            return None
        if not arg.startswith("-"):
            return Path(arg).name
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                next(args, None)
            continue
        for i, flag in enumerate(arg[1:], start=2):
            if flag in "mc":
                value = arg[i:] or next(args, None)
                return value if flag == "m" else None
            if flag in "XW":
                if not arg[i:]:
                    next(args, None)
                break
    return None


def report_path(path: str, rank: ranks.Rank | None) -> str:
    """One report per rank: ``run.json`` becomes ``run.rank1.json`` (``run.local1.json`` while
    only the local rank is known)."""
    if not rank:
        return path
    p = Path(path)
    name = f"rank{rank['rank']}" if "rank" in rank else f"local{rank['local_rank']}"
    return str(p.with_name(f"{p.stem}.{name}{p.suffix}"))


def start() -> None:
    """Never lets an internal failure reach the user's program; a bad setting (or OTEL_SDK_DISABLED=true)
    is one line on stderr, and the program runs uncounted."""
    try:
        signals.tell_parent()
    except (OSError, ValueError) as exc:
        log.warning("otel-flops: cannot tell `otel-flops run` which signals the program caught (%s); "
                    "a signal sent to its whole process group may reach the program twice", exc)
    settings = load_or_tell()
    if settings is None:
        return
    role = _role(getattr(sys, "orig_argv", sys.argv), os.environ, settings.rank)
    if role == HELPER:
        ranks.follow(_start_once)
    elif role == COUNT:
        ranks.follow()
        _start_once()


_session = None


def _start_once() -> None:
    """Start counting in this process, once; the owner mark carries the rank."""
    global _session
    if _session is not None:
        return
    settings = load()
    os.environ[OWNER] = f"{os.getpid()}:{ranks.key(settings.rank)}"
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        _session = instrument(serve=True)
    except Exception:
        log.exception("otel-flops: could not start counting; the program runs uninstrumented")
        return
    attach_to_trainers()
    if settings.rank is None:
        ranks.before_spawn(_hand_over_endpoint)
    atexit.register(_finish, _session, settings.report)
    signals.report_on_signals(lambda: _finish(_session, settings.report))


def _hand_over_endpoint() -> None:
    """A process with no rank is starting ranks (``mp.spawn``): rank 0 serves on the base port."""
    if _session is not None and ranks.current() is None:
        _session.telemetry.close_endpoint()


def _finish(session, report: str | None) -> None:
    """Stop first: the energy sources take their last reading as they stop. Runs at exit, or on
    the signal that ends the program; a report that cannot be written is one line, no traceback."""
    atexit.unregister(_finish)
    path = report_path(report, ranks.current(session.settings.rank)) if report else None
    try:
        uninstrument()
        if path:
            session.report().save(path)
    except OSError as exc:
        print(f"otel-flops: cannot write the report to {exc.filename or path} ({exc.strerror or exc})",
              file=sys.stderr)
    except Exception:
        log.exception("otel-flops: could not write the report")
