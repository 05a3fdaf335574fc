"""What energy measurement costs a CPU-bound training step: bare vs steady+energy on vs steady+energy off.

    python benchmarks/energy_overhead.py [--rounds 7] [--settle 2.5] [--seconds 3] [--batch 64]
                                         [--interval 2] [--threads N] [--from-start] [--out FILE]

A small MLP (the seed paper's, AdamW, fp32) trains on the CPU, where every microsecond the
training thread loses shows in the step. Each round runs three blocks, one per variant, in an
order that rotates from round to round (bare, on, off; on, off, bare; off, bare, on), so drift
and which-runs-first cancel. Each block is a session of its own, as a user would open it
(``otel_flops.track()`` with the default steady mode, energy on or off; nothing for bare):
``--settle`` seconds of steps first, and on until CodeCarbon's process measures (its one-time
start-up, about 0.4 s of CPU in its own process, stays out of the timing),
then ``--seconds`` of timed steps, long enough to hold at least one CodeCarbon measurement.
``--from-start`` times each session from its first step instead, CodeCarbon's start-up included.
The figure per pair is the median, over rounds, of the ratio of the two blocks' mean step
times, and of their CPU time per step in the training thread (which other processes competing
for the cores do not inflate). It also shows the CPU time CodeCarbon's process used per second.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402
from otel_flops.analysis.workloads import WORKLOADS, train_step  # noqa: E402
from otel_flops.energy import STARTING  # noqa: E402

VARIANTS = ("bare", "steady+energy on", "steady+energy off")
PAIRS = (("steady+energy on", "bare"), ("steady+energy off", "bare"), ("steady+energy on", "steady+energy off"))


def contexts(interval: float) -> dict[str, Callable[[], contextlib.AbstractContextManager]]:
    return {
        "bare": contextlib.nullcontext,
        "steady+energy on": lambda: otel_flops.track(mode="steady", energy=True, energy_interval=interval),
        "steady+energy off": lambda: otel_flops.track(mode="steady", energy=False),
    }


class Block:
    """One session's timed steps: mean step time, and CodeCarbon's process CPU per second."""

    def __init__(self, batch: int) -> None:
        torch.manual_seed(0)
        self.workload = WORKLOADS["mlp"]
        self.model = self.workload.build()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x, self.y = self.workload.make_batch(batch, torch.device("cpu"))

    def step(self) -> None:
        train_step(self.model, self.optimizer, self.workload, self.x, self.y)

    def run(self, context: Callable[[], contextlib.AbstractContextManager], settle: float | None,
            seconds: float) -> tuple[float, float, float | None]:
        """Seconds per step (wall clock, and CPU of the training thread), and CodeCarbon's process's
        CPU seconds per second. ``settle=None``: time from the session's first step, CodeCarbon's
        start-up included."""
        gc.collect()
        with context() as tracker:
            until = time.perf_counter() + (settle or 0.0)
            while settle is not None and (time.perf_counter() < until or not _measuring(tracker)):
                self.step()
            samplers = _samplers()
            cpu = sum(_cpu(p) for p in samplers)
            steps, began, thread_began = 0, time.perf_counter(), time.thread_time()
            while (elapsed := time.perf_counter() - began) < seconds:
                self.step()
                steps += 1
            thread_cpu = time.thread_time() - thread_began
            sampler_cpu = (sum(_cpu(p) for p in samplers) - cpu) / elapsed if samplers else None
        return elapsed / steps, thread_cpu / steps, sampler_cpu


def _measuring(tracker: otel_flops.Tracker | None) -> bool:
    """True once the energy sources measure (CodeCarbon's start-up is over), or where there are none."""
    energy = tracker.session.energy if tracker is not None else None
    return energy is None or energy.unavailable != STARTING


def _samplers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if "otel_flops.energy.codecarbon_process" in p.cmdline()]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--settle", type=float, default=2.5, help="untimed seconds at the start of each block")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per block")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--interval", type=float, default=2.0, help="CodeCarbon's measurement interval, s")
    parser.add_argument("--from-start", action="store_true",
                        help="no settling: time each session from its first step, CodeCarbon's start-up included")
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's own choice)")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Block(args.batch)
    variants = contexts(args.interval)
    for _ in range(20):  # warm-up: allocator, kernels
        bench.step()
    steps: dict[str, list[float]] = {name: [] for name in VARIANTS}
    thread_cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    sampler_cpu: list[float] = []
    for rnd in range(args.rounds):
        for name in VARIANTS[rnd % 3:] + VARIANTS[:rnd % 3]:
            step, cpu, sampler = bench.run(variants[name], None if args.from_start else args.settle, args.seconds)
            steps[name].append(step)
            thread_cpu[name].append(cpu)
            if sampler is not None:
                sampler_cpu.append(sampler)
    ratios = {pair: [a / b for a, b in zip(steps[pair[0]], steps[pair[1]])] for pair in PAIRS}
    cpu_ratios = {pair: [a / b for a, b in zip(thread_cpu[pair[0]], thread_cpu[pair[1]])] for pair in PAIRS}
    print(f"MLP b{args.batch} fp32 training step (AdamW), CPU: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{datetime.date.today()}")
    settle = "timed from the first step" if args.from_start else f"{args.settle:g} s settle"
    print(f"{args.rounds} rounds of 3 interleaved blocks ({settle} + {args.seconds:g} s timed), "
          f"energy interval {args.interval:g} s")
    for name in VARIANTS:
        print(f"  {name:<20} median step {1e3 * statistics.median(steps[name]):.3f} ms")
    for pair in PAIRS:
        low, high = _quartiles(ratios[pair])
        cpu_low, cpu_high = _quartiles(cpu_ratios[pair])
        print(f"  {pair[0]} / {pair[1]}: median {statistics.median(ratios[pair]):.3f}x [{low:.3f}-{high:.3f}]; "
              f"training thread's CPU per step {statistics.median(cpu_ratios[pair]):.3f}x "
              f"[{cpu_low:.3f}-{cpu_high:.3f}]")
    if sampler_cpu:
        print(f"  CodeCarbon's process: {1e3 * statistics.median(sampler_cpu):.1f} ms of CPU per second")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "args": vars(args), "steps": steps, "thread_cpu": thread_cpu,
            "ratios": {" / ".join(pair): values for pair, values in ratios.items()},
            "sampler_cpu_per_s": sampler_cpu,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
