"""The `otel-flops` command on real subprocesses: run an unmodified script, scrape it, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import free_port, scrape, wait_for_file

CLI = [sys.executable, "-m", "otel_flops"]

SCRIPT = textwrap.dedent(
    """
    import pathlib, sys, time
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        x, y = torch.randn(8, 32), torch.randint(0, 4, (8,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    if len(sys.argv) > 2:
        pathlib.Path(sys.argv[1]).touch()
        while not pathlib.Path(sys.argv[2]).exists():
            time.sleep(0.05)
    print("script done")
    """
)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def test_run_counts_an_unmodified_script_and_metrics_equal_report(tmp_path, script):
    port, report_path = free_port(), tmp_path / "report.json"
    ready, go = tmp_path / "ready", tmp_path / "go"
    cmd = [*CLI, "run", "--report", str(report_path), "--port", str(port), "--host", "127.0.0.1", "--",
           "python", str(script), str(ready), str(go)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_file(ready, proc)
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    go.touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "script done" in out
    report = json.loads(report_path.read_text())
    assert report["schema"] == "otel-flops/report/v1" and report["steps"] == 3
    assert sum(v for _, v in samples["otel_flops_flops_total"]) == report["totals"]["flops"]
    assert sum(v for _, v in samples["otel_flops_bops_total"]) == report["totals"]["bops"]
    # 3 steps of forward matmuls: 2*8*(32*16 + 16*4) each
    forward = report["by_op"]["aten.addmm"]["flops"]
    assert forward == 3 * 2 * 8 * (32 * 16 + 16 * 4)
    assert "otel-flops report" in err and report["environment"]["python"]


def test_run_exit_code_and_busy_port(tmp_path, script):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        report_path = tmp_path / "r.json"
        result = subprocess.run(
            [*CLI, "run", "--report", str(report_path), "--host", "127.0.0.1", "--port", str(port), "--",
             "python", str(script)], capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if f":{port}" in line]
    assert len(lines) == 1 and "OTEL_EXPORTER_PROMETHEUS_PORT" in lines[0]
    assert json.loads(report_path.read_text())["totals"]["flops"] > 0


def test_run_propagates_the_scripts_exit_code(tmp_path):
    failing = tmp_path / "fail.py"
    failing.write_text("import sys, torch\ntorch.ones(2) + 1\nsys.exit(3)\n")
    result = subprocess.run([*CLI, "run", "--port", "0", "--", "python", str(failing)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3


@pytest.mark.parametrize(
    "args",
    [["demo", "--steps", "many"], ["demo", "--port", "70000"], ["bogus"], ["run"], ["demo", "--linger", "-1"]],
)
def test_bad_arguments_give_usage_errors_not_tracebacks(args):
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "Traceback" not in result.stderr


def test_bad_mode_flag_fails_at_start_with_one_line(tmp_path, script):
    """A bad flag is a usage error (exit 2); a bad variable is one line and the script runs uncounted
    (test_otel_conventions)."""
    result = subprocess.run([*CLI, "run", "--mode", "bogus", "--", "python", str(script)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "--mode='bogus'" in result.stderr and "full" in result.stderr


def test_demo_serves_metrics_and_prints_the_table(tmp_path):
    report_path = tmp_path / "demo.json"
    result = subprocess.run([*CLI, "demo", "--steps", "1", "--port", str(free_port()), "--report", str(report_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "metrics at http://" in result.stdout and "backward" in result.stdout
    report = json.loads(report_path.read_text())
    assert set(report["by_model"]) >= {"MLP", "ResNet18", "TransformerLM"}
    assert report["steps"] == 3


def test_a_script_killed_by_a_signal_ends_otel_flops_by_the_same_signal(tmp_path):
    script, report = tmp_path / "term.py", tmp_path / "r.json"
    script.write_text("import os, signal, torch\ntorch.ones(2) + 1\nos.kill(os.getpid(), signal.SIGTERM)\n")
    result = subprocess.run([*CLI, "run", "--report", str(report), "--port", "0", "--", "python", str(script)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "OTEL_FLOPS_ENERGY": "off"})
    assert result.returncode == -signal.SIGTERM  # a shell shows 143
    assert json.loads(report.read_text())["totals"]["flops"] == 2
    assert "otel-flops report" in result.stderr and "Traceback" not in result.stderr


def test_a_command_that_is_not_found_is_one_line(tmp_path):
    result = subprocess.run([*CLI, "run", "--port", "0", "--", "no-such-command-xyz"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 127
    assert result.stderr.strip() == "otel-flops: cannot run no-such-command-xyz: No such file or directory"
