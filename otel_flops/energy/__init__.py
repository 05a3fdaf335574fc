"""Energy beside compute: machine energy from CodeCarbon and NVML, read as cumulative joules.

The contract the rest of the package relies on (telemetry, report): an ``EnergyMonitor`` starts
off the critical path, never raises into the caller, and answers ``reading()`` with cumulative
joules per (hw_type, device, source), current watts per (hw_type, device), and grams of CO2eq.
When energy cannot be measured, ``unavailable`` says why in one line and readings stay empty.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .. import ranks
from ..settings import Settings

log = logging.getLogger("otel_flops")


@dataclass
class EnergyReading:
    """Cumulative since the monitor started."""

    joules: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (hw_type, device, source)
    watts: dict[tuple[str, str], float] = field(default_factory=dict)  # (hw_type, device)
    emissions_g: float = 0.0

    @property
    def total_joules(self) -> float:
        return sum(self.joules.values())


class SourceUnavailable(Exception):
    """A source cannot measure on this machine; the message is the one-line reason."""


STARTING = "energy sources are still starting"


class EnergyMonitor:
    """NVML for GPUs, CodeCarbon for CPU and RAM, merged; no thread of its own in this process.

    NVML's counters are cumulative, so they are read when a reading is asked for. CodeCarbon
    measures every ``energy_interval`` seconds in a process of its own (``codecarbon_process``)
    and the latest of its readings is taken from a pipe without waiting. Every rank measures its
    own GPU (``nvml``); the CPU and RAM, which are the whole machine's, are measured by local rank
    0 (or a process that is no rank) only, and of the processes of one machine only by the one
    holding its lock (``node_lock``), so no joule is counted twice.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sources: list[Any] = []
        self._reasons: list[str] = []
        self._skipped: str | None = None
        self._started = False
        self._lock: int | None = None

    def start(self) -> None:
        """Returns in a few ms: NVML takes its baseline, CodeCarbon's process starts (and then
        spends 1-2 s probing the hardware on its own)."""
        if self._started:
            return
        local = self._local_rank()
        machine = local in (None, 0) and self._hold_node_lock()
        if not machine:
            why = (f"measured by local rank 0 only (this process is local rank {local})" if local else
                   "measured by another otel-flops process on this machine (one per machine)")
            if local is None:
                self._skipped = why
                return
            self._reasons.append(f"CPU and RAM: {why}")
        self._started = True
        from .codecarbon import CodeCarbonSource
        from .nvml import NvmlSource

        nvml = self._try(NvmlSource(own=self._local_rank))
        if machine:
            self._try(CodeCarbonSource(self.settings.energy_interval, count_gpu=nvml is None))
        if self._reasons:
            log.debug("otel-flops: energy sources not used: %s", "; ".join(self._reasons))

    def _local_rank(self) -> int | None:
        rank = ranks.current(self.settings.rank)
        return rank["local_rank"] if rank else None

    def _hold_node_lock(self) -> bool:
        """Whether this process is the one that measures the machine (see ``node_lock``)."""
        from . import node_lock

        try:
            self._lock = node_lock.acquire()
        except OSError as exc:
            log.warning("otel-flops: cannot open the energy lock %s (%s); set OTEL_FLOPS_LOCK_DIR to a writable "
                        "directory. Measuring anyway: another process here may count the same joules",
                        node_lock.path(), exc.strerror or exc)
            return True
        return self._lock is not None

    def _try(self, source: Any) -> Any:
        """Start one source; on failure note why and return None."""
        try:
            source.start()
        except SourceUnavailable as exc:
            self._reasons.append(f"{source.name}: {exc}")
            return None
        except Exception as exc:
            log.debug("otel-flops: %s failed to start", source.name, exc_info=True)
            self._reasons.append(f"{source.name}: failed to start ({type(exc).__name__}: {exc})")
            return None
        self._sources.append(source)
        return source

    @property
    def unavailable(self) -> str | None:
        """None while any source measures, STARTING while one may still, else every reason in one line."""
        if self._skipped is not None:
            return self._skipped
        if not self._started:
            return STARTING
        statuses = [(source.name, source.status) for source in self._sources]
        if any(status is None for _, status in statuses):
            return None
        if any(status == STARTING for _, status in statuses):
            return STARTING
        return "; ".join(self._reasons + [f"{name}: {status}" for name, status in statuses])

    def stop(self) -> None:
        """Takes the last readings (CodeCarbon's within a few seconds); a source still starting is ended."""
        for source in self._sources:
            try:
                source.stop()
            except Exception:
                log.debug("otel-flops: %s did not stop cleanly", source.name, exc_info=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def reading(self) -> EnergyReading:
        """The sources' cumulative values now, merged; never waits, never raises, safe from any thread."""
        merged = EnergyReading()
        for source in self._sources:
            try:
                latest = source.read()
            except Exception:
                log.debug("otel-flops: %s could not be read", source.name, exc_info=True)
                continue
            merged.joules.update(latest.joules)
            merged.watts.update(latest.watts)
            merged.emissions_g += latest.emissions_g
        return merged

