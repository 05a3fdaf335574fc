"""Shared helpers: seeded training steps of the reference workloads, free ports, real scrapes."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from otel_flops.analysis.workloads import WORKLOADS, train_step

# One machine-energy lock per test process (energy/node_lock.py): tests of other processes on this
# machine do not take this one's energy away; subprocesses a test starts share it, like one machine.
os.environ.setdefault("OTEL_FLOPS_LOCK_DIR", tempfile.mkdtemp(prefix="otel-flops-lock-"))

# Small batches keep the suite fast on 2 cores; the counts scale exactly with batch.
BATCH = {"mlp": 16, "resnet18": 2, "transformer": 2}


def training_step(name: str, steps: int = 1, seed: int = 0):
    """Build the workload from a fixed seed and train ``steps`` AdamW steps; returns the model."""
    torch.manual_seed(seed)
    workload = WORKLOADS[name]
    model = workload.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        x, y = workload.make_batch(BATCH[name], torch.device("cpu"))
        train_step(model, optimizer, workload, x, y)
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of a real /metrics endpoint: name -> [(labels, value)]."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


@pytest.fixture(params=sorted(WORKLOADS))
def workload_name(request) -> str:
    return request.param


def wait_for_file(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until a script under test signals readiness by creating ``path``; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the script exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("the script never became ready")
        time.sleep(0.1)
