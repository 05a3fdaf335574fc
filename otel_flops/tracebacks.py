"""The program's uncaught exceptions are printed as they would be bare: without otel-flops' frames.

A user's exception can pass through our code without being ours: Ctrl-C lands in whatever frame
runs (often the dispatch mode's, which every op goes through), a thread's exception leaves through
the wrapper that counts the thread. Those frames only pass the exception on, so the excepthooks
print the traceback with them left out (``types.TracebackType`` rebuilds the chain), and the
user's stderr reads as it would bare.
"""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path
from typing import Any

PACKAGE = str(Path(__file__).resolve().parent)


def without_our_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """The traceback ``tb`` with the frames of otel-flops' own files left out."""
    frames = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(PACKAGE):
            frames.append(tb)
        tb = tb.tb_next
    rebuilt = None
    for frame in reversed(frames):
        rebuilt = types.TracebackType(rebuilt, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return rebuilt


def _excepthook(original: Any) -> Any:
    def excepthook(kind: type[BaseException], value: BaseException, tb: types.TracebackType | None) -> None:
        tb = without_our_frames(tb)
        if isinstance(value, BaseException):
            value.__traceback__ = tb  # what the printer reads
        original(kind, value, tb)

    excepthook.otel_flops = True  # type: ignore[attr-defined]
    return excepthook


def _thread_excepthook(original: Any) -> Any:
    def excepthook(args: Any) -> None:
        tb = without_our_frames(args.exc_traceback)
        if isinstance(args.exc_value, BaseException):
            args.exc_value.__traceback__ = tb
        original(threading.ExceptHookArgs((args.exc_type, args.exc_value, tb, args.thread)))

    excepthook.otel_flops = True  # type: ignore[attr-defined]
    return excepthook


def install() -> None:
    """Filter both excepthooks, once per process (a hook the program installs later wins)."""
    if not getattr(sys.excepthook, "otel_flops", False):
        sys.excepthook = _excepthook(sys.excepthook)
    if not getattr(threading.excepthook, "otel_flops", False):
        threading.excepthook = _thread_excepthook(threading.excepthook)
