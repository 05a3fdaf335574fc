"""Model FLOP utilisation of a real training step, from otel-flops' own counts.

    python benchmarks/mfu.py [--workload resnet18] [--batch 128] [--precision bf16] [--seconds 20]

Trains the workload for the given time under otel_flops.track() (steady mode) and prints the
report's achieved FLOP/s and MFU against the GPU's dense peak (otel_flops/analysis/peaks.py), with an
alpha-FLOPs profile's predicted step time beside the measured one when OTEL_FLOPS_ALPHA_PROFILE
names one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402
from otel_flops.analysis.workloads import WORKLOADS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="resnet18", choices=sorted(WORKLOADS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    workload = WORKLOADS[args.workload]
    model = workload.build().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = workload.make_batch(args.batch, torch.device(device))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = workload.loss(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(10):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    with otel_flops.track(energy=False) as tracker:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    report = tracker.report()
    mfu = report["mfu"]
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}: {args.workload} b{args.batch} {args.precision}, {report['steps']} steps")
    if mfu["available"]:
        print(f"  achieved {mfu['achieved_flops_per_s'] / 1e12:.1f} TFLOP/s, MFU {mfu['mfu']:.1%} of the dense peak")
    else:
        print(f"  MFU unavailable: {mfu['reason']}")
    if "alpha" in report:
        a = report["alpha"]
        print(f"  alpha-FLOPs predicted step {a['predicted_step_seconds'] * 1e3:.2f} ms (convolutions and dense "
              f"products) against measured {a['measured_step_seconds'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
