"""The committed dashboards are the generated ones, and pass a lint modelled on Grafana's
dashboard-linter (github.com/grafana/dashboard-linter): uids, inputs, variables, rate intervals,
layout, units, datasource and job/instance filters."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grafana import generate  # noqa: E402

DASHBOARDS = {path.name: json.loads(path.read_text()) for path in sorted((ROOT / "grafana/dashboards").glob("*.json"))}
GLOBALS = {"__rate_interval", "__range", "__interval", "__interval_ms", "__range_s", "__from", "__to", "__dashboard"}
# Grafana's unit ids that fit this product (packages/grafana-data/src/valueFormats/categories.ts).
UNITS = {"short", "none", "percent", "percentunit", "flops", "mflops", "gflops", "tflops", "pflops", "eflops",
         "joule", "kwatth", "watth", "watt", "kwatt", "massg", "masskg", "s", "ms", "bytes", "decbytes"}
CUSTOM_UNIT = re.compile(r"^(si|suffix|prefix|count):\S+$")
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
    panels = _panels(board)
    ids = [p.get("id") for p in panels]
    if None in ids or len(set(ids)) != len(ids):
        problems.append("panel ids missing or not unique")
    defined = {v["name"] for v in board["templating"]["list"]} | GLOBALS
    used = {next(g for g in m.groups() if g)
            for s in _strings([board["panels"], board["templating"]]) for m in VAR_REF.finditer(s)}
    problems += [f"${name} is not defined" for name in sorted(used - defined)]
    for expr in _exprs(board):
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
        if not (unit in UNITS or CUSTOM_UNIT.match(unit or "")):
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
    stats = [p for p in board["panels"] if p["type"] == "stat"]
    series = [p for p in board["panels"] if p["type"] == "timeseries"]
    stats[0]["gridPos"] = dict(stats[1]["gridPos"])
    stats[2]["fieldConfig"]["defaults"]["unit"] = "flop/J"
    series[0]["targets"][0]["expr"] = "sum(rate(otel_flops_flops_total{job=~\"$job\", instance=~\"$cluster\"}[5m]))"
    series[1]["targets"][0]["expr"] = "sum(rate(otel_flops_bops_total[$__rate_interval]))"
    series[3]["title"] = "FLOP/s, wrong unit"
    series[4]["datasource"] = {"type": "prometheus", "uid": "some-uid"}
    problems = "\n".join(lint(board))
    for expected in ("__inputs", "overlaps", "unit 'flop/J'", "$cluster is not defined", "rate window 5m",
                     "a metric without job and instance filters", "FLOP/s, wrong unit: FLOP/s takes unit flops",
                     "not on the $datasource variable"):
        assert expected in problems, (expected, problems)


def test_compute_efficiency_has_the_panels_people_look_for():
    board = DASHBOARDS["compute-efficiency.json"]
    assert board["title"] == "Compute efficiency"
    titles = {p["title"] for p in _panels(board)}
    assert {"Total FLOPs", "Total BOPs", "Energy", "FLOP/J", "BOP/J", "Budget used", "FLOP/s by phase",
            "BOP/s by dtype", "Power by hardware", "FLOPs against budget", "Emissions",
            "scikit-learn FLOP/s by method", "FLOP/s by rank"} <= titles
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in _panels(board) if p["type"] != "row"}
    assert units["FLOP/J"] == "si:FLOP/J" and units["Energy"] == "joule"
    assert units["Power by hardware"] == "watt" and units["Emissions"] == "massg"
