"""GPU energy from NVML: each GPU's own cumulative energy counter, the nearest thing to a meter.

``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded) is read at start as a
baseline and again at each sample; the difference is the run's GPU energy. The GPUs measured
are those this process can see (``CUDA_VISIBLE_DEVICES`` by index or UUID), labelled
``cuda:N`` in that order. NVML numbers GPUs in PCI bus order, so the labels match torch's
``cuda:N`` on one-GPU machines and wherever ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; mapping through
torch instead would initialise CUDA in a background thread, which a forking program can't afford.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from . import EnergyReading, SourceUnavailable

log = logging.getLogger("otel_flops")

SOURCE = "nvml"


class NvmlSource:
    """Cumulative joules and current watts per visible GPU."""

    name = "NVML"

    def __init__(self) -> None:
        self._nvml: Any = None
        self._devices: list[tuple[str, Any, int]] = []  # (label, handle, baseline mJ)
        self._failed: set[str] = set()
        self.latest = EnergyReading()

    def start(self) -> None:
        """Raises SourceUnavailable, with the reason, where there is no usable GPU energy counter."""
        try:
            import pynvml
        except ImportError:
            raise SourceUnavailable("nvidia-ml-py not installed") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(f"no NVIDIA driver ({exc})") from None
        self._nvml = pynvml
        try:
            handles = _visible_handles(pynvml)
            if not handles:
                raise SourceUnavailable("no GPU visible to this process")
            self._devices = [
                (f"cuda:{i}", h, pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for i, h in enumerate(handles)
            ]
        except pynvml.NVMLError as exc:
            self.stop()
            raise SourceUnavailable(f"no GPU energy counter ({exc})") from None
        except SourceUnavailable:
            self.stop()
            raise
        self.sample()

    def sample(self) -> None:
        """Read every GPU; a GPU whose read fails keeps its last good value (logged once)."""
        nvml = self._nvml
        joules, watts = dict(self.latest.joules), dict(self.latest.watts)
        for label, handle, baseline in self._devices:
            try:
                joules[("gpu", label, SOURCE)] = (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - baseline) / 1000.0
                watts[("gpu", label)] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except nvml.NVMLError as exc:
                if label not in self._failed:
                    self._failed.add(label)
                    log.warning("otel-flops: NVML read failed on %s (%s); it keeps its last good values", label, exc)
        self.latest = EnergyReading(joules=joules, watts=watts)

    def stop(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None


def _visible_handles(nvml: Any) -> list[Any]:
    """NVML handles of the GPUs in CUDA_VISIBLE_DEVICES (indices or GPU- UUIDs), or of all GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for entry in filter(None, (e.strip() for e in visible.split(","))):
        if entry.isdigit():
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
        elif entry.startswith("GPU-"):
            handles.append(nvml.nvmlDeviceGetHandleByUUID(entry))
        else:
            raise SourceUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry!r} has no GPU energy counter of its own")
    return handles
