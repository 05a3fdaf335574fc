"""Zero code change: `opentelemetry-instrument` and `otel-flops run` on unmodified scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import free_port, scrape, wait_for_file

BIN = Path(sys.executable).parent

TRAIN = textwrap.dedent(
    """
    import pathlib, sys, time
    import torch
    from torch import nn
    from sklearn.linear_model import LogisticRegression

    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        x, y = torch.randn(4, 16), torch.arange(4) % 2  # both classes, always: LogisticRegression needs two
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    LogisticRegression(max_iter=20).fit(x.numpy(), y.numpy())
    pathlib.Path(sys.argv[1]).touch()
    while not pathlib.Path(sys.argv[2]).exists():
        time.sleep(0.05)
    """
)


def test_opentelemetry_instrument_exposes_flops_with_phases(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    port = free_port()
    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
           "OTEL_FLOPS_ENERGY": "off"}
    cmd = [str(BIN / "opentelemetry-instrument"), "--metrics_exporter", "prometheus", "--traces_exporter", "none",
           "--logs_exporter", "none", sys.executable, str(script), str(ready), str(go)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(ready, proc)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        go.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    flops = samples["otel_flops_flops_total"]
    phases = {labels["phase"] for labels, value in flops if labels["framework"] == "torch" and value > 0}
    assert {"forward", "backward", "loss", "optimizer"} <= phases
    # 3 forwards of 2*4*(16*8 + 8*2) FLOPs in the model's matmuls, among the rest
    assert sum(v for labels, v in flops if labels["phase"] == "forward") >= 3 * 2 * 4 * (16 * 8 + 8 * 2)


def test_instrumentor_uninstrument_restores_torch_and_optimizer_hooks():
    import torch
    import torch.nn.modules.module as module_hooks
    from torch.optim import optimizer as optimizer_hooks
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    from otel_flops.instrumentor import OtelFlopsInstrumentor

    before = torch.autograd.backward
    instrumentor = OtelFlopsInstrumentor()
    instrumentor.instrument()
    try:
        assert instrumentor.is_instrumented_by_opentelemetry
        assert _get_current_dispatch_mode() is not None  # steady mode records its first segment
        torch.nn.Linear(4, 4)(torch.randn(2, 4)).sum().backward()
    finally:
        instrumentor.uninstrument()
    assert _get_current_dispatch_mode() is None
    assert torch.autograd.backward is before
    assert not module_hooks._global_forward_pre_hooks and not module_hooks._global_forward_hooks
    assert not optimizer_hooks._global_optimizer_pre_hooks and not optimizer_hooks._global_optimizer_post_hooks


DATALOADER = textwrap.dedent(
    """
    import sys, torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    class Squares(Dataset):
        def __len__(self):
            return 16
        def __getitem__(self, i):
            x = torch.full((8,), float(i))
            return x * x, i % 2

    if __name__ == "__main__":
        model = nn.Linear(8, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        loader = DataLoader(Squares(), batch_size=4, num_workers=2, multiprocessing_context=sys.argv[1])
        for epoch in range(2):
            for x, y in loader:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
        print("done")
    """
)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_run_with_one_exporter(tmp_path, context):
    script = tmp_path / "loader.py"
    script.write_text(DATALOADER)
    report = tmp_path / "report.json"
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off"}
    result = subprocess.run(
        [sys.executable, "-m", "otel_flops", "run", "--report", str(report), "--host", "127.0.0.1",
         "--port", str(free_port()), "--", "python", str(script), context],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert result.stderr.count("serving metrics on") == 1, result.stderr
    assert "cannot serve" not in result.stderr and "Traceback" not in result.stderr
    counted = json.loads(report.read_text())
    assert counted["steps"] == 8  # 2 epochs x 4 batches, counted once, in the main process
