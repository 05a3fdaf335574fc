"""Energy beside compute: machine energy from CodeCarbon and NVML, read as cumulative joules.

The contract the rest of the package relies on (telemetry, report): an ``EnergyMonitor`` starts
off the critical path, never raises into the caller, and answers ``reading()`` with cumulative
joules per (hw_type, device, source), current watts per (hw_type, device), and grams of CO2eq.
When energy cannot be measured, ``unavailable`` says why in one line and readings stay empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..settings import Settings


@dataclass
class EnergyReading:
    """Cumulative since the monitor started."""

    joules: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (hw_type, device, source)
    watts: dict[tuple[str, str], float] = field(default_factory=dict)  # (hw_type, device)
    emissions_g: float = 0.0

    @property
    def total_joules(self) -> float:
        return sum(self.joules.values())


class EnergyMonitor:
    """Placeholder until the energy sources land: reports energy as unavailable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.unavailable: str | None = "energy sources are not implemented yet"

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def reading(self) -> EnergyReading:
        return EnergyReading()
