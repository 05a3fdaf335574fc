"""GPU energy from otel-flops against an independent NVML reading, and FLOP/J, on ResNet-18 b128.

    python benchmarks/energy_gpu.py [--seconds 30] [--batch 128] [--precisions bf16 fp32] [--out FILE]

For each precision it trains ResNet-18 (CIFAR shapes, AdamW) for ``--seconds`` under
``otel_flops.track()``. The benchmark reads the training GPU's NVML energy counter itself,
found by the UUID torch reports (not through otel-flops' device mapping), just before
``track()`` and just after it exits; otel-flops' figure is the report's ``gpu`` joules for that
device. The two must agree within 5%. FLOP/J is given over GPU energy (comparable to the
1.6e11 bf16 / 1.1e11 fp32 of an independent H100 measurement) and over all the energy the report
holds (GPU plus CodeCarbon's CPU and RAM). Without a GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402
from otel_flops.analysis.workloads import WORKLOADS  # noqa: E402
from otel_flops.energy import STARTING  # noqa: E402

AGREEMENT = 0.05


def nvml_handle(device: int):
    """The NVML handle of torch's cuda:<device>, by UUID (NVML and CUDA may number GPUs differently)."""
    import pynvml

    pynvml.nvmlInit()
    uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", ""))
    if uuid:
        try:
            return pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except pynvml.NVMLError as exc:
            print(f"energy_gpu: no NVML device with torch's UUID {uuid} ({exc}); using index {device}")
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device)


def wait_for_gpu_energy(tracker, label: str, timeout: float = 30.0) -> None:
    """Training starts once otel-flops has its NVML baseline, so both readings cover the same work."""
    monitor = tracker.session.energy
    if monitor is None:
        raise SystemExit("energy_gpu: energy is off (OTEL_FLOPS_ENERGY=off)")
    deadline = time.monotonic() + timeout
    while not any(k[0] == "gpu" and k[1] == label for k in monitor.reading().joules):
        if monitor.unavailable not in (None, STARTING) or time.monotonic() > deadline:
            raise SystemExit(f"energy_gpu: otel-flops has no GPU energy for {label}: {monitor.unavailable}")
        time.sleep(0.01)


def run(precision: str, seconds: float, batch: int, device: int) -> dict:
    torch.manual_seed(0)
    workload = WORKLOADS["resnet18"]
    dev = torch.device("cuda", device)
    model = workload.build().to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = workload.make_batch(batch, dev)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = workload.loss(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(10):  # warm-up outside the measurement: cuDNN autotuning, allocator growth
        step()
    torch.cuda.synchronize(dev)
    nvml, handle = nvml_handle(device)
    label = f"cuda:{device}"
    before = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    began = time.perf_counter()
    with otel_flops.track(model, name="resnet18") as tracker:
        wait_for_gpu_energy(tracker, label)
        steps, train_began = 0, time.perf_counter()
        while time.perf_counter() - train_began < seconds:
            step()
            steps += 1
        torch.cuda.synchronize(dev)
        trained = time.perf_counter() - train_began
    after = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    window = time.perf_counter() - began
    nvml.nvmlShutdown()
    report = tracker.report()
    energy = report["energy"]
    joules = tracker.session.energy.reading().joules  # final: the monitor took its last sample at stop
    gpu_j = sum(v for (hw, dev_label, _), v in joules.items() if hw == "gpu" and dev_label == label)
    independent_j = (after - before) / 1000.0
    flops = report["totals"]["flops"]
    return {
        "precision": precision,
        "steps": steps,
        "train_s": trained,
        "window_s": window,
        "flops": flops,
        "gpu_joules_otel": gpu_j,
        "gpu_joules_nvml": independent_j,
        "difference": gpu_j / independent_j - 1.0,
        "flops_per_gpu_joule": flops / gpu_j,
        "flops_per_joule_report": report["efficiency"].get("flops_per_joule"),
        "report_joules": energy.get("joules"),
        "sources": energy.get("source", energy.get("reason")),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precisions", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"])
    parser.add_argument("--out")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("energy_gpu: needs an NVIDIA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as exc:
        print(f"energy_gpu: needs NVML for the independent reading ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    device = torch.cuda.current_device()
    results = [run(p, args.seconds, args.batch, device) for p in args.precisions]
    print(f"ResNet-18 b{args.batch}, {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    header = (f"{'prec':<6}{'steps':>7}{'window s':>10}{'GPU J otel':>12}{'GPU J NVML':>12}{'diff':>8}"
              f"{'FLOP/J GPU':>12}{'FLOP/J all':>12}  energy sources")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['precision']:<6}{r['steps']:>7}{r['window_s']:>10.1f}{r['gpu_joules_otel']:>12.1f}"
              f"{r['gpu_joules_nvml']:>12.1f}{r['difference']:>+8.2%}{r['flops_per_gpu_joule']:>12.3g}"
              f"{r['flops_per_joule_report'] or 0:>12.3g}  {r['sources']}")
    ok = all(abs(r["difference"]) <= AGREEMENT for r in results)
    print(f"otel-flops GPU joules {'agree' if ok else 'DO NOT agree'} with NVML within {AGREEMENT:.0%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"batch": args.batch, "results": results}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
