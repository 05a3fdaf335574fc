"""Energy beside compute: machine energy from CodeCarbon and NVML, read as cumulative joules.

The contract the rest of the package relies on (telemetry, report): an ``EnergyMonitor`` starts
off the critical path, never raises into the caller, and answers ``reading()`` with cumulative
joules per (hw_type, device, source), current watts per (hw_type, device), and grams of CO2eq.
When energy cannot be measured, ``unavailable`` says why in one line and readings stay empty.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

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
    """NVML for GPUs, CodeCarbon for CPU and RAM, started in a background thread and merged.

    Only local rank 0 (or a process with no LOCAL_RANK) measures: the sources measure the whole
    machine, so a second rank on the same host would count the same joules again. NVML is
    sampled every ``energy_interval`` seconds; CodeCarbon measures at the same interval itself.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.unavailable: str | None = STARTING
        self._sources: list[Any] = []
        self._nvml: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()

    def start(self) -> None:
        """Returns at once; the sources start (CodeCarbon takes 1-2 s) in a daemon thread."""
        rank = os.environ.get("LOCAL_RANK", "")
        if rank not in ("", "0"):
            self.unavailable = f"measured by local rank 0 only (this process has LOCAL_RANK={rank})"
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="otel-flops-energy", daemon=True)
            try:
                self._thread.start()
            except RuntimeError as exc:
                self._thread = None
                self.unavailable = f"cannot start the energy thread ({exc})"

    def _run(self) -> None:
        try:
            self._start_sources()
        finally:
            self._ready.set()
        while not self._stopping.wait(self.settings.energy_interval):
            self._sample()
        self._sample()
        for source in self._sources:
            try:
                source.stop()
            except Exception:
                log.debug("otel-flops: %s did not stop cleanly", source.name, exc_info=True)

    def _start_sources(self) -> None:
        from .codecarbon import CodeCarbonSource
        from .nvml import NvmlSource

        reasons: list[str] = []
        self._nvml = self._try(NvmlSource(), reasons)
        self._try(CodeCarbonSource(self.settings.energy_interval, count_gpu=self._nvml is None), reasons)
        self.unavailable = None if self._sources else "; ".join(reasons)
        if reasons:
            log.debug("otel-flops: energy sources not used: %s", "; ".join(reasons))

    def _try(self, source: Any, reasons: list[str]) -> Any:
        """Start one source; on failure note why and return None."""
        if self._stopping.is_set():
            reasons.append(f"{source.name}: the run ended before it started")
            return None
        try:
            source.start()
        except SourceUnavailable as exc:
            reasons.append(f"{source.name}: {exc}")
            return None
        except Exception as exc:
            log.debug("otel-flops: %s failed to start", source.name, exc_info=True)
            reasons.append(f"{source.name}: failed to start ({type(exc).__name__}: {exc})")
            return None
        self._sources.append(source)
        return source

    def _sample(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.sample()
            except Exception:
                log.debug("otel-flops: NVML sample failed", exc_info=True)

    def stop(self) -> None:
        """Takes the last readings; if the sources are still starting, they stop once started."""
        self._stopping.set()
        if self._thread is not None and self._ready.is_set():
            self._thread.join(timeout=10)
        elif self.unavailable == STARTING:
            self.unavailable = "the run ended before the energy sources started (CodeCarbon needs 1-2 s)"

    def reading(self) -> EnergyReading:
        """The sources' latest cumulative values, merged; cheap, and safe from any thread."""
        merged = EnergyReading()
        for source in list(self._sources):
            latest = source.latest
            merged.joules.update(latest.joules)
            merged.watts.update(latest.watts)
            merged.emissions_g += latest.emissions_g
        return merged

