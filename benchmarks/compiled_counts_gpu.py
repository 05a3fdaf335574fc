"""On a GPU: counts of CUDA graphs and compiled models equal eager counts (no timing here).

    python benchmarks/compiled_counts_gpu.py

1. A model captured with ``torch.cuda.graph`` and replayed N times counts N eager forwards.
2. ``torch.compile(mode="reduce-overhead")`` inference (Inductor's CUDA graphs) counts what eager
   counts, call for call, in steady and full mode.
3. ``torch.compile`` bf16 training (default mode) counts what eager counts, per phase.
Prints one line per check and exits 1 if any differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402

REPLAYS = 5


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.GELU(), nn.LayerNorm(1024), nn.Linear(1024, 256)).cuda()


def phases(run, mode: str, steps: int, train: bool) -> dict:
    with otel_flops.track(run, mode=mode, energy=False) as tracker:
        x = torch.randn(64, 256, device="cuda")
        for _ in range(steps):
            if train:
                with torch.autocast("cuda", torch.bfloat16):
                    loss = run(x).float().pow(2).mean()
                loss.backward()
            else:
                with torch.no_grad():
                    run(x)
        torch.cuda.synchronize()
        return tracker.report()["phases"]


def cuda_graph_replays() -> tuple[dict, dict]:
    net = model().eval()
    static = torch.randn(64, 256, device="cuda")
    with otel_flops.track(net, mode="full", energy=False) as tracker, torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            net(static)  # warm-up, as torch.cuda.graph's docs ask: one real forward
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            net(static)
        for _ in range(REPLAYS):
            graph.replay()
        torch.cuda.synchronize()
        got = tracker.report()["phases"]
    expected = phases(net, "full", 1 + REPLAYS, train=False)
    return got, expected


def main() -> int:
    bad = 0

    def check(name: str, got: dict, expected: dict) -> None:
        nonlocal bad
        same = got == expected
        bad += not same
        print(f"{'ok ' if same else 'BAD'} {name}" + ("" if same else f": got {got}, eager {expected}"))

    check("torch.cuda.graph: capture + 5 replays == 6 eager forwards", *cuda_graph_replays())
    net = model().eval()
    eager = phases(net, "full", 8, train=False)
    for mode in ("steady", "full"):
        torch._dynamo.reset()
        check(f"reduce-overhead inference, {mode}", phases(torch.compile(net, mode="reduce-overhead"), mode, 8,
                                                           train=False), eager)
    net = model()
    eager = phases(net, "full", 5, train=True)
    for mode in ("steady", "full"):
        torch._dynamo.reset()
        check(f"compiled bf16 training, {mode}", phases(torch.compile(net), mode, 5, train=True), eager)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
