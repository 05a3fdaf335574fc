"""Per-phase and per-op counts of one training step of each workload, on CPU and on CUDA.

    python benchmarks/cpu_vs_gpu.py [--out FILE]

Same seed, same batch, fp32, AdamW with its default implementation on each device (for-loop
on CPU, foreach on CUDA). Prints the phase table and every op whose count differs.
"""

from __future__ import annotations

import argparse
import json

import torch

import otel_flops
from otel_flops.analysis.workloads import WORKLOADS, train_step

BATCH = {"mlp": 256, "resnet18": 32, "transformer": 32}


def counts(name: str, device: str) -> dict:
    torch.manual_seed(0)
    workload = WORKLOADS[name]
    model = workload.build().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = workload.make_batch(BATCH[name], torch.device(device))
    train_step(model, optimizer, workload, x, y)  # optimizer state exists from here on
    with otel_flops.track() as tracker:
        train_step(model, optimizer, workload, x, y)
    report = tracker.report()
    by_phase_op: dict[str, dict[str, int]] = {}
    for key, totals in tracker.session.ledger.items():
        ops = by_phase_op.setdefault(key.phase, {})
        ops[key.op] = ops.get(key.op, 0) + totals.flops
    return {"phases": report["phases"], "by_phase_op": by_phase_op, "uncounted": report["uncounted_ops"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    results = {name: {dev: counts(name, dev) for dev in ("cpu", "cuda")} for name in WORKLOADS}
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(f"{'workload':<12}{'phase':<10}{'CPU FLOPs':>18}{'GPU FLOPs':>18}  equal")
    for name, r in results.items():
        phases = sorted(set(r["cpu"]["phases"]) | set(r["cuda"]["phases"]))
        for phase in phases:
            c = r["cpu"]["phases"].get(phase, {}).get("flops", 0)
            g = r["cuda"]["phases"].get(phase, {}).get("flops", 0)
            print(f"{name:<12}{phase:<10}{c:>18,}{g:>18,}  {'yes' if c == g else 'NO'}")
    print("\nops that differ (phase, op: CPU -> GPU):")
    for name, r in results.items():
        for phase in sorted(set(r["cpu"]["by_phase_op"]) | set(r["cuda"]["by_phase_op"])):
            c_ops, g_ops = r["cpu"]["by_phase_op"].get(phase, {}), r["cuda"]["by_phase_op"].get(phase, {})
            for op in sorted(set(c_ops) | set(g_ops)):
                if c_ops.get(op, 0) != g_ops.get(op, 0):
                    print(f"  {name} {phase} {op}: {c_ops.get(op, 0):,} -> {g_ops.get(op, 0):,}")
        for dev in ("cpu", "cuda"):
            if r[dev]["uncounted"]:
                print(f"  {name} uncounted on {dev}: {r[dev]['uncounted']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
