"""GPU energy from NVML: each GPU's own cumulative energy counter, the nearest thing to a meter.

``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded) is read at start as a
baseline and again whenever a reading is asked for (metrics collected, report built, stop); the
difference is the run's GPU energy. The counter is cumulative, so no thread samples it. The GPUs measured
are those this process can see (``CUDA_VISIBLE_DEVICES`` by index or UUID), labelled
``cuda:N`` in that order. A rank measures only its own GPU: with several visible, the one at its
local rank (the launchers' convention, ``torch.cuda.set_device(local_rank)``), decided at each
reading, so a process that joins a group later narrows to its GPU then; with one visible (a
launcher that gives each rank its own), that one. So FLOP/J is per GPU, and the ranks' sum is the
node's. NVML numbers GPUs in PCI bus order, so the labels match torch's
``cuda:N`` on one-GPU machines and wherever ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; mapping through
torch instead would initialise CUDA in a background thread, which a forking program can't afford.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from . import EnergyReading, SourceUnavailable

log = logging.getLogger("otel_flops")

SOURCE = "nvml"


class NvmlSource:
    """Cumulative joules and current watts per visible GPU."""

    name = "NVML"
    status: str | None = None  # once started it measures (a GPU whose read fails keeps its last values)

    def __init__(self, own: Callable[[], int | None] = lambda: None) -> None:
        self._own = own  # this process's local rank now, or None for a process that is no rank
        self._nvml: Any = None
        self._devices: list[tuple[str, Any, int]] = []  # (label, handle, baseline mJ)
        self._failed: set[str] = set()
        self._lock = threading.Lock()  # a read and stop() may come from two threads
        self._latest = EnergyReading()

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
        self.read()

    def read(self) -> EnergyReading:
        """Every GPU's joules since start and watts, read now (after stop: the last reading);
        a GPU whose read fails keeps its last good values (logged once)."""
        with self._lock:
            if self._nvml is not None:
                self._latest = self._read_now()
            return self._latest

    def _read_now(self) -> EnergyReading:
        nvml = self._nvml
        owned = self._owned()
        labels = {label for label, _, _ in owned}  # a GPU no longer this process's drops out
        joules = {key: j for key, j in self._latest.joules.items() if key[1] in labels}
        watts = {key: w for key, w in self._latest.watts.items() if key[1] in labels}
        for label, handle, baseline in owned:
            try:
                joules[("gpu", label, SOURCE)] = (nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - baseline) / 1000.0
                watts[("gpu", label)] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except nvml.NVMLError as exc:
                if label not in self._failed:
                    self._failed.add(label)
                    log.warning("otel-flops: NVML read failed on %s (%s); it keeps its last good values", label, exc)
        return EnergyReading(joules=joules, watts=watts)

    def _owned(self) -> list[tuple[str, Any, int]]:
        """The GPUs this process measures: its rank's (see the module), or all it sees."""
        local = self._own()
        if local is None or len(self._devices) == 1:
            return self._devices
        if local >= len(self._devices):
            return []  # more ranks than GPUs here: this rank has no GPU of its own
        return [self._devices[local]]

    def stop(self) -> None:
        """Takes the last reading, which read() returns from then on, and releases NVML."""
        self.read()
        with self._lock:
            nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError:
                pass


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
