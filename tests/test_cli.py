"""The `otel-flops` command on real subprocesses: run an unmodified script, scrape it, bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import torch
from conftest import free_port, scrape, wait_for_file
from prometheus_server import require

import otel_flops

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


@pytest.mark.parametrize("command", ["demo", "calibrate", "stack", "run", "compare"])
def test_a_bad_flag_shows_the_commands_own_usage(command):
    result = subprocess.run([*CLI, command, "--bogus", "--", "python", "x.py"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"usage: otel-flops {command} ")
    assert f"otel-flops {command}: error: unrecognized arguments: --bogus" in result.stderr


def test_run_usage_names_every_flag():
    result = subprocess.run([*CLI, "run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    usage = result.stderr.splitlines()[0]
    assert all(flag in usage for flag in ("--report", "--port", "--host", "--mode")), usage


@pytest.mark.parametrize("target", ["notahostport", "localhost:0", "localhost:70000", ":9090", "a b:9090"])
def test_stack_refuses_a_target_that_is_not_host_port(target):
    result = subprocess.run([*CLI, "stack", "--targets", target], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"argument --targets: {target!r} is not HOST:PORT" in result.stderr


def test_stack_removes_its_data_folder_when_it_stops(tmp_path):
    """Started as test_stack starts it, with TMPDIR pointed at an empty folder: nothing is left there."""
    require("prometheus")
    prom, am = free_port(), free_port()
    proc = subprocess.Popen([*CLI, "stack", "--prometheus-port", str(prom), "--alertmanager-port", str(am),
                             "--targets", "127.0.0.1:1", "[::1]:9464"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not scrape_ok(f"http://127.0.0.1:{prom}/-/ready"):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
        assert [p.name for p in tmp_path.iterdir()][0].startswith("otel-flops-stack-")  # it was there
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert list(tmp_path.iterdir()) == []


def scrape_ok(url: str) -> bool:
    """Whether ``url`` answers 200."""
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


@pytest.mark.parametrize(("host", "cause"), [("999.1.1.1", "Name or service not known"),
                                             ("192.0.2.1", "Cannot assign requested address")])
def test_a_host_that_cannot_be_bound_names_the_host_fix_not_the_port(monkeypatch, caplog, host, cause):
    """An unresolvable or foreign bind address is the host's fault: the line says so, and counting goes on."""
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    with otel_flops.track(serve=True, host=host, port=0) as tracker:
        torch.ones(2) + 1
    assert tracker.endpoint is None and tracker.report()["totals"]["flops"] == 2
    [line] = [r.getMessage() for r in caplog.records if "cannot serve /metrics" in r.getMessage()]
    assert line.startswith(f"otel-flops: cannot serve /metrics on {host}:0 ({cause}); set "
                           "OTEL_EXPORTER_PROMETHEUS_HOST or --host to ")
    assert "PROMETHEUS_PORT" not in line and "--port" not in line
