"""`otel-flops report RUN.json --html`: the page opens in headless Chromium with its figure and numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib import image

import otel_flops
from otel_flops.analysis.workloads import WORKLOADS, train_step
from otel_flops.commands.cli import main
from otel_flops.report import human

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BAR_BLUE = np.array([0x4C, 0x72, 0xB0]) / 255  # panel (a)'s bars
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (make setup installs it; in CI this test must run)",
)


@pytest.fixture(scope="module")
def run_json(tmp_path_factory):
    """A real MLP training step's report, with an energy section as the energy monitor writes it."""
    torch.manual_seed(0)
    workload = WORKLOADS["mlp"]
    model = workload.build()
    optimizer = torch.optim.AdamW(model.parameters())
    x, y = workload.make_batch(16, torch.device("cpu"))
    with otel_flops.track(model, mode="full", energy=False) as t:
        train_step(model, optimizer, workload, x, y)
    report = t.report()
    total = report["totals"]
    report["energy"] = {"available": True, "joules": 2.5, "by_component": {"cpu": 2.0, "ram": 0.5},
                        "emissions_g": 0.00033, "source": "codecarbon-cpu-load"}
    report["efficiency"] = {"flops_per_joule": total["flops"] / 2.5, "bops_per_joule": total["bops"] / 2.5}
    path = tmp_path_factory.mktemp("run") / "run.json"
    report.save(str(path))
    return path, report


def _chromium(page, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=90)


@needs_chromium
def test_html_report_renders_in_chromium(run_json, tmp_path):
    path, report = run_json
    page = tmp_path / "out.html"
    cli = subprocess.run([sys.executable, "-m", "otel_flops", "report", str(path), "--html", str(page)],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr

    dom = _chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    assert '<img id="figure"' in html and "data:image/png;base64,iVBORw0KGgo" in html
    assert '<table id="phases">' in html
    for name, counts in report["phases"].items():
        assert f"<td>{name}</td><td>{counts['flops']:,}</td><td>{counts['bops']:,}</td>" in html
    assert f"<td>total</td><td>{report['totals']['flops']:,}</td>" in html
    flop_per_j = human(report["totals"]["flops"] / 2.5, "FLOP/J")
    assert f"<td>FLOP/J</td><td>{flop_per_j}</td>" in html
    assert "<td>energy</td><td>2.500 J</td><td>codecarbon-cpu-load</td>" in html
    assert "<td>aten.mm</td>" in html and '<table id="dtypes">' in html

    shot = tmp_path / "shot.png"
    result = _chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert result.returncode == 0 and shot.exists(), result.stderr
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    # The figure was decoded and painted: panel (a)'s blue bars cover thousands of pixels.
    blue = np.abs(pixels - BAR_BLUE).max(axis=-1) < 0.03
    assert blue.sum() > 2000
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100


def test_report_without_html_prints_the_table(run_json, capsys):
    path, _ = run_json
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("otel-flops report (full mode, 1 optimizer steps)")
    assert "energy: 2.5 J (codecarbon-cpu-load)" in out


def test_report_of_a_bad_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    assert main(["report", str(bad), "--html", str(tmp_path / "o.html")]) == 2
    expected = "not an otel-flops report (schema None, expected 'otel-flops/report/v1')"
    assert capsys.readouterr().err == f"otel-flops: {bad}: {expected}\n"
    assert not (tmp_path / "o.html").exists()


def test_hostile_names_render_escaped_in_the_html_and_the_table(tmp_path, capsys):
    """A lone surrogate (undecodable bytes), markup, mathtext and a newline in phase and window names:
    the real ``report --html`` path (matplotlib figure included) writes the page, and the table prints."""
    names = ["\udcff lone", "<script>alert(1)</script>", "$\\frac{$", "a\nb"]
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    with otel_flops.track(model, mode="full", energy=False) as t:
        for name in names:
            with otel_flops.phase(name), otel_flops.window(name):
                model(torch.randn(2, 8))  # addmm: 2 x 2 x 8 x 8 = 256 FLOPs
    run = tmp_path / "run.json"
    t.report().save(str(run))
    page = tmp_path / "out.html"
    assert main(["report", str(run), "--html", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    for shown in ("\ufffd lone", "&lt;script&gt;alert(1)&lt;/script&gt;", "$\\frac{$", "a\\nb"):
        assert f"<tr><td>{shown}</td><td>256</td>" in text  # in the phases table and the windows table
        assert text.count(f"<tr><td>{shown}</td><td>256</td>") == 2
    assert "<script>" not in text
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "\ufffd lone" in out and "window a\\nb: 256 FLOP" in out
