"""CodeCarbon's own process: ``python -m otel_flops.energy.codecarbon_process INTERVAL gpu|no-gpu``.

The training process starts this (``codecarbon.CodeCarbonSource``) so that CodeCarbon's hardware
probe (about 0.5 s of CPU) and its measurement every INTERVAL seconds never hold the training
process's GIL. It measures the whole machine, as CodeCarbon does in-process.

Protocol, one JSON object per line on stdout:
``{"joules": [[hw_type, device, source, J], ...], "watts": [[hw_type, device, W], ...],
"emissions_g": g}`` (cumulative, after every measurement), ``{"unavailable": reason}`` when
CodeCarbon cannot measure, ``{"stopped": true}`` after the last reading. stdin carries ``stop``
(take a last measurement, then exit). When stdin ends or the parent dies, it exits at once, so
it never outlives the training process.

The ``source`` label says how CodeCarbon got each figure: ``codecarbon-rapl`` (the CPU's own
energy counters), ``codecarbon-cpu-load`` (a model: TDP x CPU load, what machines without
readable RAPL get), ``codecarbon-cpu`` (another platform's backend), ``codecarbon-ram-model``
(an estimate from installed memory), ``codecarbon-gpu`` (only when the parent has no NVML).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import threading
from typing import Any, TextIO

KWH = 3.6e6  # joules
PARENT_CHECK_S = 1.0  # how often it looks for a dead parent whose pipe another process still holds


class Unavailable(Exception):
    """CodeCarbon cannot measure here; the message is the one-line reason."""


class Channel:
    """The protocol's stdout: one line per message, from any thread; a closed pipe ends the process."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        try:
            with self._lock:
                self._stream.write(json.dumps(message) + "\n")
                self._stream.flush()
        except OSError:
            os._exit(0)  # the parent is gone


class Readings:
    """Turns CodeCarbon's cumulative totals (kWh, kg) into protocol messages (J, W, g)."""

    def __init__(self, channel: Channel, cpu_source: str, count_gpu: bool) -> None:
        self._channel = channel
        self._cpu_source = cpu_source
        self._count_gpu = count_gpu
        self._watts: list[list[Any]] = []
        self.sent = 0

    def update(self, total: Any, delta: Any) -> None:
        """Runs on CodeCarbon's timer thread: never raise there."""
        try:
            parts = [("cpu", "cpu", self._cpu_source, total.cpu_energy, delta.cpu_energy),
                     ("ram", "ram", "codecarbon-ram-model", total.ram_energy, delta.ram_energy)]
            if self._count_gpu and total.gpu_count:
                parts.append(("gpu", "all", "codecarbon-gpu", total.gpu_energy, delta.gpu_energy))
            if delta.duration > 0.1:  # the final call, at stop, may come right after a measurement
                self._watts = [[hw, device, d_kwh * KWH / delta.duration] for hw, device, _, _, d_kwh in parts]
            self._channel.send({
                "joules": [[hw, device, src, kwh * KWH] for hw, device, src, kwh, _ in parts],
                "watts": self._watts,
                "emissions_g": total.emissions * 1000.0,
            })
            self.sent += 1
        except Exception:
            logging.getLogger("otel_flops").debug("otel-flops: unreadable CodeCarbon data", exc_info=True)


def start_tracker(interval: float, channel: Channel, count_gpu: bool) -> Any:
    """Blocks for CodeCarbon's hardware probe (1-2 s); raises Unavailable with the reason."""
    try:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.output_methods.base_output import BaseOutput
    except ImportError:
        raise Unavailable("not installed (pip install codecarbon; a plain otel-flops install brings it)") from None
    except Exception as exc:
        raise Unavailable(f"cannot be imported ({type(exc).__name__}: {exc})") from None
    try:
        level = os.environ.get("CODECARBON_LOG_LEVEL", "error")  # quiet unless asked for
        logging.getLogger("codecarbon").setLevel(level.upper())
        readings = Readings(channel, cpu_source(), count_gpu)

        class Handler(BaseOutput):
            def live_out(self, total: Any, delta: Any) -> None:
                readings.update(total, delta)

            def out(self, total: Any, delta: Any) -> None:
                readings.update(total, delta)

        tracker = OfflineEmissionsTracker(
            project_name="otel-flops",
            measure_power_secs=interval,
            api_call_interval=1,
            output_methods=[],
            output_handlers=[Handler()],
            emissions_endpoint=None,  # nothing leaves the machine
            electricitymaps_api_token=None,
            allow_multiple_runs=True,  # no lock file
            log_level=level,
        )
        tracker.start()  # measures once at once, so a started tracker has sent a reading
    except Exception as exc:
        raise Unavailable(f"failed to start ({type(exc).__name__}: {exc})") from None
    if not readings.sent:
        tracker.stop()
        raise Unavailable("failed to start (CODECARBON_LOG_LEVEL=warning shows why)")
    return tracker


def cpu_source() -> str:
    """How CodeCarbon will measure the CPU, decided as its own hardware setup decides it."""
    from codecarbon.core import cpu
    from codecarbon.core.config import get_hierarchical_config

    if not sys.platform.startswith("linux"):
        return "codecarbon-cpu"
    conf = get_hierarchical_config()
    forced = conf.get("force_cpu_power") or str(conf.get("force_mode_cpu_load", "")).lower() == "true"
    if not forced and cpu.is_rapl_available():
        return "codecarbon-rapl"
    return "codecarbon-cpu-load"


def parent_says(parent: int, timeout: float) -> str:
    """``stop``, ``gone`` (stdin ended or the parent died), or ``""`` when nothing came in ``timeout`` s."""
    readable, _, _ = select.select([sys.stdin], [], [], timeout)
    if os.getppid() != parent:
        return "gone"
    if not readable:
        return ""
    line = sys.stdin.readline()
    return line.strip() if line else "gone"


def main(argv: list[str]) -> None:
    """Measure until the parent says stop (last reading, then ``stopped``) or goes away (exit at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    parent = os.getppid()
    channel = Channel(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)  # whatever else prints goes to stderr, not into the protocol
    interval, count_gpu = float(argv[0]), argv[1] == "gpu"
    try:
        tracker = start_tracker(interval, channel, count_gpu)
    except Unavailable as exc:
        channel.send({"unavailable": str(exc)})
        return
    said = ""
    while not said:
        said = parent_says(parent, PARENT_CHECK_S)
    if said == "gone":
        os._exit(0)  # nobody to give a last reading to
    tracker.stop()  # takes a last measurement and hands it to the handler
    channel.send({"stopped": True})


if __name__ == "__main__":
    main(sys.argv[1:])
    os._exit(0)  # every message is flushed; skip tearing down CodeCarbon's imports (0.2 s), stop() waits for it
