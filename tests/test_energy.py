"""Energy beside compute, with the real CodeCarbon: /metrics, the report, FLOP/J, and the off switch."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import free_port, scrape, training_step

import otel_flops
from otel_flops.energy import EnergyMonitor, SourceUnavailable
from otel_flops.energy.nvml import NvmlSource
from otel_flops.settings import Settings

ENERGY = "otel_flops_energy_joules_total"


def _energy(url: str) -> dict[tuple[str, str, str], float]:
    return {(s["hw_type"], s["device"], s["source"]): v for s, v in scrape(url).get(ENERGY, [])}


def _train_until(deadline: float) -> None:
    while time.monotonic() < deadline:
        training_step("mlp", steps=2)


def test_cpu_and_ram_joules_rise_on_metrics_and_equal_the_report():
    with otel_flops.track(serve=True, host="127.0.0.1", port=free_port(), energy_interval=0.5) as tracker:
        url = tracker.endpoint.url
        deadline = time.monotonic() + 20
        while not {"cpu", "ram"} <= {hw for hw, _, _ in _energy(url)}:
            assert time.monotonic() < deadline, tracker.session.energy.unavailable
            _train_until(time.monotonic() + 0.3)
        first = _energy(url)
        _train_until(time.monotonic() + 1.5)
        second = _energy(url)
        for _ in range(10):  # a measurement may land between the scrapes; take a quiet moment
            samples = scrape(url)
            report = tracker.report()
            if samples[ENERGY] == scrape(url)[ENERGY]:
                break
        else:
            pytest.fail("energy changed between every pair of back-to-back scrapes")
    for hw in ("cpu", "ram"):
        before = sum(v for k, v in first.items() if k[0] == hw)
        after = sum(v for k, v in second.items() if k[0] == hw)
        assert after > before > 0, (hw, first, second)
    sources = {s for _, _, s in second}
    assert sources & {"codecarbon-rapl", "codecarbon-cpu-load"} and "codecarbon-ram-model" in sources
    assert all(d == hw for hw, d, _ in second), "cpu and ram are labelled by component on a machine without GPUs"
    watts = {s["hw_type"]: v for s, v in samples["otel_flops_power_watts"]}
    assert watts["cpu"] > 0 and watts["ram"] > 0
    assert samples["otel_flops_emissions_grams_total"][0][1] > 0

    energy = report["energy"]
    assert energy["joules"] == pytest.approx(sum(v for _, v in samples[ENERGY]), rel=1e-12)
    assert energy["available"] and energy["source"] == ", ".join(sorted(sources))
    assert sum(energy["by_component"].values()) == pytest.approx(energy["joules"], rel=1e-12)
    flops, bops = report["totals"]["flops"], report["totals"]["bops"]
    assert flops > 0
    assert report["efficiency"]["flops_per_joule"] == pytest.approx(flops / energy["joules"], rel=1e-12)
    assert report["efficiency"]["bops_per_joule"] == pytest.approx(bops / energy["joules"], rel=1e-12)
    assert "FLOP/J" in report.table()

    final = tracker.report()  # after stop: CodeCarbon's last measurement is in
    assert final["energy"]["joules"] >= energy["joules"]
    assert final["energy"]["by_component"]["cpu"] > 0


def test_energy_off_switch(monkeypatch):
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    with otel_flops.track(serve=True, host="127.0.0.1", port=free_port()) as tracker:
        training_step("mlp")
        samples = scrape(tracker.endpoint.url)
    assert tracker.session.energy is None
    assert not any(name.startswith("otel_flops_energy") or name.startswith("otel_flops_power") for name in samples)
    report = tracker.report()
    assert report["energy"] == {"available": False, "reason": "disabled (OTEL_FLOPS_ENERGY=off)"}
    assert report["totals"]["flops"] > 0 and report["efficiency"] == {}


def test_only_local_rank_zero_measures(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monitor = EnergyMonitor(Settings())
    monitor.start()
    monitor.stop()
    assert monitor.reading().joules == {}
    assert monitor.unavailable == "measured by local rank 0 only (this process has LOCAL_RANK=1)"


def test_start_and_an_early_stop_return_at_once_and_leave_no_thread():
    monitor = EnergyMonitor(Settings(energy_interval=0.5))
    began = time.perf_counter()
    monitor.start()
    started = time.perf_counter()
    monitor.stop()  # CodeCarbon may still be probing the hardware: it is stopped once it has started
    stopped = time.perf_counter()
    assert started - began < 0.05 and stopped - started < 0.05
    deadline = time.monotonic() + 30
    while any(t.name == "otel-flops-energy" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the energy thread outlived its monitor"
        time.sleep(0.05)
    assert monitor.unavailable is None or "\n" not in monitor.unavailable


def test_no_nvml_says_why_in_one_line():
    """This machine has no NVIDIA driver; where one exists the source must start."""
    source = NvmlSource()
    try:
        source.start()
    except SourceUnavailable as exc:
        assert str(exc).startswith(("no NVIDIA driver", "nvidia-ml-py not installed", "no GPU"))
        assert "\n" not in str(exc)
    else:
        source.stop()
        assert all(k[0] == "gpu" and k[2] == "nvml" for k in source.latest.joules)
