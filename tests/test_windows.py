"""otel_flops.window(name): FLOPs, BOPs, joules and seconds of a block, in the report and on /metrics.

Exact counts from hand-derived formulas (a matmul is 2*m*n*k FLOPs), in both counting modes; the
series scraped from a real endpoint equal the report; joules are what the machine can measure.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
import torch
from conftest import BATCH, free_port, scrape

import otel_flops
from otel_flops.analysis.workloads import WORKLOADS, train_step

MODES = ["full", "steady"]
M, K, N = 8, 16, 4
MM_FLOPS = 2 * M * N * K


def _operands() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(M, K), torch.randn(K, N)


@pytest.mark.parametrize("mode", MODES)
def test_a_window_counts_exactly_the_work_inside_it(mode):
    a, b = _operands()
    with otel_flops.track(mode=mode, energy=False, sklearn=False) as tracker:
        torch.mm(torch.randn(32, 32), torch.randn(32, 32))  # outside: not the window's
        with otel_flops.window("outer"):
            with otel_flops.window("mm") as inner:
                torch.mm(a, b)
            a + 1  # elementwise: max(N_in, N_out) = M*K FLOPs, in outer only
        torch.mm(torch.randn(32, 32), torch.randn(32, 32))
        again = otel_flops.window("mm").start()
        torch.mm(a, b)
        occurrence = again.stop()
        report = tracker.report()
    windows = report["windows"]
    assert windows["mm"]["flops"] == 2 * MM_FLOPS and windows["mm"]["count"] == 2
    assert windows["mm"]["bops"] == 2 * MM_FLOPS * 32
    assert windows["outer"]["flops"] == MM_FLOPS + M * K and windows["outer"]["count"] == 1
    assert occurrence.flops == MM_FLOPS and occurrence.seconds > 0
    assert windows["mm"]["seconds"] > 0 and windows["mm"]["joules"] is None  # energy off: not measured
    assert report["totals"]["flops"] == 2 * MM_FLOPS + M * K + 2 * 2 * 32**3
    assert not inner._open


def _train(mode: str, steps: int) -> dict:
    torch.manual_seed(0)
    workload = WORKLOADS["mlp"]
    model = workload.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = workload.make_batch(BATCH["mlp"], torch.device("cpu"))
    with otel_flops.track(model, mode=mode, energy=False, sklearn=False) as tracker:
        for _ in range(steps):
            with otel_flops.window("train"):
                train_step(model, optimizer, workload, x, y)
        with otel_flops.window("eval"), torch.no_grad():
            model(x)
        return tracker.report()


def test_training_windows_are_exact_in_steady_mode():
    steps = 6
    full, steady = _train("full", steps), _train("steady", steps)
    assert steady["steady"]["replayed"] >= steps  # most steps were replayed, not intercepted
    assert not steady["incomplete"]
    for name in ("train", "eval"):
        assert steady["windows"][name]["flops"] == full["windows"][name]["flops"], name
        assert steady["windows"][name]["bops"] == full["windows"][name]["bops"], name
    assert steady["windows"]["train"]["count"] == steps
    # All the work ran inside the windows; eval is the inference forward.
    assert sum(w["flops"] for w in steady["windows"].values()) == steady["totals"]["flops"]
    assert steady["windows"]["eval"]["flops"] == steady["phases"]["inference"]["flops"]


class _Windowed(torch.nn.Module):
    """A model that opens a window inside its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(K, K)
        self.b = torch.nn.Linear(K, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with otel_flops.window("inside"):
            x = self.a(x)
        return self.b(x)


@pytest.mark.parametrize("mode", MODES)
def test_a_window_inside_a_forward(mode):
    """Exact in full mode; in steady mode a replayed forward is credited whole, and the report says so."""
    model = _Windowed()
    x = torch.randn(M, K)
    calls = 5
    with otel_flops.track(model, mode=mode, energy=False, sklearn=False) as tracker, torch.no_grad():
        for _ in range(calls):
            model(x)
        report = tracker.report()
    linear = 2 * M * K * K  # addmm (its bias add is not counted, as in FlopCounterMode)
    inside = report["windows"]["inside"]
    assert inside["count"] == calls
    if mode == "full":
        assert inside["flops"] == calls * linear
        assert not report["incomplete"]
    else:
        assert inside["flops"] == linear  # the recorded call; the replays are credited after the window
        assert report["steady"]["replayed"] == calls - 1
        assert any(line.startswith(f"{2 * (calls - 1)} otel_flops.window edge(s) fell inside a replayed")
                   for line in report["incomplete"])


def test_window_series_on_a_real_endpoint_equal_the_report_and_are_capped():
    a, b = _operands()
    with otel_flops.track(mode="full", energy=False, sklearn=False, serve=True, host="127.0.0.1",
                          port=free_port(), window_label_cap=2) as tracker:
        for name, times in (("first", 1), ("second", 2), ("third", 3)):
            for _ in range(times):
                with otel_flops.window(name):
                    torch.mm(a, b)
        report = tracker.report()
        samples = scrape(tracker.endpoint.url)
    windows = report["windows"]

    def series(name: str) -> dict[str, float]:
        return {labels["window"]: value for labels, value in samples[name]}

    assert series("otel_flops_window_flops_total") == {"first": MM_FLOPS, "second": 2 * MM_FLOPS,
                                                       "other": 3 * MM_FLOPS}
    assert series("otel_flops_window_bops_total") == {"first": windows["first"]["bops"],
                                                      "second": windows["second"]["bops"],
                                                      "other": windows["third"]["bops"]}
    durations = series("otel_flops_window_duration_seconds_total")
    assert durations["first"] == pytest.approx(windows["first"]["seconds"], rel=1e-9)
    assert durations["other"] == pytest.approx(windows["third"]["seconds"], rel=1e-9)
    assert "otel_flops_window_energy_joules_total" not in samples  # energy off: no series, not a zero
    labels = samples["otel_flops_window_flops_total"][0][0]
    assert {"run", "node"} <= set(labels)


def test_window_energy_is_what_the_machine_measures():
    """On a machine with a GPU, NVML's counter (exact); on one without, CodeCarbon's CPU/RAM estimate
    where it runs; nothing (None, no series) where no source measures."""
    with otel_flops.track(mode="full", sklearn=False, serve=True, host="127.0.0.1", port=free_port(),
                          energy_interval=0.2) as tracker:
        energy = tracker.session.energy
        deadline = time.monotonic() + 30
        while energy.unavailable == "energy sources are still starting" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # a CodeCarbon reading in place before the window opens
        with otel_flops.window("busy"):
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                torch.mm(torch.randn(64, 64), torch.randn(64, 64))
        report = tracker.report()
        samples = scrape(tracker.endpoint.url)
    window = report["windows"]["busy"]
    if energy.unavailable is not None and not report["energy"].get("available"):
        if os.environ.get("CI"):
            pytest.fail(f"no energy source on CI: {energy.unavailable}")
        assert window["joules"] is None and "otel_flops_window_energy_joules_total" not in samples
        pytest.skip(f"no energy source here: {energy.unavailable}")
    assert window["joules"] is not None and window["joules"] >= 0
    assert window["joules"] == pytest.approx(sum(window["joules_by_component"].values()))
    assert window["joules"] <= report["energy"]["joules"] + 1e-9
    scraped = {labels["window"]: value for labels, value in samples["otel_flops_window_energy_joules_total"]}
    assert scraped["busy"] == pytest.approx(window["joules"], rel=1e-9)
    if torch.cuda.is_available():
        assert "nvml" in window["energy_source"] and window["joules_by_component"]["gpu"] > 0


def test_bad_use_is_one_line_and_never_raises_into_the_program(caplog):
    with pytest.raises(ValueError, match=r"^otel_flops.window: name must be a non-empty string, got ''$"):
        otel_flops.window("")
    window = otel_flops.window("twice")
    with caplog.at_level(logging.WARNING, logger="otel_flops"):
        assert window.stop() is None
        window.start()
        window.start()
        assert window.stop() is None  # outside a session: nothing measured
    assert "is not started" in caplog.text and "is already started" in caplog.text


def test_windows_in_the_table_and_html():
    from otel_flops.analysis import html_report

    with otel_flops.track(mode="full", energy=False, sklearn=False) as tracker:
        with otel_flops.window("matmul"):
            torch.mm(*_operands())
        report = tracker.report()
    assert "window matmul: 1.02 kFLOP, 32.8 kBOP, energy unmeasured, " in report.table()
    page = html_report.render(report)
    assert "<table id=\"windows\">" in page and f"<td>{MM_FLOPS:,}</td>" in page


def test_a_failure_of_ours_never_reaches_the_program(monkeypatch):
    """A window whose own measuring fails leaves the user's block and its result alone, and says so."""
    a, b = _operands()
    with otel_flops.track(mode="full", energy=False, sklearn=False) as tracker:
        expected = torch.mm(a, b)
        with otel_flops.window("broken"):
            monkeypatch.setattr(tracker.session.ledger, "work", lambda: 1 / 0)
            out = torch.mm(a, b)
        monkeypatch.undo()
        report = tracker.report()
    assert torch.equal(out, expected)
    assert report["errors"] == {"window stop": 1} and "broken" not in report["windows"]
