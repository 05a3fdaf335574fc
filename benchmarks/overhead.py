"""Step-time overhead of FLOP counters, measured side by side in one run.

    python benchmarks/overhead.py [--device cuda|cpu] [--repeats 5] [--quads 12] [--out FILE]

For each workload and precision (fp32, bf16 autocast) it times a full training step (forward,
loss, backward, AdamW) under: no instrumentation, an empty TorchDispatchMode, torch's
FlopCounterMode, FLOPpy (PyPI floppy-tracker, if installed), otel-flops full mode and otel-flops
steady mode (both with energy off: counting alone), and otel-flops steady mode with the
CodeCarbon and NVML energy threads (the default). Each variant is timed after warm-up steps
inside its own context. The peers run in pairs with bare (bare first in even repeats, second in
odd ones); the figure is the median of the per-pair ratios. Steady mode's few percent would
drown in the pair-to-pair drift of a shared machine, so it is measured in ABBA quads of longer
runs (bare, steady, steady, bare; then steady, bare, bare, steady), and bare-vs-bare quads beside
them show the noise of the measurement itself; the CPU time spent inside steady mode's hooks
per step (its whole cost) is measured too. Last, it checks that steady mode's per-phase and
per-op FLOPs and BOPs over N steps equal full mode's, and that its memory after 10,000 steps is
where it was after 100.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402
from otel_flops.analysis.workloads import WORKLOADS  # noqa: E402

BATCHES = {
    "cuda": {"mlp": 256, "resnet18": 128, "transformer": 32},
    "cpu": {"mlp": 64, "resnet18": 8, "transformer": 4},
}


STEADY, NOISE, INTERLEAVED = "otel-flops steady", "bare vs bare", "steady, interleaved blocks"


class EmptyMode(TorchDispatchMode):
    """The floor of any dispatch-mode counter: intercept every op, do nothing."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _floppy_tracker():
    """FLOPpy imports wandb at import time; the benchmark never logs, so a stub stands in if absent."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        sys.modules["wandb"] = types.ModuleType("wandb")
    try:
        from floppy import FLOPpyTracker
    except ImportError:
        return None
    return FLOPpyTracker


class Bench:
    """One workload at one precision: model, optimizer, a fixed batch, and a training step."""

    def __init__(self, name: str, device: str, bf16: bool) -> None:
        torch.manual_seed(0)
        self.name, self.device, self.bf16 = name, device, bf16
        self.workload = WORKLOADS[name]
        self.model = self.workload.build().to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x, self.y = self.workload.make_batch(BATCHES[device][name], torch.device(device))

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.workload.loss(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def timed(self, context: Callable[[], contextlib.AbstractContextManager], steps: int, warmup: int) -> float:
        """Seconds per step, measured inside ``context`` after ``warmup`` steps there."""
        return self.timed_steps(context, steps, warmup)[0]

    def timed_steps(self, context: Callable[[], contextlib.AbstractContextManager], steps: int,
                    warmup: int) -> tuple[float, float, float]:
        """The run's wall-clock seconds per step, its median step, and the CPU seconds per step
        of this thread (which time taken by other tenants of a shared host does not inflate).
        Steps are timed on the host without a sync: once the launch queue is full the host runs
        at the device's pace."""
        with context():
            for _ in range(warmup):
                self.step()
            self.sync()
            cpu = time.thread_time()
            stamps = [time.perf_counter()]
            for _ in range(steps):
                self.step()
                stamps.append(time.perf_counter())
            self.sync()
            end, cpu = time.perf_counter(), time.thread_time() - cpu
        return (end - stamps[0]) / steps, statistics.median(b - a for a, b in zip(stamps, stamps[1:])), cpu / steps

    # -- contexts -----------------------------------------------------------------
    @contextlib.contextmanager
    def floppy(self) -> Iterator[None]:
        tracker_class = _floppy_tracker()
        criterion = self.workload.loss if isinstance(self.workload.loss, torch.nn.Module) else None
        tracker = tracker_class()
        tracker.run(model=self.model, optimizer=self.optimizer, criterion=criterion)
        try:
            yield
        finally:
            with contextlib.redirect_stdout(open(os.devnull, "w")):
                tracker.stop()


def variants(bench: Bench) -> dict[str, Callable[[], contextlib.AbstractContextManager]]:
    found = {
        "bare": contextlib.nullcontext,
        "empty TorchDispatchMode": EmptyMode,
        "torch FlopCounterMode": lambda: FlopCounterMode(display=False),
    }
    if _floppy_tracker() is not None:
        found["FLOPpy"] = bench.floppy
    found.update({
        "otel-flops full": lambda: otel_flops.track(mode="full", energy=False),
        STEADY: lambda: otel_flops.track(mode="steady", energy=False),
        # the product's default: steady counting plus CodeCarbon/NVML energy threads
        "otel-flops steady+energy": lambda: otel_flops.track(mode="steady"),
    })
    return found


def _quad(bench: Bench, context: Callable[[], contextlib.AbstractContextManager], steps: int, warmup: int,
          flip: bool) -> tuple[float, list[float]]:
    """One ABBA quad (BAAB when ``flip``) of bare (A) and ``context`` (B), so linear drift and
    which-runs-first both cancel: B's seconds per step, and its ratios to A in wall-clock time,
    in median step (which a preempted step or a collection does not move) and in CPU time."""
    bare = contextlib.nullcontext
    order = (context, bare, bare, context) if flip else (bare, context, context, bare)
    runs = []
    for ctx in order:
        gc.collect()
        runs.append(bench.timed_steps(ctx, steps, warmup))
    outer, inner = ([x + y for x, y in zip(runs[i], runs[j])] for i, j in ((0, 3), (1, 2)))
    a, b = (inner, outer) if flip else (outer, inner)
    return b[0] / 2, [y / x for x, y in zip(a, b)]


def measure(bench: Bench, repeats: int, quads: int, steps: int, quad_seconds: float, warmup: int) -> dict:
    """Ratios to bare. The peers, at 1.6-6x, get alternating pairs; steady mode, whose few
    percent would drown in pair-to-pair drift, gets ABBA quads of longer runs, next to
    bare-vs-bare quads that show the measurement's own noise."""
    contexts = variants(bench)
    times: dict[str, list[float]] = {name: [] for name in contexts}
    ratios: dict[str, list[float]] = {name: [] for name in contexts}
    step_ratios: dict[str, list[float]] = {STEADY: [], NOISE: []}
    cpu_ratios: dict[str, list[float]] = {STEADY: [], NOISE: []}
    failed: dict[str, str] = {}
    for repeat in range(repeats):
        for name, context in contexts.items():
            if name in ("bare", STEADY) or name in failed:
                continue
            try:  # bare first in even repeats, second in odd ones
                if repeat % 2 == 0:
                    bare, t = bench.timed(contexts["bare"], steps, warmup), bench.timed(context, steps, warmup)
                else:
                    t, bare = bench.timed(context, steps, warmup), bench.timed(contexts["bare"], steps, warmup)
            except Exception as exc:  # a peer that cannot run this workload is reported, not fatal
                failed[name] = f"{type(exc).__name__}: {exc}"[:120]
                continue
            times["bare"].append(bare)
            times[name].append(t)
            ratios[name].append(t / bare)
    times[NOISE], ratios[NOISE] = [], []
    if not times["bare"]:
        times["bare"].append(bench.timed(contextlib.nullcontext, steps, warmup))
    bare_step = statistics.median(times["bare"])
    quad_steps = max(steps, round(quad_seconds / bare_step))
    for quad in range(quads):
        for name, context in ((STEADY, contexts[STEADY]), (NOISE, contextlib.nullcontext)):
            t, (ratio, step_ratio, cpu_ratio) = _quad(bench, context, quad_steps, warmup, flip=quad % 2 == 1)
            times[name].append(t)
            ratios[name].append(ratio)
            step_ratios[name].append(step_ratio)
            cpu_ratios[name].append(cpu_ratio)
    out = {
        name: {
            "median_ms": 1e3 * statistics.median(ts),
            "ratio": statistics.median(ratios[name]) if ratios[name] else 1.0,
            "quartiles": _quartiles(ratios[name]),
            "runs": len(ratios[name]) or len(ts),
        }
        for name, ts in times.items()
        if ts
    }
    for name, values in step_ratios.items():
        if not values:
            continue
        cpu = cpu_ratios[name]
        out[name].update(steps=quad_steps, step_ratio=statistics.median(values), step_quartiles=_quartiles(values),
                         cpu_ratio=statistics.median(cpu), cpu_quartiles=_quartiles(cpu),
                         raw_ratios=ratios[name], raw_step_ratios=values, raw_cpu_ratios=cpu)
    out.update({name: {"failed": reason} for name, reason in failed.items()})
    return out


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return (min(values, default=1.0), max(values, default=1.0))
    q = statistics.quantiles(values, n=4)
    return (q[0], q[2])


def interleaved(bench: Bench, blocks: int, block_steps: int, warmup: int, skip: int = 2) -> dict:
    """Bare and steady mode in alternating blocks of a few steps inside one session, whose
    counting is stopped for the bare blocks: noise slower than a block (another tenant's burst,
    clock changes) hits both sides of a pair alike. Each block's first ``skip`` steps (which pay
    for the switch) are left out; the ratio of each steady block's mean step to the bare block
    before it is one sample, and the figure is their median."""
    means: dict[bool, list[float]] = {False: [], True: []}
    with otel_flops.track(mode="steady", energy=False) as tracker:
        counting = tracker.session._counting
        for _ in range(warmup):
            bench.step()
        for block in range(2 * blocks):
            steady = block % 2 == 1
            (counting.start if steady else counting.stop)()
            stamps = []
            for _ in range(block_steps):
                bench.step()
                stamps.append(time.perf_counter())
            means[steady].append((stamps[-1] - stamps[skip - 1]) / (block_steps - skip))
        counting.start()  # as the session expects to stop it
    ratios = [s / b for b, s in zip(means[False], means[True])]
    logs = [math.log(r) for r in ratios]
    spread = 1.96 * statistics.stdev(logs) / math.sqrt(len(logs))
    return {"ratio": statistics.median(ratios), "quartiles": _quartiles(ratios), "blocks": blocks,
            "block_steps": block_steps, "geomean": math.exp(statistics.mean(logs)),
            "geomean_ci95": (math.exp(statistics.mean(logs) - spread), math.exp(statistics.mean(logs) + spread))}


def counts_agree(bench: Bench, steps: int) -> tuple[bool, int]:
    reports = {}
    for mode in ("full", "steady"):
        with otel_flops.track(mode=mode, energy=False) as tracker:
            for _ in range(steps):
                bench.step()
        reports[mode] = tracker.report()
    flops_by_op = {mode: {op: (c["flops"], c["bops"]) for op, c in r["by_op"].items()} for mode, r in reports.items()}
    same = reports["full"]["phases"] == reports["steady"]["phases"] and flops_by_op["full"] == flops_by_op["steady"]
    return same, reports["steady"]["totals"]["flops"]


HOOKS = ("_root_pre", "_root_post", "_optimizer_pre", "_optimizer_post", "_watch_pre")


def steady_hook_time(bench: Bench, steps: int) -> float:
    """Microseconds per step spent inside steady mode's hooks: its whole CPU cost, free of GPU drift."""
    from otel_flops.torch.steady import SteadyCounting

    spent = [0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter_ns() - start

        return wrapper

    originals = {name: getattr(SteadyCounting, name) for name in HOOKS}
    for name, fn in originals.items():
        setattr(SteadyCounting, name, timed(fn))
    try:
        with otel_flops.track(mode="steady", energy=False):
            for _ in range(10):
                bench.step()
            spent[0] = 0
            for _ in range(steps):
                bench.step()
            bench.sync()
    finally:
        for name, fn in originals.items():
            setattr(SteadyCounting, name, fn)
    return spent[0] / steps / 1e3


def _cell(result: dict) -> str:
    if "failed" in result:
        return "failed"
    if "geomean" in result:
        low, high = result["geomean_ci95"]
        return f"{result['ratio']:.3f}x [{result['quartiles'][0]:.3f}-{result['quartiles'][1]:.3f}], " \
               f"geomean {result['geomean']:.3f}x (95% CI {low:.3f}-{high:.3f})"
    if "step_ratio" not in result:
        return f"{result['ratio']:.3f}x"
    parts = [("", "ratio", "quartiles"), ("median step ", "step_ratio", "step_quartiles"),
             ("CPU ", "cpu_ratio", "cpu_quartiles")]
    return ", ".join(f"{label}{result[ratio]:.3f}x [{result[quartiles][0]:.3f}-{result[quartiles][1]:.3f}]"
                     for label, ratio, quartiles in parts)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_growth(bench: Bench, early: int, late: int) -> dict[str, float]:
    """RSS and device memory after ``early`` and after ``late`` steady-mode steps."""
    with otel_flops.track(mode="steady", energy=False):
        for _ in range(early):
            bench.step()
        bench.sync()
        gc.collect()
        rss_early = _rss_mb()
        cuda_early = torch.cuda.memory_allocated() / 2**20 if bench.device == "cuda" else 0.0
        for _ in range(late - early):
            bench.step()
        bench.sync()
        gc.collect()
        rss_late = _rss_mb()
        cuda_late = torch.cuda.memory_allocated() / 2**20 if bench.device == "cuda" else 0.0
    return {"rss_early_mb": rss_early, "rss_late_mb": rss_late, "cuda_early_mb": cuda_early, "cuda_late_mb": cuda_late}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quads", type=int, default=12, help="ABBA quads of bare and steady mode")
    parser.add_argument("--quad-seconds", type=float, default=0.25, help="length of each run in a quad")
    parser.add_argument("--blocks", type=int, default=60, help="bare/steady block pairs, interleaved in one session")
    parser.add_argument("--block-steps", type=int, default=10, help="steps in each of those blocks")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--memory-steps", type=int, default=10_000)
    parser.add_argument("--cpus", help="pin the process to these CPUs (e.g. 2,3): fewer migrations, less noise")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})

    logging_off = __import__("logging").getLogger("otel_flops")
    logging_off.setLevel("ERROR")
    machine = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    print(f"# otel-flops overhead benchmark: {machine}, torch {torch.__version__}, "
          f"{datetime.date.today()}, peers: {args.repeats} pairs x {args.steps} steps; steady mode: {args.quads} "
          f"ABBA quads of {args.quad_seconds} s runs; after {args.warmup} warm-up steps; CPUs "
          f"{args.cpus or 'any'}; ratios to bare are "
          "medians over pairs or quads, [quartiles]")
    results: dict = {"machine": machine, "torch": torch.__version__, "date": str(datetime.date.today()), "rows": []}
    for name in args.workloads.split(","):
        for precision in args.precisions.split(","):
            bench = Bench(name, args.device, precision == "bf16")
            row = measure(bench, args.repeats, args.quads, args.steps, args.quad_seconds, args.warmup)
            if args.blocks:
                row[INTERLEAVED] = interleaved(bench, args.blocks, args.block_steps, args.warmup)
            same, flops = counts_agree(bench, args.steps)
            hook_us = steady_hook_time(bench, row.get(STEADY, {}).get("steps", 100))
            results["rows"].append({"workload": name, "batch": BATCHES[args.device][name], "precision": precision,
                                    "variants": row, "steady_equals_full": same, "steady_flops": flops,
                                    "steady_hook_us": hook_us})
            cells = "  ".join(f"{v}={_cell(r)}" for v, r in row.items() if v != "bare")
            print(f"{name:<12} b{BATCHES[args.device][name]:<4} {precision:<5} bare {row['bare']['median_ms']:.2f} ms  "
                  f"{cells}  steady==full over {args.steps} steps: {'yes' if same else 'NO'}  "
                  f"steady hooks {hook_us:.1f} us/step ({hook_us / 1e3 / row['bare']['median_ms']:.2%} of bare)",
                  flush=True)
            del bench
            gc.collect()
    if args.memory_steps:
        bench = Bench("mlp", args.device, False)
        memory = memory_growth(bench, 100, args.memory_steps)
        results["memory"] = memory
        print(f"memory, steady mode, MLP: RSS {memory['rss_early_mb']:.1f} MB after 100 steps, "
              f"{memory['rss_late_mb']:.1f} MB after {args.memory_steps}; device "
              f"{memory['cuda_early_mb']:.1f} MB -> {memory['cuda_late_mb']:.1f} MB")
    print("\n| workload | batch | precision | bare step | " + " | ".join(
        v for v in results["rows"][0]["variants"] if v != "bare") + " | steady hooks per step | steady == full |")
    print("|---" * (5 + len(results["rows"][0]["variants"])) + "|")
    for r in results["rows"]:
        cells = " | ".join(_cell(v) for k, v in r["variants"].items() if k != "bare")
        print(f"| {r['workload']} | {r['batch']} | {r['precision']} | {r['variants']['bare']['median_ms']:.2f} ms | "
              f"{cells} | {r['steady_hook_us']:.1f} us | {'yes' if r['steady_equals_full'] else 'NO'} |")
    for r in results["rows"]:
        for k, v in r["variants"].items():
            if "failed" in v:
                print(f"{k} failed on {r['workload']} {r['precision']}: {v['failed']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
