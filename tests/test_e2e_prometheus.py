"""End to end: real instrumented runs (`otel-flops run`), scraped by a real Prometheus that
evaluates the committed rules and sends to a real Alertmanager, which posts to a webhook in this
process. Five runs share one job and one machine, as in a fleet: a 20 s training run, two short
runs with budgets of their own (one over it), and a run that crosses its budget in its last
instant; each waits at exit for the final scrape (OTEL_FLOPS_LINGER).

Every panel and variable query of every committed dashboard must return non-empty, finite data
from that Prometheus. Only Grafana's own rendering is not exercised (no Grafana server here).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules/otel-flops.yml"
ALERTMANAGER = ROOT / "deploy/alertmanager/alertmanager.yml"
DASHBOARDS = sorted((ROOT / "grafana/dashboards").glob("*.json"))
SCRAPE_S = 1
TRAIN_S = 20
JOB = "otel-flops"
LINGER_S = 10

SHORT_SCRIPT = """
import time
import torch
end = time.monotonic() + 5
while time.monotonic() < end:
    torch.randn(64, 64) @ torch.randn(64, 64)
    time.sleep(0.1)
"""

# Light work for 5 s, then one large product as the last instant: it crosses the budget between scrapes.
LATE_SCRIPT = """
import time
import torch
a = torch.randn(64, 64)
end = time.monotonic() + 5
while time.monotonic() < end:
    a @ a
    time.sleep(0.1)
torch.randn(1024, 1024) @ torch.randn(1024, 1024)
"""
LATE_BUDGET = 1e9  # the light phase does about 3e7 FLOPs, the last product 2.1e9

TRAIN_SCRIPT = f"""
import time
import numpy as np
import torch
from sklearn.linear_model import LinearRegression

import otel_flops

LinearRegression().fit(np.random.rand(256, 8), np.random.rand(256))
model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
end = time.monotonic() + {TRAIN_S}
while time.monotonic() < end:
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    with otel_flops.window("train"):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    time.sleep(0.005)
"""

# run id -> (script, budget name, FLOP budget)
RUNS = {
    "main": (TRAIN_SCRIPT, "test", "1"),
    "run-a": (SHORT_SCRIPT, "llm-a", "1e15"),
    "run-b": (SHORT_SCRIPT, "llm-b", "1e3"),
    "late": (LATE_SCRIPT, "late", f"{LATE_BUDGET:g}"),
}

# Series that other parts of the product add (energy, budgets, scikit-learn counting); a panel that
# needs them may be skipped only outside CI, while those parts are still being built.
OPTIONAL = {
    "energy": ("otel_flops_energy_joules_total", "otel_flops_power_watts", "otel_flops_emissions_grams_total",
               "otel_flops_window_energy_joules_total"),
    "budget": ("otel_flops_budget_flops", "otel_flops_budget_bops", "otel_flops_budget_joules"),
    "sklearn": ('framework="sklearn"',),
}


def _needs_binaries() -> None:
    missing = [b for b in ("prometheus", "prometheus-alertmanager") if shutil.which(b) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"{', '.join(missing)} not installed (make setup installs Debian's prometheus packages)")


class _Webhook(BaseHTTPRequestHandler):
    """Collects Alertmanager's webhook posts."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _get(url: str, params: dict | None = None) -> dict:
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url} exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready after 20 s:\n{log.read_text()[-3000:]}")


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class Stack:
    """The Prometheus HTTP API over the window of the finished run."""

    def __init__(self, url: str, start: float, end: float, reports: dict[str, dict], alerts: list[dict]) -> None:
        self.url, self.start, self.end, self.reports, self.alerts = url, start, end, reports, alerts
        self.report = reports["main"]

    def instant(self, expr: str) -> list[dict]:
        body = _get(f"{self.url}/api/v1/query", {"query": expr, "time": self.end})
        assert body["status"] == "success", body
        return body["data"]["result"]

    def range(self, expr: str) -> list[dict]:
        body = _get(f"{self.url}/api/v1/query_range",
                    {"query": expr, "start": self.start, "end": self.end, "step": SCRAPE_S})
        assert body["status"] == "success", body
        return body["data"]["result"]

    def label_values(self, label: str, selector: str) -> list[str]:
        body = _get(f"{self.url}/api/v1/label/{label}/values",
                    {"match[]": selector, "start": self.start, "end": self.end})
        return body["data"]

    def present(self, needle: str) -> bool:
        """Whether any scraped series of the run matches a metric name or a label matcher."""
        selector = f"{{{needle}}}" if "=" in needle else needle
        return bool(self.range(f"count({selector})"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    """Alertmanager, Prometheus and the runs of RUNS side by side; torn down after the module."""
    _needs_binaries()
    tmp = tmp_path_factory.mktemp("stack")
    hook_server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    _Webhook.received = []
    threading.Thread(target=hook_server.serve_forever, daemon=True).start()
    ports, prom_port, am_port = {run: free_port() for run in RUNS}, free_port(), free_port()

    am_config = yaml.safe_load(ALERTMANAGER.read_text())
    am_config["route"].update(group_wait="1s", group_interval="1s")
    am_config["receivers"][0]["webhook_configs"][0]["url"] = f"http://127.0.0.1:{hook_server.server_port}/hook"
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(am_config))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(RULES)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [
            {"targets": [f"127.0.0.1:{port}" for port in ports.values()]}]}],
    }))
    procs = [
        _start(["prometheus-alertmanager", f"--config.file={tmp / 'alertmanager.yml'}",
                f"--storage.path={tmp / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address="], tmp / "alertmanager.log"),
        _start(["prometheus", f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}"], tmp / "prometheus.log"),
    ]
    try:
        _wait_ready(f"http://127.0.0.1:{am_port}/-/ready", procs[0], tmp / "alertmanager.log")
        _wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", procs[1], tmp / "prometheus.log")
        start = time.time()
        # The training run starts first: it holds the machine's energy lock, the others find it taken.
        runs = {"main": _launch(tmp, "main", ports["main"])}
        _wait_ready(f"http://127.0.0.1:{ports['main']}/metrics", runs["main"], tmp / "prometheus.log")
        runs.update((run, _launch(tmp, run, ports[run])) for run in RUNS if run != "main")
        for run, proc in runs.items():
            out, err = proc.communicate(timeout=TRAIN_S + 60)
            assert proc.returncode == 0, f"{run}: {err[-3000:]}"
        end = time.time()
        # Alertmanager posts each run's group once its group_wait has passed.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"main", "run-b", "late"} <= _notified():
            time.sleep(0.5)
        yield Stack(f"http://127.0.0.1:{prom_port}", start, end,
                    {run: json.loads((tmp / f"{run}.json").read_text()) for run in RUNS},
                    [alert for post in _Webhook.received for alert in post["alerts"]])
    finally:
        for proc in reversed(procs):
            _stop(proc)
        hook_server.shutdown()
        hook_server.server_close()


def _launch(tmp: Path, run: str, port: int) -> subprocess.Popen:
    script, budget, flops = RUNS[run]
    (tmp / f"{run}.py").write_text(script)
    env = dict(os.environ, OTEL_FLOPS_RUN_ID=run, OTEL_FLOPS_BUDGET_NAME=budget, OTEL_FLOPS_BUDGET_FLOPS=flops,
               OTEL_FLOPS_LINGER=str(LINGER_S))
    if run == "main":
        # The CPU has no peak in the table: 1 GFLOP/s stands for it, so the MFU panel has data.
        env.update(OTEL_FLOPS_BUDGET_BOPS="1", OTEL_FLOPS_BUDGET_JOULES="0.001", OTEL_FLOPS_PEAK_FLOPS="1e9")
    return subprocess.Popen(
        [sys.executable, "-m", "otel_flops", "run", "--report", str(tmp / f"{run}.json"),
         "--host", "127.0.0.1", "--port", str(port), "--", "python", str(tmp / f"{run}.py")],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _notified() -> set[str]:
    """The runs whose FLOP budget alert reached the webhook firing."""
    return {a["labels"].get("run") for post in _Webhook.received for a in post["alerts"]
            if a["labels"].get("alertname") == "ComputeBudgetExceeded" and a["status"] == "firing"}


def _dashboards() -> list[dict]:
    return [json.loads(path.read_text()) for path in DASHBOARDS]


# Variables whose "All" is a regex of its own (device: ".*", so the joules of ram count too).
ALL_VALUES = {var["name"]: var["allValue"] for board in _dashboards() for var in board["templating"]["list"]
              if var.get("allValue")}


def _variables(stack: Stack, board: dict) -> dict[str, list[str]]:
    """Each query variable's values, resolved in order like Grafana's chained variables."""
    values: dict[str, list[str]] = {}
    for var in board["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"].strip())
        assert match, f"variable {var['name']}: unsupported query {var['query']!r}"
        values[var["name"]] = stack.label_values(match.group(2), _substitute(match.group(1), values, stack))
    return values


def _substitute(expr: str, values: dict[str, list[str]], stack: Stack) -> str:
    """Grafana's interpolation with every variable at "All": its allValue, or a regex of its escaped values."""
    for name, options in values.items():
        regex = ALL_VALUES.get(name) or "(" + "|".join(re.escape(v) for v in options) + ")"
        expr = re.sub(r"\$\{?" + name + r"\}?\b", lambda _m, r=regex: r.replace("\\", "\\\\"), expr)
    span = max(int(stack.end - stack.start), 1)
    return (expr.replace("$__rate_interval", f"{4 * SCRAPE_S}s").replace("$__range", f"{span}s")
            .replace("$__interval", f"{SCRAPE_S}s"))


def _targets(board: dict):
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


def _skip_if_absent(stack: Stack, group: str) -> None:
    absent = [needle for needle in OPTIONAL[group] if not stack.present(needle)]
    if absent and not os.environ.get("CI"):
        pytest.skip(f"the run exported no {', '.join(absent)}: that part of otel-flops is still being built "
                    "(allowed outside CI only)")


def test_variable_queries_return_values(stack: Stack):
    for board in _dashboards():
        for name, options in _variables(stack, board).items():
            assert options, f"{board['title']}: variable {name} has no values"
        datasource = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
        assert [v["query"] for v in datasource] == ["prometheus"]


@pytest.mark.parametrize("group", ["work", "energy", "budget", "sklearn"])
def test_every_panel_query_returns_finite_data(stack: Stack, group: str):
    if group != "work":
        _skip_if_absent(stack, group)
    checked = 0
    for board in _dashboards():
        values = _variables(stack, board)
        for panel, target in _targets(board):
            groups = {g for g, needles in OPTIONAL.items() if any(n in target["expr"] for n in needles)} or {"work"}
            if group not in groups:
                continue
            for other in groups - {group, "work"}:
                _skip_if_absent(stack, other)
            expr = _substitute(target["expr"], values, stack)
            result = stack.instant(expr) if target.get("instant") else stack.range(expr)
            where = f"{board['title']} / {panel['title']} / {target['refId']}: {expr}"
            assert result, f"no data: {where}"
            points = [float(v) for series in result
                      for _, v in (series["values"] if "values" in series else [series["value"]])]
            assert points and all(math.isfinite(p) for p in points), f"non-finite data: {where}"
            checked += 1
    assert checked


def test_flop_total_panel_matches_report(stack: Stack):
    """The stat is an increase over the range: reset-safe, and within the half scrape interval that
    increase() extrapolates at each end of a 20 s run's series."""
    board = next(b for b in _dashboards() if b["uid"] == "otel-flops-compute-efficiency")
    panel = next(p for p in board["panels"] if p["title"] == "Total FLOPs")
    values = dict(_variables(stack, board), run=["main"])
    shown = float(stack.instant(_substitute(panel["targets"][0]["expr"], values, stack))[0]["value"][1])
    reported = stack.report["totals"]["flops"]
    assert abs(shown - reported) <= 0.1 * reported, (reported, shown)


def _final(stack: Stack, metric: str, run: str) -> float:
    """The run's last scraped total (summed over its series)."""
    result = stack.instant(f'sum(last_over_time({metric}{{run="{run}"}}[5m]))')
    return float(result[0]["value"][1])


def test_short_run_totals_at_prometheus_equal_its_report(stack: Stack):
    totals = stack.reports["run-a"]["totals"]
    assert totals["flops"] > 0
    assert _final(stack, "otel_flops_flops_total", "run-a") == totals["flops"]
    assert _final(stack, "otel_flops_bops_total", "run-a") == totals["bops"]


def test_every_run_finishes_normally_in_its_final_scrape(stack: Stack):
    finished = {s["metric"]["run"] for s in stack.instant("last_over_time(otel_flops_run_finished[5m])")}
    assert finished == set(RUNS)


def test_only_the_run_over_its_own_budget_notifies(stack: Stack):
    notified = _notified()
    assert "run-b" in notified and "run-a" not in notified, stack.alerts
    alert = next(a for a in stack.alerts if a["labels"].get("run") == "run-b")
    assert alert["labels"]["budget"] == "llm-b" and alert["labels"]["scope"] == "run"


def test_overrun_in_the_last_instant_notifies(stack: Stack):
    values = [float(v) for _, v in stack.range('sum(otel_flops_flops_total{run="late"})')[0]["values"]]
    final = stack.reports["late"]["totals"]["flops"]
    assert values[0] < LATE_BUDGET < final
    assert {v for v in values if v > LATE_BUDGET} == {final}, "the budget was crossed in one step, at the end"
    assert "late" in _notified(), stack.alerts


def test_machine_energy_is_published_once(stack: Stack):
    """Runs overlap on this machine, yet at every instant one process publishes its power."""
    _skip_if_absent(stack, "energy")
    overlap = stack.range("count(count by (run) (otel_flops_run_started))")[0]["values"]
    assert max(float(v) for _, v in overlap) >= 3
    publishers = stack.range('count by (node) (otel_flops_power_watts{hw_type="ram"})')
    assert max(float(v) for series in publishers for _, v in series["values"]) == 1
    assert stack.reports["main"]["energy"]["available"]
    skipped = [r["energy"] for r in stack.reports.values() if not r["energy"]["available"]]
    assert skipped and all("another otel-flops process" in e["reason"] for e in skipped), skipped
    assert stack.range("otel_flops_power_watts")[0]["metric"]["scope"] == "node"
