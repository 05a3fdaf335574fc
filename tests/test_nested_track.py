"""A track() inside an active session (an outer track(), ``otel-flops run``) reports its block's own work.

Counts are exact: Linear forwards only (addmm / mm, nothing else that counts FLOPs), checked against
torch's FlopCounterMode over the same calls and against 2*m*n*k by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import otel_flops

SMALL = 2 * 2 * 8 * 8  # Linear(8, 8) on a (2, 8) batch: one addmm, 2*m*n*k


def flop_counter(fn) -> int:
    """FlopCounterMode's total over ``fn()``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def nonzero_models(report: dict) -> dict[str, int]:
    return {model: c["flops"] for model, c in report["by_model"].items() if c["flops"]}


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_nested_tracks_report_their_blocks_at_any_depth(mode):
    torch.manual_seed(0)
    big, small, tiny = torch.nn.Linear(64, 64), torch.nn.Linear(8, 8), torch.nn.Linear(4, 2)
    x64, x8, x4 = torch.randn(32, 64), torch.randn(2, 8), torch.randn(3, 4)
    with otel_flops.track(big, name="big", mode=mode, energy=False, sklearn=False) as outer:
        for _ in range(5):
            big(x64)  # work before: not the inner blocks'
        with otel_flops.track(small, name="small") as inner:
            for _ in range(3):
                small(x8)
            with otel_flops.track(tiny, name="tiny") as innermost:
                tiny(x4)
            small(x8)
        big(x64)  # work after: not the inner blocks' either
    big_flops = 2 * 32 * 64 * 64
    assert innermost.report()["totals"]["flops"] == 2 * 3 * 4 * 2 == flop_counter(lambda: tiny(x4))
    assert nonzero_models(innermost.report()) == {"tiny": 2 * 3 * 4 * 2}
    assert inner.report()["totals"]["flops"] == 4 * SMALL + 2 * 3 * 4 * 2
    assert nonzero_models(inner.report()) == {"small": 4 * SMALL, "tiny": 2 * 3 * 4 * 2}
    assert nonzero_models(outer.report()) == {"big": 6 * big_flops, "small": 4 * SMALL, "tiny": 2 * 3 * 4 * 2}
    assert outer.report()["totals"]["flops"] == flop_counter(lambda: [big(x64) for _ in range(6)]
                                                                    + [small(x8) for _ in range(4)] + [tiny(x4)])


@pytest.mark.parametrize("mode", ["full", "steady"])
def test_a_name_given_in_a_session_labels_a_model_already_counted(mode):
    """A model counted (and, in steady mode, recorded and replayed) before the nested track() names it:
    its work in the block carries the new name, its work before keeps the old."""
    small, x8 = torch.nn.Linear(8, 8), torch.randn(2, 8)
    with otel_flops.track(mode=mode, energy=False, sklearn=False) as outer:
        for _ in range(5):
            small(x8)
        with otel_flops.track(small, name="small") as inner:
            for _ in range(3):
                small(x8)
    assert nonzero_models(inner.report()) == {"small": 3 * SMALL}
    assert nonzero_models(outer.report()) == {"Linear": 5 * SMALL, "small": 3 * SMALL}


RUN_SCRIPT = """
    import json, torch, otel_flops
    a, b = torch.nn.Linear(64, 64), torch.nn.Linear(8, 8)
    for _ in range(10):
        a(torch.randn(32, 64))  # unrelated work before the block
    with otel_flops.track(b, name="small") as t:
        b(torch.randn(2, 8))
    report = t.report()
    print("REPORT " + json.dumps({"totals": report["totals"], "by_model": report["by_model"]}))
"""


def test_nested_track_under_otel_flops_run(tmp_path):
    script = tmp_path / "block.py"
    script.write_text(textwrap.dedent(RUN_SCRIPT))
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off"}
    result = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--port", "0", "--report",
                             str(tmp_path / "run.json"), "--", sys.executable, str(script)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("REPORT "))
    block = json.loads(line.removeprefix("REPORT "))
    assert block["totals"]["flops"] == SMALL
    assert {m: c["flops"] for m, c in block["by_model"].items() if c["flops"]} == {"small": SMALL}
    whole = json.loads((tmp_path / "run.json").read_text())
    assert whole["by_model"]["Linear"]["flops"] == 10 * 2 * 32 * 64 * 64  # the session's report: everything
    assert whole["by_model"]["small"]["flops"] == SMALL
