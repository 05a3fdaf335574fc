"""The delay energy tracking adds before the first training step (target: under 50 ms).

    python benchmarks/energy_startup.py [--pairs 5]

What a user waits for is the first ``otel_flops.track()`` of a process, so each measurement is
a fresh process; energy on and off run interleaved (on, off, off, on, ...) and the table shows
medians: the time ``track()`` takes to enter, the first training step after it (CodeCarbon's
own process imports CodeCarbon and probes the hardware meanwhile), and a later, warm entry in
the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child() -> None:
    import torch

    import otel_flops
    from otel_flops.analysis.workloads import WORKLOADS, train_step

    workload = WORKLOADS["mlp"]
    model = workload.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = workload.make_batch(256, torch.device("cpu"))
    began = time.perf_counter()
    with otel_flops.track(model):
        entered = time.perf_counter()
        train_step(model, optimizer, workload, x, y)
        stepped = time.perf_counter()
    began_warm = time.perf_counter()
    with otel_flops.track(model):
        warm = time.perf_counter() - began_warm
    print(json.dumps({"enter": entered - began, "first_step": stepped - entered, "warm_enter": warm}))


def measure(energy: str) -> dict[str, float]:
    env = {**os.environ, "OTEL_FLOPS_ENERGY": energy, "OTEL_EXPORTER_PROMETHEUS_PORT": "0"}
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for i in range(args.pairs):
        for energy in ("on", "off") if i % 2 == 0 else ("off", "on"):
            runs[energy].append(measure(energy))
    keys = ("enter", "first_step", "warm_enter")
    medians = {e: {k: statistics.median(r[k] for r in rs) * 1e3 for k in keys} for e, rs in runs.items()}
    added = {k: statistics.median((on[k] - off[k]) * 1e3 for on, off in zip(runs["on"], runs["off"])) for k in keys}
    print(f"{args.pairs} fresh processes per variant, interleaved; medians in ms")
    print(f"{'energy':<22}{'track() enter':>15}{'first step':>12}{'warm enter':>12}")
    for name, row in (("off", medians["off"]), ("on", medians["on"]), ("added (median of pairs)", added)):
        print(f"{name:<22}{row['enter']:>15.1f}{row['first_step']:>12.1f}{row['warm_enter']:>12.1f}")
    verdict = "under" if added["enter"] < 50 else "OVER"
    print(f"energy tracking adds {added['enter']:.1f} ms before the first step ({verdict} the 50 ms target)")


if __name__ == "__main__":
    main()
