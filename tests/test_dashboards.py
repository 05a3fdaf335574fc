"""The committed dashboards are the generated ones, and pass a lint modelled on Grafana's
dashboard-linter (github.com/grafana/dashboard-linter): uids, inputs, variables, rate intervals,
layout, units, datasource and job/instance filters."""

from __future__ import annotations

import copy
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_server import Prometheus  # noqa: E402

from grafana import generate  # noqa: E402

DASHBOARDS = {path.name: json.loads(path.read_text()) for path in sorted((ROOT / "grafana/dashboards").glob("*.json"))}
GLOBALS = {"__rate_interval", "__range", "__interval", "__interval_ms", "__range_s", "__from", "__to", "__dashboard"}
# Grafana's unit ids that fit this product (packages/grafana-data/src/valueFormats/categories.ts).
# Only Grafana's own units: a custom one ("si:FLOP/J") renders as text no other panel or alert shares.
UNITS = {"short", "sishort", "none", "percent", "percentunit", "flops", "mflops", "gflops", "tflops", "pflops",
         "eflops", "joule", "kwatth", "watth", "watt", "kwatt", "massg", "masskg", "s", "ms", "bytes", "decbytes"}
# A counter read other than through increase() or rate() (max_over_time, a bare series) loses the
# work done before a restart: the counter starts again from 0.
COUNTER = re.compile(r"(\w+\()?\s*otel_flops_\w+_total\b")
VAR_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _panels(board: dict) -> list[dict]:
    return [p for top in board["panels"] for p in [top, *top.get("panels", [])]]


def _exprs(board: dict) -> list[str]:
    return [t["expr"] for p in _panels(board) for t in p.get("targets", [])]


def test_committed_json_equals_generated():
    generated = {path.name: text for path, text in generate.outputs().items() if path.suffix == ".json"}
    assert set(generated) == set(DASHBOARDS)
    for name, text in generated.items():
        assert (ROOT / "grafana/dashboards" / name).read_text() == text, f"run python -m grafana.generate ({name})"


def lint(board: dict) -> list[str]:
    """Problems in one dashboard, one line each (empty when clean)."""
    problems = []
    if "__inputs" in board:
        problems.append("has __inputs (an export for sharing, not for provisioning)")
    if board.get("editable") is not False:
        problems.append("editable (a provisioned dashboard is changed in code, not in Grafana)")
    panels = _panels(board)
    ids = [p.get("id") for p in panels]
    if None in ids or len(set(ids)) != len(ids):
        problems.append("panel ids missing or not unique")
    defined = {v["name"] for v in board["templating"]["list"]} | GLOBALS
    used = {next(g for g in m.groups() if g)
            for s in _strings([board["panels"], board["templating"]]) for m in VAR_REF.finditer(s)}
    problems += [f"${name} is not defined" for name in sorted(used - defined)]
    for expr in _exprs(board):
        for match in COUNTER.finditer(expr):
            if match.group(1) not in ("increase(", "rate("):
                problems.append(f"a counter not read through increase() or rate(): {expr}")
        for window in re.findall(r"\b(?:rate|irate)\([^\[]*\[([^\]]+)\]", expr):
            if window != "$__rate_interval":
                problems.append(f"rate window {window} is not $__rate_interval: {expr}")
        for window in re.findall(r"\b(?:increase|max_over_time)\([^\[]*\[([^\]]+)\]", expr):
            if window not in ("$__rate_interval", "$__range"):
                problems.append(f"window {window} is neither $__rate_interval nor $__range: {expr}")
    boxes = [(p["title"], p["gridPos"]) for p in panels]
    for i, (title, a) in enumerate(boxes):
        if a["x"] + a["w"] > 24:
            problems.append(f"{title} is wider than the grid")
        for other, b in boxes[i + 1:]:
            if not (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                    or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]):
                problems.append(f"{title} overlaps {other}")
    for panel in panels:
        if panel["type"] == "row":
            continue
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if unit not in UNITS:
            problems.append(f"{panel['title']}: unit {unit!r} is not a Grafana unit")
        if "FLOP/s" in panel["title"] and unit != "flops":
            problems.append(f"{panel['title']}: FLOP/s takes unit flops, not {unit!r}")
        for target in panel.get("targets", []):
            if not panel["datasource"]["uid"] == target["datasource"]["uid"] == "${datasource}":
                problems.append(f"{panel['title']}: not on the $datasource variable")
            selectors = re.findall(r"otel_flops_\w+\{([^}]*)\}", target["expr"])
            bare = re.search(r"otel_flops_\w+(?![\w{])", target["expr"])
            if bare or not all('job=~"$job"' in s and 'instance=~"$instance"' in s for s in selectors):
                problems.append(f"{panel['title']}: a metric without job and instance filters")
    return problems


def test_committed_dashboards_pass_the_lint():
    uids = [board["uid"] for board in DASHBOARDS.values()]
    assert all(uids) and len(set(uids)) == len(uids), "dashboard uids must be unique"
    for name, board in DASHBOARDS.items():
        assert lint(board) == [], name
        defined = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "job", "instance", "model", "phase", "device", "dtype"} <= defined


def test_lint_catches_each_kind_of_problem():
    board = copy.deepcopy(DASHBOARDS["compute-efficiency.json"])
    board["__inputs"] = []
    board["editable"] = True
    stats = [p for p in board["panels"] if p["type"] == "stat"]
    series = [p for p in board["panels"] if p["type"] == "timeseries"]
    stats[0]["gridPos"] = dict(stats[1]["gridPos"])
    stats[2]["fieldConfig"]["defaults"]["unit"] = "flop/J"
    series[0]["targets"][0]["expr"] = "sum(rate(otel_flops_flops_total{job=~\"$job\", instance=~\"$cluster\"}[5m]))"
    series[1]["targets"][0]["expr"] = "sum(rate(otel_flops_bops_total[$__rate_interval]))"
    series[2]["targets"][0]["expr"] = ('max(max_over_time(otel_flops_flops_total{job=~"$job", instance=~"$instance"}'
                                       "[$__range]))")
    series[2]["fieldConfig"]["defaults"]["unit"] = "si:FLOP"
    series[3]["title"] = "FLOP/s, wrong unit"
    series[4]["datasource"] = {"type": "prometheus", "uid": "some-uid"}
    problems = "\n".join(lint(board))
    for expected in ("__inputs", "editable", "counter not read through increase() or rate()", "unit 'si:FLOP'",
                     "overlaps", "unit 'flop/J'", "$cluster is not defined", "rate window 5m",
                     "a metric without job and instance filters", "FLOP/s, wrong unit: FLOP/s takes unit flops",
                     "not on the $datasource variable"):
        assert expected in problems, (expected, problems)


def test_compute_efficiency_has_the_panels_people_look_for():
    board = DASHBOARDS["compute-efficiency.json"]
    assert board["title"] == "Compute efficiency"
    titles = {p["title"] for p in _panels(board)}
    assert {"Total FLOPs", "Total BOPs", "Energy", "FLOP/J", "BOP/J", "Budget used", "FLOP/s by phase",
            "BOP/s by dtype", "Power by hardware", "FLOPs against budget", "Emissions",
            "scikit-learn FLOP/s by method", "FLOP/s by rank", "MFU", "FLOPs by window", "Window FLOP/s",
            "Window energy", "Window time"} <= titles
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _panels(board) if p["type"] != "row"}
    assert units["FLOP/J"] == units["Total FLOPs"] == "sishort" and units["Energy"] == "joule"
    assert units["MFU"] == "percentunit" and units["Window FLOP/s"] == "flops"
    assert board["editable"] is False
    assert units["Power by hardware"] == "watt" and units["Emissions"] == "massg"


# A process that restarts between scrapes 3 and 4: its counters start again from 0, same labels.
# Each scrape serves the next state (the last one from then on): (FLOPs, BOPs, joules).
RESTARTS = [(0, 0, 0), (100, 1_600, 5), (250, 4_000, 12), (30, 480, 2), (80, 1_280, 4)]
TRUE_TOTALS = {"Total FLOPs": 250 + 80, "Total BOPs": 4_000 + 1_280, "Energy": 12 + 4, "FLOPs by window": 250 + 80}
LABELS = 'run="r1",node="n1"'


def _exposition(flops: int, bops: int, joules: int) -> str:
    work = f'framework="torch",phase="forward",dtype="float32",bits="16",device="cpu",model="M",{LABELS}'
    return "".join(f"# TYPE {name} counter\n{name}{{{labels}}} {value}\n" for name, labels, value in (
        ("otel_flops_flops_total", work, flops),
        ("otel_flops_bops_total", work, bops),
        ("otel_flops_energy_joules_total", f'hw_type="cpu",device="cpu",source="codecarbon",scope="node",{LABELS}',
         joules),
        ("otel_flops_window_flops_total", f'window="eval",{LABELS}', flops),
    ))


class _Restarting(BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = RESTARTS[min(type(self).scrapes, len(RESTARTS) - 1)]
        type(self).scrapes += 1
        body = _exposition(*state).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _interpolated(expr: str, board: dict) -> str:
    """Grafana's interpolation with every variable at "All" (.*) and a range far wider than the data."""
    names = sorted((v["name"] for v in board["templating"]["list"]), key=len, reverse=True)
    expr = expr.replace("$__range", "1h")
    for name in names:
        expr = re.sub(r"\$\{?" + name + r"\b\}?", ".*", expr)
    return expr


def test_dashboard_totals_survive_a_counter_reset(tmp_path):
    """The stat panels' own expressions, from the committed JSON, against a real Prometheus that
    scrapes a process which restarts: each total is the work of both lives. The samples start at
    0 and the query is at the last sample, so increase() has nothing to extrapolate: the totals
    are exact. The max_over_time of the counter (what a naive dashboard shows) misses the first life."""
    _Restarting.scrapes = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Restarting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [
        {"job_name": "otel-flops", "static_configs": [{"targets": [f"127.0.0.1:{server.server_port}"]}]}]}
    prometheus = Prometheus(yaml.safe_dump(config), tmp_path)
    board = DASHBOARDS["compute-efficiency.json"]
    exprs = {p["title"]: p["targets"][0]["expr"] for p in _panels(board) if p["title"] in TRUE_TOTALS}
    try:
        prometheus.wait(lambda: _Restarting.scrapes > len(RESTARTS), "the restarting exporter's scrapes")
        (last,) = prometheus.query("timestamp(otel_flops_flops_total)")
        at = float(last["value"][1])
        totals = {title: [float(r["value"][1]) for r in prometheus.query_at(_interpolated(expr, board), at)]
                  for title, expr in exprs.items()}
        naive = prometheus.query_at("max(max_over_time(otel_flops_flops_total[1h]))", at)
    finally:
        prometheus.stop()
        server.shutdown()
        server.server_close()
    assert set(exprs) == set(TRUE_TOTALS)
    assert totals == {title: [pytest.approx(total, rel=1e-9)] for title, total in TRUE_TOTALS.items()}
    assert float(naive[0]["value"][1]) == 250
