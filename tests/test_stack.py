"""`otel-flops stack`: Prometheus and Alertmanager from the shipped configs, on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import free_port
from prometheus_server import require

CLI = [sys.executable, "-m", "otel_flops", "stack"]


def _get(url: str) -> dict | None:
    try:
        return json.loads(urllib.request.urlopen(url, timeout=2).read())
    except OSError:
        return None


def test_stack_loads_the_shipped_rules_and_alertmanager_then_stops_on_sigint():
    require("prometheus")
    prom, am, target = free_port(), free_port(), free_port()
    proc = subprocess.Popen([*CLI, "--prometheus-port", str(prom), "--alertmanager-port", str(am),
                             "--targets", f"127.0.0.1:{target}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        rules = targets = status = None
        while time.monotonic() < deadline and not (rules and targets and status):
            assert proc.poll() is None, proc.communicate()
            rules = _get(f"http://127.0.0.1:{prom}/api/v1/rules")
            found = _get(f"http://127.0.0.1:{prom}/api/v1/targets")
            targets = found["data"]["activeTargets"] if found else None
            status = _get(f"http://127.0.0.1:{am}/api/v2/status")
            time.sleep(0.5)
        assert rules and targets and status, "Prometheus or Alertmanager never answered"
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert "ComputeBudgetExceeded" in names
        assert f"127.0.0.1:{target}" in {t["labels"]["instance"] for t in targets}
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{prom}" in out


def test_missing_binaries_say_how_to_install_them(tmp_path):
    result = subprocess.run(CLI, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "apt-get install prometheus prometheus-alertmanager" in result.stderr
