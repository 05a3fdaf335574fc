"""The NVML source's arithmetic and faults, against a stand-in for the driver (this machine has no GPU).

The stand-in replaces only `pynvml` inside these tests; where the monitor runs, CodeCarbon is the
real one, in its own process (which imports the real pynvml).
"""

from __future__ import annotations

import logging
import sys

import psutil
import pytest

from otel_flops.energy import EnergyMonitor, SourceUnavailable
from otel_flops.energy.nvml import NvmlSource
from otel_flops.settings import Settings


class FakeNvml:
    """Two GPUs with cumulative energy counters in mJ and power in mW, as NVML reports them."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.energy_mj = {0: 5_000_000, 1: 7_000_000}
        self.uuids = {"GPU-aaaa": 0, "GPU-bbbb": 1}
        self.lost: set[int] = set()
        self.supported = True
        self.initialised = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.energy_mj)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return self.uuids[uuid]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        assert self.initialised, "read after nvmlShutdown"
        if not self.supported:
            raise self.NVMLError("Not Supported")
        if handle in self.lost:
            raise self.NVMLError("GPU is lost")
        return self.energy_mj[handle]

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 250_000 + handle * 100_000


@pytest.fixture
def nvml(monkeypatch) -> FakeNvml:
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def test_joules_are_the_counter_minus_its_start_and_a_lost_gpu_keeps_its_last_value(nvml, caplog):
    source = NvmlSource()
    source.start()
    assert source.read().joules == {("gpu", "cuda:0", "nvml"): 0.0, ("gpu", "cuda:1", "nvml"): 0.0}
    nvml.energy_mj[0] += 1_500
    nvml.energy_mj[1] += 250_000
    reading = source.read()
    assert reading.joules == {("gpu", "cuda:0", "nvml"): 1.5, ("gpu", "cuda:1", "nvml"): 250.0}
    assert reading.watts == {("gpu", "cuda:0"): 250.0, ("gpu", "cuda:1"): 350.0}
    nvml.lost.add(1)
    nvml.energy_mj[0] += 1_000
    with caplog.at_level(logging.WARNING, logger="otel_flops"):
        source.read()
        reading = source.read()
    assert reading.joules == {("gpu", "cuda:0", "nvml"): 2.5, ("gpu", "cuda:1", "nvml"): 250.0}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cuda:1" in warnings[0] and "GPU is lost" in warnings[0]
    source.stop()


def test_the_monitor_reads_the_counters_when_asked_and_keeps_the_last_reading_after_stop(nvml):
    """No thread samples NVML: each reading is the counter at that moment; stop takes the last one."""
    monitor = EnergyMonitor(Settings(energy_interval=0.5))
    monitor.start()
    (sampler,) = [p for p in psutil.Process().children() if "otel_flops.energy.codecarbon_process" in p.cmdline()]
    assert sampler.cmdline()[-1] == "no-gpu", "CodeCarbon leaves GPUs to NVML"
    for added in (700, 12_345):
        nvml.energy_mj[0] += added
        nvml.energy_mj[1] += 2 * added
        gpu = {k: v for k, v in monitor.reading().joules.items() if k[0] == "gpu"}
        assert gpu == {("gpu", "cuda:0", "nvml"): (nvml.energy_mj[0] - 5_000_000) / 1000,
                       ("gpu", "cuda:1", "nvml"): (nvml.energy_mj[1] - 7_000_000) / 1000}
    assert monitor.unavailable is None
    nvml.energy_mj[0] += 1_000
    monitor.stop()
    assert not nvml.initialised
    nvml.energy_mj[0] += 9_999_000  # after stop, the run's energy no longer grows
    assert monitor.reading().joules[("gpu", "cuda:0", "nvml")] == 14.045


def test_only_the_gpus_this_process_sees_are_measured(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    source = NvmlSource()
    source.start()
    nvml.energy_mj[1] += 2_000
    nvml.energy_mj[0] += 9_000
    assert source.read().joules == {("gpu", "cuda:0", "nvml"): 2.0}


@pytest.mark.parametrize(
    ("visible", "supported", "reason"),
    [
        ("", True, "no GPU visible to this process"),
        ("MIG-1234", True, "CUDA_VISIBLE_DEVICES entry 'MIG-1234' has no GPU energy counter of its own"),
        (None, False, "no GPU energy counter (Not Supported)"),
    ],
)
def test_no_usable_counter_says_why(nvml, monkeypatch, visible, supported, reason):
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    nvml.supported = supported
    with pytest.raises(SourceUnavailable) as raised:
        NvmlSource().start()
    assert str(raised.value) == reason
