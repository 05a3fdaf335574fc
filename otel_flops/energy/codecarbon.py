"""CPU and RAM energy from CodeCarbon, measured in a process of its own (``codecarbon_process``).

CodeCarbon in the training process cost CPU-bound steps several percent: its probe and its
measurements hold the GIL. Here the training process only starts the sampling process (about
1 ms: no import of CodeCarbon here) and, when metrics are collected or the report is built,
reads whatever readings the pipe holds without waiting. The process is a plain subprocess, not
a multiprocessing child: it re-runs no ``__main__``, inherits no listening socket (``close_fds``),
and is invisible to ``multiprocessing.active_children()``. Its start-up takes about 0.8 s of CPU
once, then each measurement about 2 ms; a lower priority would not lower that, and would leave
it starved on a machine whose training threads fill every core.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import STARTING, EnergyReading, SourceUnavailable

log = logging.getLogger("otel_flops")

STOP_WAIT_S = 3.0  # the longest stop() waits for the last reading
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class CodeCarbonSource:
    """Joules and watts for cpu and ram (and gpu, when ``count_gpu``), and grams of CO2eq."""

    name = "CodeCarbon"

    def __init__(self, interval: float, count_gpu: bool) -> None:
        self._command = [sys.executable, "-m", f"{__package__}.codecarbon_process", repr(interval),
                         "gpu" if count_gpu else "no-gpu"]
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._pending = b""
        self._latest = EnergyReading()
        self._measuring = False
        self._reason: str | None = None
        self._stopped = False

    def start(self) -> None:
        """Returns at once (the process imports CodeCarbon and probes the hardware for 1-2 s);
        raises SourceUnavailable when no process can be started."""
        if os.name != "posix":
            raise SourceUnavailable("its sampling process needs a POSIX system")
        env = {key: value for key, value in os.environ.items() if key != "OTEL_FLOPS_AUTOSTART"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (PACKAGE_ROOT, env.get("PYTHONPATH"))))
        try:
            self._process = subprocess.Popen(self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            raise SourceUnavailable(f"cannot start its process ({exc})") from None
        os.set_blocking(self._process.stdout.fileno(), False)

    @property
    def pid(self) -> int | None:
        """The sampling process's id while it may run."""
        return self._process.pid if self._process is not None else None

    @property
    def status(self) -> str | None:
        """None while measuring, STARTING before the first reading, else why it measures nothing."""
        with self._lock:
            self._drain()
            if self._measuring:
                return None
            return self._reason or STARTING

    def read(self) -> EnergyReading:
        """The latest cumulative reading the process has sent; never waits."""
        with self._lock:
            self._drain()
            return self._latest

    def stop(self) -> None:
        """Asks for a last reading and waits for it (at most STOP_WAIT_S); a process still
        starting is ended at once, and the reason says the run was too short."""
        with self._lock:
            process, self._process = self._process, None
            if process is None:
                return
            self._drain(process)
            if self._measuring:
                self._ask_last_reading(process)
            elif self._reason is None:
                self._reason = "the run ended before it measured (it needs 1-2 s to start)"
            _end(process, wait=self._stopped)

    def _ask_last_reading(self, process: subprocess.Popen) -> None:
        try:
            process.stdin.write(b"stop\n")
            process.stdin.flush()
        except OSError:
            return
        deadline = time.monotonic() + STOP_WAIT_S
        while not self._stopped and (left := deadline - time.monotonic()) > 0:
            select.select([process.stdout], [], [], left)
            if not self._drain(process):
                return
        if not self._stopped:
            log.debug("otel-flops: no last CodeCarbon reading within %s s", STOP_WAIT_S)

    def _drain(self, process: subprocess.Popen | None = None) -> bool:
        """Reads every complete message the pipe holds; False once the pipe has ended."""
        process = process or self._process
        if process is None:
            return False
        while True:
            try:
                chunk = os.read(process.stdout.fileno(), 65536)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                self._ended(process)
                return False
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            for line in lines:
                self._receive(line)

    def _receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            if "joules" in message:
                self._latest = EnergyReading(
                    joules={(hw, device, source): float(j) for hw, device, source, j in message["joules"]},
                    watts={(hw, device): float(w) for hw, device, w in message["watts"]},
                    emissions_g=float(message["emissions_g"]),
                )
                self._measuring = True
            elif "unavailable" in message:
                self._reason = str(message["unavailable"])
            elif message.get("stopped"):
                self._stopped = True
        except (ValueError, TypeError, KeyError, AttributeError):
            log.debug("otel-flops: unreadable message from the CodeCarbon process: %r", line[:200])

    def _ended(self, process: subprocess.Popen) -> None:
        """The process closed its end: a reading stays as it was; no reading at all gets a reason."""
        if not self._measuring and self._reason is None:
            code = process.poll()
            self._reason = "its process ended before measuring" + (f" (exit status {code})" if code else "")


def _end(process: subprocess.Popen, wait: bool) -> None:
    """Closes the pipes and reaps the process: after its last reading it gets a moment to exit,
    otherwise (still starting, or no answer) it is killed."""
    for pipe in (process.stdin, process.stdout):
        try:
            pipe.close()
        except OSError:
            pass
    if wait:
        try:
            process.wait(timeout=1.0)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()
