"""Energy beside compute, with the real CodeCarbon: /metrics, the report, FLOP/J, the off switch, and
CodeCarbon's own process (no thread in the training process, gone when the session or its parent is)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from conftest import free_port, scrape, training_step

import otel_flops
from otel_flops.energy import EnergyMonitor, SourceUnavailable
from otel_flops.energy.nvml import NvmlSource
from otel_flops.settings import Settings

ENERGY = "otel_flops_energy_joules_total"


@pytest.fixture
def no_gpu(monkeypatch) -> None:
    """CodeCarbon's CPU and RAM alone, on any machine (NVML has tests of its own)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def _energy(url: str) -> dict[tuple[str, str, str], float]:
    return {(s["hw_type"], s["device"], s["source"]): v for s, v in scrape(url).get(ENERGY, [])}


def _train_until(deadline: float) -> None:
    while time.monotonic() < deadline:
        training_step("mlp", steps=2)


@pytest.mark.usefixtures("no_gpu")
def test_cpu_and_ram_joules_rise_on_metrics_and_equal_the_report():
    before = {t.name for t in threading.enumerate()}
    with otel_flops.track(serve=True, host="127.0.0.1", port=free_port(), energy_interval=0.5) as tracker:
        url = tracker.endpoint.url
        deadline = time.monotonic() + 20
        while not {"cpu", "ram"} <= {hw for hw, _, _ in _energy(url)}:
            assert time.monotonic() < deadline, tracker.session.energy.unavailable
            _train_until(time.monotonic() + 0.3)
        first = _energy(url)
        # CodeCarbon measures in its own process: the only thread the session added serves /metrics
        # (beside the short-lived threads that answer one scrape each)
        added = {t.name for t in threading.enumerate() if not t.name.endswith("(process_request_thread)")} - before
        assert added == {"otel-flops-metrics"}
        _train_until(time.monotonic() + 1.5)
        second = _energy(url)
        deadline = time.monotonic() + 30  # a measurement may land between the scrapes; take a quiet moment
        while True:
            samples = scrape(url)
            report = tracker.report()
            if samples[ENERGY] == scrape(url)[ENERGY]:
                break
            if time.monotonic() > deadline:
                pytest.fail("energy changed between every pair of back-to-back scrapes for 30 s")
    for hw in ("cpu", "ram"):
        before = sum(v for k, v in first.items() if k[0] == hw)
        after = sum(v for k, v in second.items() if k[0] == hw)
        assert after > before > 0, (hw, first, second)
    sources = {s for _, _, s in second}
    assert sources & {"codecarbon-rapl", "codecarbon-cpu-load"} and "codecarbon-ram-model" in sources
    assert {(hw, d) for hw, d, _ in second if hw != "gpu"} == {("cpu", "cpu"), ("ram", "ram")}
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


@pytest.mark.usefixtures("no_gpu")
def test_only_local_rank_zero_measures_the_machine():
    monitor = EnergyMonitor(Settings(rank={"rank": 1, "local_rank": 1, "world_size": 2}))
    monitor.start()
    monitor.stop()
    assert monitor.reading().joules == {}
    assert "CPU and RAM: measured by local rank 0 only (this process is local rank 1)" in monitor.unavailable


@pytest.mark.usefixtures("no_gpu")
def test_an_early_stop_ends_the_starting_process_and_says_why():
    monitor = EnergyMonitor(Settings(energy_interval=0.5))
    monitor.start()
    assert len(_samplers()) == 1
    monitor.stop()  # CodeCarbon is still probing the hardware (1-2 s): its process is ended, not waited for
    assert _samplers() == [] and monitor.reading().joules == {}
    reason = monitor.unavailable
    assert reason.endswith("CodeCarbon: the run ended before it measured (it needs 1-2 s to start)")
    assert "\n" not in reason


@pytest.mark.usefixtures("no_gpu")
def test_the_codecarbon_process_holds_no_socket_ignores_ctrl_c_and_gives_a_last_reading_at_stop():
    # a long interval: after its first reading CodeCarbon measures again only when stop() asks it to
    with otel_flops.track(serve=True, host="127.0.0.1", port=free_port(), energy_interval=30) as tracker:
        monitor = tracker.session.energy
        _wait_until(lambda: monitor.unavailable is None, monitor)
        (sampler,) = _samplers()
        fds = [os.readlink(f"/proc/{sampler.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{sampler.pid}/fd")]
        assert not [fd for fd in fds if fd.startswith("socket:")], fds  # /metrics listens in this process only
        assert sampler.pid not in {p.pid for p in multiprocessing.active_children()}  # not a training worker
        sampler.send_signal(signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        _train_until(time.monotonic() + 0.5)
        in_session = monitor.reading().total_joules
    assert not sampler.is_running(), "the process outlived its session"
    assert monitor.reading().total_joules > in_session, "it survived Ctrl-C and took a last measurement at stop"
    assert monitor.unavailable is None


PARENT = textwrap.dedent(
    """
    import os, sys, time
    import otel_flops

    with otel_flops.track(energy_interval=0.5) as tracker:
        deadline = time.monotonic() + 60
        while tracker.session.energy.unavailable is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if sys.argv[1] == "fork" and os.fork() == 0:
            time.sleep(120)  # a forked helper keeps its copy of the pipe to CodeCarbon's process open
            os._exit(0)
        print(tracker.session.energy.unavailable, flush=True)
        time.sleep(120)
    """
)


@pytest.mark.usefixtures("no_gpu")
@pytest.mark.parametrize("helper", ["none", "fork"])
def test_the_codecarbon_process_exits_when_its_parent_is_killed(helper):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, helper], stdout=subprocess.PIPE, text=True)
    helpers: list[psutil.Process] = []
    try:
        assert parent.stdout.readline().strip() == "None", "CodeCarbon never measured"
        children = psutil.Process(parent.pid).children()
        (sampler,) = [p for p in children if "otel_flops.energy.codecarbon_process" in p.cmdline()]
        helpers = [p for p in children if p.pid != sampler.pid]
        assert len(helpers) == (helper == "fork")
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(sampler):
            assert time.monotonic() < deadline, "CodeCarbon's process outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        for process in [*helpers, parent]:
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                process.kill()
        deadline = time.monotonic() + 10
        for process in helpers:  # gone before the next test: a forked helper holds the parent's files
            while _alive(process) and time.monotonic() < deadline:
                time.sleep(0.01)


def _samplers() -> list[psutil.Process]:
    """This process's CodeCarbon processes."""
    return [p for p in psutil.Process().children() if "otel_flops.energy.codecarbon_process" in p.cmdline()]


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a reparented child waits for its new parent to reap it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until(condition, monitor: EnergyMonitor, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, monitor.unavailable
        _train_until(time.monotonic() + 0.2)


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
        assert all(k[0] == "gpu" and k[2] == "nvml" for k in source.read().joules)
