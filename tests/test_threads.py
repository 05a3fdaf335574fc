"""Every thread that runs torch work is counted, with its own model and phase (threads.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import otel_flops

MODES = ("full", "steady")


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.LayerNorm(24), nn.Linear(24, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def _track(mode: str, fn):
    with otel_flops.track(mode=mode, energy=False) as tracker:
        fn()
    return tracker.report()


def _train(model_cls: type, steps: int = 4, started: threading.Barrier | None = None) -> None:
    """``steps`` AdamW steps of a seeded model, the loss computed outside it."""
    torch.manual_seed(0)
    model = model_cls()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    shape = (6, 12) if model_cls is Encoder else (6, 3, 6, 6)
    if started is not None:
        started.wait()  # both threads train at the same time
    for _ in range(steps):
        x, y = torch.randn(shape), torch.randint(0, 5, (6,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _summed(a: dict, b: dict) -> dict:
    """Two reports' {name: {flops, bops}} sections added name by name."""
    return {name: {k: a.get(name, {}).get(k, 0) + b.get(name, {}).get(k, 0) for k in ("flops", "bops")}
            for name in {*a, *b}}


def _counts(report: dict) -> tuple:
    return report["phases"], report["by_model"], report["steps"], report["errors"], report["uncounted_ops"]


@pytest.mark.parametrize("mode", MODES)
def test_a_model_served_from_a_thread_pool_counts_each_request(mode):
    torch.manual_seed(0)
    model = Encoder().eval()
    batch = torch.randn(3, 12)

    def request(_: int = 0) -> torch.Tensor:
        with torch.no_grad():
            return model(batch)

    bare = request()
    one = _track(mode, request)
    outputs: list[torch.Tensor] = []

    def serve() -> None:
        with ThreadPoolExecutor(4) as pool:
            outputs.extend(pool.map(request, range(4)))

    four = _track(mode, serve)
    matmuls = 2 * 3 * (12 * 24 + 24 * 5)  # addmm: the product only, as FlopCounterMode
    assert one["phases"]["inference"]["flops"] == matmuls + one["by_op"]["aten.gelu"]["flops"] + \
        one["by_op"]["aten.native_layer_norm"]["flops"]
    assert four["phases"] == {p: {k: 4 * v for k, v in c.items()} for p, c in one["phases"].items()}
    assert four["by_model"] == {"Encoder": four["totals"]}
    assert {op: c["flops"] for op, c in four["by_op"].items()} == {
        op: 4 * c["flops"] for op, c in one["by_op"].items()}
    assert not four["errors"] and not four["incomplete"]
    assert all(torch.equal(out, bare) for out in outputs)  # bitwise, in every thread


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["two threads", "main and a thread"])
def test_two_models_trained_at_once_count_as_each_alone(mode, layout):
    alone_a = _track(mode, lambda: _train(Encoder))
    alone_b = _track(mode, lambda: _train(ConvNet))

    def both() -> None:
        started = threading.Barrier(2)
        threads = [threading.Thread(target=_train, args=(ConvNet, 4, started))]
        if layout == "two threads":
            threads.append(threading.Thread(target=_train, args=(Encoder, 4, started)))
        for thread in threads:
            thread.start()
        if layout == "main and a thread":
            _train(Encoder, 4, started)
        for thread in threads:
            thread.join()

    together = _track(mode, both)
    phases, by_model, steps, errors, uncounted = _counts(together)
    assert by_model == _summed(alone_a["by_model"], alone_b["by_model"])
    assert by_model["Encoder"] == alone_a["totals"] and by_model["ConvNet"] == alone_b["totals"]
    assert phases == _summed(alone_a["phases"], alone_b["phases"])
    assert set(phases) == {"preprocessing", "forward", "loss", "backward", "optimizer"}
    assert steps == 8 and not errors and uncounted == alone_a["uncounted_ops"]
    assert not together["incomplete"]


@pytest.mark.parametrize("mode", MODES)
def test_a_thread_running_before_the_session_is_counted_from_its_first_step(mode):
    go, done = threading.Event(), threading.Event()

    def late_trainer() -> None:
        go.wait()
        _train(Encoder, steps=3)
        done.set()

    thread = threading.Thread(target=late_trainer)
    thread.start()
    alone = _track(mode, lambda: _train(Encoder, steps=3))
    with otel_flops.track(mode=mode, energy=False) as tracker:
        go.set()
        done.wait()
    thread.join()
    late = tracker.report()
    assert late["steps"] == 3
    assert late["phases"]["optimizer"] == alone["phases"]["optimizer"]  # every step's update is seen
    # the first step's forward, loss and backward ran before the thread could be entered
    for phase in ("forward", "loss", "backward"):
        assert late["phases"][phase]["flops"] * 3 == alone["phases"][phase]["flops"] * 2, phase
    assert any("already running when otel-flops started" in line for line in late["incomplete"])


def test_a_thread_without_modules_leaves_the_module_hooks_off():
    """Steady mode: tensor work in another thread outside any module costs the session thread's
    replayed steps nothing (no global module hook), and counts as preprocessing."""
    with otel_flops.track(mode="steady", energy=False) as tracker:
        thread = threading.Thread(target=lambda: torch.ones(4, 5).sum(0).add(1))
        thread.start()
        thread.join()
        threads = tracker.session._counting._threads
        assert threads._module_hooks == []
    report = tracker.report()
    assert report["phases"] == {"preprocessing": {"flops": 20 + 5, "bops": 32 * 25}}
