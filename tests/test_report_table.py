"""The terminal table: capped rows, cut names, open windows, the rank in the header, unit spacing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from torch import nn

import otel_flops
from otel_flops.report import TABLE_ROWS, human


def _linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(16, 16)


def test_many_phases_show_the_top_rows_and_one_more_line():
    """25 phases, phase i a forward of batch i+1 through Linear(16, 16): addmm, 2 x (i+1) x 16 x 16 FLOPs."""
    model = _linear()
    with otel_flops.track(model, mode="full", energy=False) as t:
        for i in range(TABLE_ROWS + 5):
            with otel_flops.phase(f"p{i}"):
                model(torch.randn(i + 1, 16))
    report = t.report()
    assert {n: c["flops"] for n, c in report["phases"].items()} == {f"p{i}": 512 * (i + 1) for i in range(25)}
    lines = report.table().splitlines()
    rows = [line for line in lines[3:] if line.startswith("p")]
    assert [row.split()[0] for row in rows] == [f"p{i}" for i in range(24, 4, -1)]  # the 20 with most FLOPs
    assert rows[0].split()[1:3] == ["12.8", "k"]  # p24: 512 x 25
    assert "... 5 more phases (fewer FLOPs; all are in the JSON report)" in lines
    assert len(report["phases"]) == 25


def test_long_and_hostile_names_are_cut_and_escaped_in_the_table():
    model = _linear()
    with otel_flops.track(model, mode="full", energy=False) as t:
        for name in ("x" * 100_000, "a\nb"):
            with otel_flops.phase(name), otel_flops.window(name):
                model(torch.randn(1, 16))
    report = t.report()
    assert "x" * 100_000 in report["phases"] and "x" * 100_000 in report["windows"]  # the JSON keeps them
    lines = report.table().splitlines()
    assert max(len(line) for line in lines) < 200
    assert f"{'x' * 22}\u2026" in lines[3 + list(report["phases"]).index("x" * 100_000)]
    assert any(line.startswith(f"window {'x' * 39}\u2026: 512 FLOP, 16.4 kBOP") for line in lines)
    assert any(line.startswith("window a\\nb: 512 FLOP") for line in lines)  # one row, not two


def test_a_window_never_stopped_is_reported_open_with_its_work_so_far():
    model = _linear()
    with otel_flops.track(model, mode="full", energy=False) as t:
        with otel_flops.window("empty"):
            pass
        otel_flops.window("never").start()
        model(torch.randn(4, 16))  # addmm: 2 x 4 x 16 x 16 = 2048 FLOPs, fp32: 65,536 BOPs
    report = t.report()
    never = report["windows"]["never (open)"]
    assert (never["flops"], never["bops"], never["count"], never["open"]) == (2048, 65536, 1, True)
    assert report["windows"]["empty"]["open"] is False
    table = report.table()
    [line] = [line for line in table.splitlines() if line.startswith("window never")]
    assert line.startswith("window never (open): 2.05 kFLOP, 65.5 kBOP, energy unmeasured, ")
    assert line.endswith(" s, 1x (not stopped: its work until this report)")
    # A zero has a space before its unit like every other count.
    assert "window empty: 0 FLOP, 0 BOP, energy unmeasured, " in table and human(0, "FLOP") == "0 FLOP"


def test_otel_flops_run_puts_the_rank_in_each_tables_header(tmp_path):
    """``otel-flops run`` of a rank-1-of-2 process: its table says so (ranks' tables were identical)."""
    script = tmp_path / "train.py"
    script.write_text("import torch\nm = torch.nn.Linear(16, 16)\nm(torch.randn(4, 16)).sum().backward()\n")
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "OTEL_FLOPS_ENERGY": "off"}
    proc = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--report", str(tmp_path / "r.json"),
                           "--port", "0", "--", sys.executable, str(script)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "r.rank1.json").read_text())
    assert written["rank"] == {"rank": 1, "local_rank": 1, "world_size": 2}
    headers = [line for line in proc.stderr.splitlines() if line.startswith("otel-flops report (")]
    assert headers == ["otel-flops report (rank 1 of 2, steady mode, 0 optimizer steps)"]
