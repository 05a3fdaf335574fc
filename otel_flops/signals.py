"""Signals between ``otel-flops run`` and its script: the script gets each signal once and ends as
it would bare, and its report is still written.

The parent (``run``) passes on the stop signals it receives, unless the script received the same
signal itself (a Ctrl-C or a kill of the whole process group reaches both): the script's Python
writes one byte per caught signal to a pipe the parent reads (``signal.set_wakeup_fd``), so the
parent forwards a signal only when no byte for it came within ``GRACE_S``. A signal sent to the
parent alone (what a container runtime does to PID 1) is passed on; one sent to the group is not
passed twice. When the script is killed by a signal, ``exit_status`` kills the parent the same way.

In the script (``report_on_signals``): SIGTERM and SIGHUP, whose default ends a process without
running ``atexit``, get a handler that writes the report and then ends the process by the same
signal with the default action. A handler the program installs later replaces it; one that chains
to it (calls the previous handler) finds it a no-op, as SIG_DFL would have been. A program whose
own handler ends the process by the signal (rather than by exiting) ends without a report. SIGINT
needs nothing: Python's KeyboardInterrupt unwinds through ``atexit``.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
REPORTED = (signal.SIGTERM, signal.SIGHUP)  # default action: end at once, no atexit
GRACE_S = 0.5  # the script's own byte for a signal arrives within microseconds; this is ample
POLL_S = 0.1
REPORT_TIMEOUT_S = 10.0  # past this, a signalled script ends without its report
PIPE_VARIABLE = "OTEL_FLOPS_SIGNAL_PIPE"  # "<parent pid>:<write fd>"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def run(cmd: list[str], env: Mapping[str, str]) -> int:
    """Run ``cmd`` to its end, passing on the parent's stop signals; its Popen returncode
    (negative: killed by that signal). Raises OSError when the command cannot be started."""
    received: list[tuple[int, float]] = []
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, frame: received.append((signum, time.monotonic())))
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    try:
        try:
            child = subprocess.Popen(cmd, env={**env, PIPE_VARIABLE: f"{os.getpid()}:{write_fd}"},
                                     pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        seen: dict[int, float] = {}  # signal -> when the script last showed it caught it
        while child.poll() is None:
            if select.select([read_fd], [], [], POLL_S)[0]:
                now = time.monotonic()
                seen.update((signum, now) for signum in os.read(read_fd, 4096))
            for item in [item for item in received if _settled(child, item, seen)]:
                received.remove(item)  # in place: the handler may append meanwhile
        return child.returncode
    finally:
        os.close(read_fd)


def _settled(child: subprocess.Popen, item: tuple[int, float], seen: dict[int, float]) -> bool:
    """True once the signal needs nothing more: the script caught it too, or it was passed on."""
    signum, at = item
    if seen.get(signum, -math.inf) >= at - GRACE_S:
        return True
    if time.monotonic() < at + GRACE_S:
        return False
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signum)
    return True


def exit_status(returncode: int) -> int:
    """The script's exit code, or, when a signal killed it, end this process by the same signal
    (a parent sees "killed by N", a shell 128+N); 128+N is returned only if that did not end it."""
    if returncode >= 0:
        return returncode
    signum = -returncode
    sys.stdout.flush()
    sys.stderr.flush()
    # The script already dumped its core, if any: this process ends by the signal without one.
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum


def tell_parent() -> None:
    """In the script ``otel-flops run`` started: report each caught signal to it (see the module)."""
    parent, _, fd = os.environ.get(PIPE_VARIABLE, "").partition(":")
    if not fd.isdigit() or parent != str(os.getppid()):
        return  # not the run's direct child: a grandchild, or a process started some other way
    os.set_blocking(int(fd), False)
    signal.set_wakeup_fd(int(fd), warn_on_full_buffer=False)

    def untell_in_child() -> None:  # a forked child (a DataLoader worker) is not the script
        with contextlib.suppress(ValueError, OSError):
            previous = signal.set_wakeup_fd(-1)
            if previous != int(fd):
                signal.set_wakeup_fd(previous)

    os.register_at_fork(after_in_child=untell_in_child)


def report_on_signals(finish: Callable[[], None]) -> None:
    """Install the report-writing handler on REPORTED signals still at their default action.

    ``finish`` stops counting and writes the report. It runs in the handler when the program was
    interrupted in its own code; when otel-flops' code was interrupted (which may hold a lock it
    needs), it runs on a thread of its own, bounded by REPORT_TIMEOUT_S, so the exit cannot hang."""
    owner = os.getpid()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if sys._getframe(1) is not frame:
            return  # called by the program's own handler, chaining to the one it replaced
        try:
            _silence_handlers()
            if os.getpid() == owner and _inside_otel_flops(frame):
                _write_within(finish, REPORT_TIMEOUT_S)  # our code was cut off, maybe holding a lock
            elif os.getpid() == owner:
                finish()  # the program was interrupted in its own code: stop counting here, exactly
        finally:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    installed = [s for s in REPORTED if signal.getsignal(s) == signal.SIG_DFL]
    for signum in installed:
        signal.signal(signum, on_signal)

    def restore_in_child() -> None:  # a forked child keeps the default it would have had bare
        with contextlib.suppress(ValueError, OSError):
            for signum in installed:
                if signal.getsignal(signum) is on_signal:
                    signal.signal(signum, signal.SIG_DFL)

    os.register_at_fork(after_in_child=restore_in_child)


def _silence_handlers() -> None:
    """Make every Python-level handler a no-op while the report is written. Bare, the process is
    already dead and none of them would run; one that raises (torch's SIGCHLD handler does when a
    DataLoader worker was killed by the same signal) would cut the report short."""
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, _ignore)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The handler of every signal while a signalled script writes its report."""


def _inside_otel_flops(frame: FrameType | None) -> bool:
    """Whether the interrupted code is otel-flops' own (a hook, the dispatch mode, a ledger update)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE_DIR):
            return True
        frame = frame.f_back
    return False


def _write_within(finish: Callable[[], None], timeout: float) -> None:
    """Run ``finish`` on its own thread and wait for it, at most ``timeout`` seconds."""
    writer = threading.Thread(target=finish, name="otel-flops-report", daemon=True)
    writer.start()
    writer.join(timeout)
    if writer.is_alive():
        print(f"otel-flops: the report was not written within {timeout:g} s of the signal", file=sys.stderr)
