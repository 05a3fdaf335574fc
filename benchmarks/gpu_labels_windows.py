"""On a GPU: the GPU UUID label and a window's NVML joules (checks the CPU suite cannot make).

    python benchmarks/gpu_labels_windows.py

1. FLOP series of CUDA work carry ``hw_id``, the UUID nvidia-smi and DCGM print for that GPU;
   CPU series carry none.
2. ``otel_flops.window`` on GPU work: its FLOPs are the matmuls' exactly and its GPU joules are
   NVML's cumulative energy counter between the window's edges (within our own reads around it).
Prints one line per check and exits 1 if any fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import torch
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import otel_flops  # noqa: E402


def flop_series(url: str) -> list[tuple[dict[str, str], float]]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "otel_flops_flops_total"]


def gpu_uuid_label() -> tuple[bool, str]:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    uuids = dict(line.split(", ") for line in smi.strip().splitlines())
    a = torch.randn(64, 32, device="cuda")
    with otel_flops.track(serve=True, port=0, host="127.0.0.1", energy=False, mode="full") as tracker:
        a @ a.T
        torch.cuda.synchronize()
        torch.ones(2) + 1
        series = flop_series(tracker.endpoint.url)
    cuda = [(labels, v) for labels, v in series if labels["device"] == "cuda:0"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    labels = {labels.get("hw_id") for labels, _ in cuda}
    ok = (sum(v for _, v in cuda) == 2 * 64 * 32 * 64 and labels == {uuids.get(visible, visible)}
          and all("hw_id" not in lab for lab, _ in series if lab["device"] == "cpu"))
    return ok, f"hw_id {labels}, nvidia-smi {uuids}"


def window_joules() -> tuple[bool, str]:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    a = torch.randn(4096, 4096, device="cuda")
    with otel_flops.track(mode="full", sklearn=False) as tracker:
        before = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        with otel_flops.window("gpu"):
            for _ in range(200):
                a @ a
            torch.cuda.synchronize()
        after = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        window = tracker.report()["windows"]["gpu"]
    gpu = window["joules_by_component"].get("gpu", 0.0)
    ok = window["flops"] == 200 * 2 * 4096**3 and 0 < gpu <= (after - before) / 1000.0
    return ok, f"window {gpu:.3f} J of GPU, NVML around it {(after - before) / 1000.0:.3f} J"


def main() -> int:
    if not torch.cuda.is_available():
        print("needs a CUDA device")
        return 1
    failed = 0
    for name, check in (("GPU UUID label", gpu_uuid_label), ("window NVML joules", window_joules)):
        ok, detail = check()
        failed += not ok
        print(f"{'ok ' if ok else 'BAD'} {name}: {detail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
