"""The NVML source's arithmetic and faults, against a stand-in for the driver (this machine has no GPU).

The stand-in replaces only `pynvml` inside these tests; CodeCarbon is not involved.
"""

from __future__ import annotations

import logging
import sys

import pytest

from otel_flops.energy import SourceUnavailable
from otel_flops.energy.nvml import NvmlSource


class FakeNvml:
    """Two GPUs with cumulative energy counters in mJ and power in mW, as NVML reports them."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.energy_mj = {0: 5_000_000, 1: 7_000_000}
        self.uuids = {"GPU-aaaa": 0, "GPU-bbbb": 1}
        self.lost: set[int] = set()
        self.supported = True

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.energy_mj)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return self.uuids[uuid]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
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
    assert source.latest.joules == {("gpu", "cuda:0", "nvml"): 0.0, ("gpu", "cuda:1", "nvml"): 0.0}
    nvml.energy_mj[0] += 1_500
    nvml.energy_mj[1] += 250_000
    source.sample()
    assert source.latest.joules == {("gpu", "cuda:0", "nvml"): 1.5, ("gpu", "cuda:1", "nvml"): 250.0}
    assert source.latest.watts == {("gpu", "cuda:0"): 250.0, ("gpu", "cuda:1"): 350.0}
    nvml.lost.add(1)
    nvml.energy_mj[0] += 1_000
    with caplog.at_level(logging.WARNING, logger="otel_flops"):
        source.sample()
        source.sample()
    assert source.latest.joules == {("gpu", "cuda:0", "nvml"): 2.5, ("gpu", "cuda:1", "nvml"): 250.0}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cuda:1" in warnings[0] and "GPU is lost" in warnings[0]
    source.stop()


def test_only_the_gpus_this_process_sees_are_measured(nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")
    source = NvmlSource()
    source.start()
    nvml.energy_mj[1] += 2_000
    nvml.energy_mj[0] += 9_000
    source.sample()
    assert source.latest.joules == {("gpu", "cuda:0", "nvml"): 2.0}


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
