"""`otel-flops compare` on real fp32 and bf16 runs: ranking, GreenScore, the estimate, bad files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import otel_flops
from otel_flops.analysis.workloads import WORKLOADS, train_step
from otel_flops.commands.cli import main
from otel_flops.report import human

CLI = [sys.executable, "-m", "otel_flops", "compare"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (each subprocess pays torch's import); usage errors exit 2 too."""
    try:
        code = main(["compare", *args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One MLP training step in fp32 and one under CPU bf16 autocast, saved as JSON reports."""
    out = tmp_path_factory.mktemp("runs")
    workload = WORKLOADS["mlp"]
    reports = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        torch.manual_seed(0)
        model = workload.build()
        optimizer = torch.optim.AdamW(model.parameters())
        x, y = workload.make_batch(32, torch.device("cpu"))
        with otel_flops.track(model, mode="full", energy=False) as t:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                train_step(model, optimizer, workload, x, y)
        reports[name] = t.report()
        reports[name].save(str(out / f"{name}.json"))
    return out, reports


def _rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    return {line.split()[0]: line.split() for line in lines[2:] if line.split()[0] in ("fp32", "bf16")}


def test_estimated_runs_rank_by_bops_and_score_their_accuracy(runs):
    out, reports = runs
    fp32, bf16 = reports["fp32"]["totals"], reports["bf16"]["totals"]
    assert fp32["flops"] == bf16["flops"] and bf16["bops"] < 0.6 * fp32["bops"]
    proc = _cli(str(out / "fp32.json"), str(out / "bf16.json"), "--accuracy", "fp32=0.91", "--accuracy", "bf16=0.9")
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert list(rows) == ["fp32", "bf16"]  # ordered by GreenScore
    # Same FLOPs, so the same estimated energy and CO2 (both rank 1); bf16 has the fewer BOPs.
    assert rows["bf16"][3] == rows["fp32"][3] == "[1]"
    assert rows["bf16"][6] == "[1]" and rows["fp32"][6] == "[2]"
    joules = fp32["flops"] * 85e-12 * 1.2
    assert f"{joules:.4g} J estimated [1]" in proc.stdout
    assert f"{joules / 3.6e6 * 475:.4g} g [1]" in proc.stdout
    # Equal FLOPs and CO2: GreenScore is the accuracy itself.
    assert rows["fp32"][-1] == "0.9100" and rows["bf16"][-1] == "0.9000"


def _measured(report: dict, path, joules: float, grams: float) -> str:
    """``report`` as if CodeCarbon had measured ``joules`` and ``grams``, saved to ``path``."""
    measured = dict(report)
    measured["energy"] = {"available": True, "joules": joules, "by_component": {"cpu": joules},
                          "emissions_g": grams, "source": "codecarbon-cpu-load"}
    path.write_text(json.dumps(measured))
    return str(path)


def test_measured_energy_changes_the_greenscore(runs, tmp_path, capsys):
    _, reports = runs
    fp32 = _measured(reports["fp32"], tmp_path / "fp32.json", 0.016, 4e-7)
    bf16 = _measured(reports["bf16"], tmp_path / "bf16.json", 0.004, 1e-7)
    code, stdout, stderr = _main(capsys, fp32, bf16, "--accuracy", "fp32=0.91", "--accuracy", "bf16=0.9",
                                 "--alpha", "1", "--beta", "0.5")
    assert code == 0, stderr
    rows = _rows(stdout)
    assert list(rows) == ["bf16", "fp32"]
    # Equal FLOPs; bf16 emitted 4x less: 0.9 x 1 x 4^0.5.
    assert rows["bf16"][-1] == "1.8000" and rows["fp32"][-1] == "0.9100"
    assert "0.004 J measured [1]" in stdout and "1e-07 g [1]" in stdout and "4e-07 g [2]" in stdout
    assert "GreenScore = accuracy x (FLOPs_max/FLOPs)^1 x (CO2_max/CO2)^0.5" in stdout
    assert "estimated" not in stdout


def test_measured_and_estimated_energy_are_never_ranked_together(runs, tmp_path, capsys):
    """The estimate (85 pJ/FLOP) makes a run look ~20,000x cheaper than the measured one; it must not
    win FLOP/J or GreenScore against it: each group is ranked and scored on its own."""
    out, reports = runs
    bf16 = _measured(reports["bf16"], tmp_path / "bf16.json", 85.0, 0.011)
    code, stdout, stderr = _main(capsys, str(out / "fp32.json"), bf16, "--accuracy", "fp32=0.8",
                                 "--accuracy", "bf16=0.9")
    assert code == 0, stderr
    rows = _rows(stdout)
    assert list(rows) == ["bf16", "fp32"]  # measured first, whatever the scores
    joules = reports["fp32"]["totals"]["flops"] * 85e-12 * 1.2
    assert "85 J measured [m1]" in stdout and f"{joules:.4g} J estimated [e1]" in stdout
    flops = reports["fp32"]["totals"]["flops"]
    assert f"{human(flops / 85.0)} [m1]" in stdout and f"{human(flops / joules)} [e1]" in stdout  # FLOP/J
    # Alone in its group, each run's GreenScore is its accuracy (the maxima are its own).
    assert rows["bf16"][-1] == "0.9000" and rows["fp32"][-1] == "0.8000"
    assert ("energy is measured for bf16 and estimated for fp32: energy, FLOP/J, CO2eq and GreenScore are "
            "ranked and scored within each group ([m1] among measured, [e1] among estimated), never across them"
            ) in stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not JSON (Expecting property name enclosed in double quotes at line 1)"),
        ('{"schema": "other"}', "not an otel-flops report (schema 'other', expected 'otel-flops/report/v1')"),
        ('{"schema": "otel-flops/report/v1", "totals": {"flops": "12", "bops": 3}}',
         "totals.flops is missing or not a non-negative integer"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(runs, tmp_path, capsys, content, message):
    out, _ = runs
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    code, stdout, stderr = _main(capsys, str(out / "fp32.json"), str(bad))
    assert code == 2 and stdout == ""
    assert stderr == f"otel-flops: {bad}: {message}\n"


def test_a_bad_file_exits_2_with_no_traceback(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text("[1, 2]")
    proc = _cli(str(bad))
    assert proc.returncode == 2
    expected = "not an otel-flops report (schema 'list', expected 'otel-flops/report/v1')"
    assert proc.stderr == f"otel-flops: {bad}: {expected}\n"


def test_bad_flags_are_usage_errors(runs, capsys):
    run = str(runs[0] / "fp32.json")
    code, _, stderr = _main(capsys, run, "--accuracy", "fp32=1.5")
    assert code == 2 and "use RUN=ACCURACY with an accuracy from 0 to 1" in stderr
    code, _, stderr = _main(capsys, run, "--accuracy", "nope=0.5")
    assert code == 2 and "no run named 'nope' (runs: fp32)" in stderr
    code, _, stderr = _main(capsys, run, "--pue", "0")
    assert code == 2 and "argument --pue: must be > 0, got 0" in stderr
