"""alpha-FLOPs: the formula's own properties, and a real quick calibration on this CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import free_port, scrape

import otel_flops
from otel_flops.analysis import alpha


@pytest.mark.parametrize("beta, gamma", [(0.0, 0.0), (0.02, 0.99), (0.001, 0.56), (2.0, 2.0), (0.7, 0.1)])
def test_alpha_is_one_for_a_dense_layer_whatever_the_parameters(beta, gamma):
    assert alpha.alpha(1, 1, beta, gamma) == 1.0


def test_alpha_matches_seed_004_on_the_t2000_values():
    # K = 1, S = 100x100, beta 0.02, gamma 0.99: ((1 + 0.02 * 9999) / 10000) ** 0.99
    assert alpha.alpha(1, 10_000, 0.02, 0.99) == pytest.approx(((1 + 0.02 * 9_999) / 10_000) ** 0.99)
    # K = 3 on a 2x2 input: S_K clamps to S, so no speed-up is assumed
    assert alpha.alpha(3, 4, 0.001, 0.56) == 1.0


def test_quick_cpu_calibration_writes_a_bounded_profile_and_an_rmse_table(tmp_path):
    out = tmp_path / "profile.json"
    result = subprocess.run([sys.executable, "-m", "otel_flops", "calibrate", "--quick", "--device", "cpu",
                             "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    (document,) = json.loads(out.read_text())["profiles"].values()
    for fit in document["fits"].values():
        for name in ("beta", "gamma", "final"):
            assert math.isfinite(fit[name]) and 0.0 <= fit[name] <= 2.0, (name, fit)
    assert set(document["experiments"]) == set("ABCDEFG")
    for row in document["experiments"].values():
        assert row["configs"] > 0 and math.isfinite(row["rmse_ms"])
    assert "| A |" in result.stdout and "normalised RMSE" in result.stdout
    assert (tmp_path / "profile-AB.png").stat().st_size > 10_000
    loaded = alpha.load(out)
    assert loaded.predict_ms(alpha.Conv(1, 1, 1, 64, 64)) >= 0


PROFILE = str(Path(__file__).resolve().parent.parent / "docs" / "alpha-profile-h100.json")


def test_dense_products_are_never_corrected_and_predicted_time_is_final_times_flops():
    profile = alpha.load(PROFILE)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    port = free_port()
    with otel_flops.track(serve=True, host="127.0.0.1", port=port, alpha_profile=PROFILE, energy=False) as t:
        model(torch.randn(16, 64)).sum().backward()
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    report = t.report()
    matmul = sum(c["flops"] for op, c in report["by_op"].items() if op in ("aten.addmm", "aten.mm"))
    assert report["alpha"]["alpha_flops"] == matmul
    # predicted time is kept in whole nanoseconds per op
    assert report["alpha"]["predicted_seconds"] == pytest.approx(profile.k1.final * matmul / 1e9, abs=5e-9)
    assert sum(v for _, v in samples["otel_flops_alpha_flops_total"]) == matmul
    assert sum(v for _, v in samples["otel_flops_predicted_seconds_total"]) == pytest.approx(
        report["alpha"]["predicted_seconds"])


def test_convolutions_get_alpha_of_their_kernel_and_output_size():
    profile = alpha.load(PROFILE)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    with otel_flops.track(alpha_profile=PROFILE, mode="full", energy=False) as t:
        conv(torch.randn(2, 4, 16, 16))
    flops = t.report()["by_op"]["aten.convolution"]["flops"]
    fit = profile.kn
    expected = round(alpha.alpha(3, 16 * 16, fit.beta, fit.gamma) * flops)
    assert t.report()["alpha"]["alpha_flops"] == expected < flops
