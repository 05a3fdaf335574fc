"""CPU and RAM energy from CodeCarbon, offline and writing no files.

CodeCarbon pushes its cumulative totals to a ``BaseOutput`` handler after every measurement
(``api_call_interval=1``), so nothing here reads its private state. Its ``start()`` probes the
hardware for 1-2 s, which is why the monitor calls ``start`` from a background thread.

The ``source`` label says how CodeCarbon got each figure: ``codecarbon-rapl`` (the CPU's own
energy counters), ``codecarbon-cpu-load`` (a model: TDP x CPU load, what machines without
readable RAPL get), ``codecarbon-cpu`` (another platform's backend), ``codecarbon-ram-model``
(an estimate from installed memory), ``codecarbon-gpu`` (only when NVML is not used).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from . import EnergyReading, SourceUnavailable

KWH = 3.6e6  # joules


class CodeCarbonSource:
    """Joules and watts for cpu and ram (and gpu, when ``count_gpu``), and grams of CO2eq."""

    name = "CodeCarbon"

    def __init__(self, interval: float, count_gpu: bool) -> None:
        self._interval = interval
        self._count_gpu = count_gpu
        self._tracker: Any = None
        self._cpu_source = "codecarbon-cpu"
        self.latest = EnergyReading()
        self._updates = 0

    def start(self) -> None:
        """Blocks for CodeCarbon's hardware probe; raises SourceUnavailable with the reason."""
        try:
            from codecarbon import OfflineEmissionsTracker
            from codecarbon.output_methods.base_output import BaseOutput
        except ImportError:
            raise SourceUnavailable("not installed (pip install 'otel-flops[energy]')") from None
        except Exception as exc:
            raise SourceUnavailable(f"cannot be imported ({type(exc).__name__}: {exc})") from None
        source = self

        class Handler(BaseOutput):
            def live_out(self, total: Any, delta: Any) -> None:
                source._update(total, delta)

            def out(self, total: Any, delta: Any) -> None:
                source._update(total, delta)

        try:
            level = os.environ.get("CODECARBON_LOG_LEVEL", "error")  # quiet unless asked for
            logging.getLogger("codecarbon").setLevel(level.upper())
            self._cpu_source = _cpu_source()
            self._tracker = OfflineEmissionsTracker(
                project_name="otel-flops",
                measure_power_secs=self._interval,
                api_call_interval=1,
                output_methods=[],
                output_handlers=[Handler()],
                emissions_endpoint=None,  # nothing leaves the machine
                electricitymaps_api_token=None,
                allow_multiple_runs=True,  # no lock file
                log_level=level,
            )
            self._tracker.start()  # measures once at once, so a started tracker has called the handler
        except Exception as exc:
            raise SourceUnavailable(f"failed to start ({type(exc).__name__}: {exc})") from None
        if not self._updates:
            self.stop()
            raise SourceUnavailable("failed to start (CODECARBON_LOG_LEVEL=warning shows why)")

    def _update(self, total: Any, delta: Any) -> None:
        """Runs on CodeCarbon's timer thread: swap in a new reading, never raise there."""
        try:
            parts = [("cpu", "cpu", self._cpu_source, total.cpu_energy, delta.cpu_energy),
                     ("ram", "ram", "codecarbon-ram-model", total.ram_energy, delta.ram_energy)]
            if self._count_gpu and total.gpu_count:
                parts.append(("gpu", "all", "codecarbon-gpu", total.gpu_energy, delta.gpu_energy))
            watts = self.latest.watts
            if delta.duration > 0.1:  # the final call, at stop, may come right after a measurement
                watts = {(hw, device): d_kwh * KWH / delta.duration for hw, device, _, _, d_kwh in parts}
            self.latest = EnergyReading(
                joules={(hw, device, src): kwh * KWH for hw, device, src, kwh, _ in parts},
                watts=dict(watts),
                emissions_g=total.emissions * 1000.0,
            )
            self._updates += 1
        except Exception:
            logging.getLogger("otel_flops").debug("otel-flops: unreadable CodeCarbon data", exc_info=True)

    def stop(self) -> None:
        """CodeCarbon's stop takes a last measurement and hands it to the handler."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.stop()


def _cpu_source() -> str:
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
