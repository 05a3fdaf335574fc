"""`otel-flops bench paper --quick` on CPU: the seed paper's Table 2 claims, measured; the INT4 emulation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import otel_flops
from otel_flops.analysis.quant import Linear4bit, pack_int4, quantize_model, unpack_int4

WORKLOADS = ("mlp", "resnet18", "transformer")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    proc = subprocess.run(
        [sys.executable, "-m", "otel_flops", "bench", "paper", "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, json.loads((out / "paper.json").read_text())


def _iteration(data: dict, name: str, fmt: str) -> dict:
    return data["results"][name][fmt]["iteration"]


@pytest.mark.parametrize("name", WORKLOADS)
def test_flops_barely_change_from_fp32_to_int4(bench, name):
    _, _, data = bench
    fp32 = _iteration(data, name, "fp32")["totals"]["flops"]
    int4 = _iteration(data, name, "int4")["totals"]["flops"]
    # Dequantization adds work (the paper's "dequant scalars"), never removes any.
    assert fp32 < int4 < 1.10 * fp32
    # FP16 changes the width, not the work.
    assert _iteration(data, name, "fp16")["totals"]["flops"] == fp32


@pytest.mark.parametrize("name", WORKLOADS)
def test_int4_bops_at_most_a_sixth_of_fp32(bench, name):
    _, _, data = bench
    fp32, int4 = _iteration(data, name, "fp32"), _iteration(data, name, "int4")
    # The backward ops of a quantized module's forward take its 4 bits too (README, precision)
    assert int4["totals"]["bops"] <= fp32["totals"]["bops"] / 6
    for phase in ("forward", "backward"):
        assert int4["phases"][phase]["bops"] <= fp32["phases"][phase]["bops"] / 6, phase
    fp16 = _iteration(data, name, "fp16")
    assert fp16["phases"]["backward"]["bops"] < 0.52 * fp32["phases"]["backward"]["bops"]


@pytest.mark.parametrize("name", WORKLOADS)
@pytest.mark.parametrize("kind", ["iteration", "step"])
def test_phases_sum_to_the_total(bench, name, kind):
    _, _, data = bench
    for fmt, entry in data["results"][name].items():
        counts = entry[kind]
        for key in ("flops", "bops"):
            assert sum(p[key] for p in counts["phases"].values()) == counts["totals"][key], (fmt, key)
        assert set(counts["phases"]) >= ({"forward", "backward", "loss"} | ({"optimizer"} if kind == "step" else set()))
        assert not counts["uncounted_ops"], fmt


def test_outputs_table_figure_and_page(bench):
    out, stdout, data = bench
    assert "Table 2" in stdout and "Phase decomposition" in stdout
    for name in WORKLOADS:
        assert f"{name} (batch {data['batch'][name]})" in stdout
    assert (out / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert 'id="figure"' in page and "data:image/png;base64," in page and 'id="table2"' in page
    assert data["fp16"] == "model and inputs cast to float16"


def test_int4_packs_two_codes_per_byte_and_round_trips():
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(3)[:47]
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.numel() == 24
    assert torch.equal(unpack_int4(packed, 47), codes)
    assert packed[0].item() == (0 | (1 << 4))  # -8 -> 0 in the low nibble, -7 -> 1 in the high one


def test_quantized_model_stays_close_and_resolves_to_4_bits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))
    x = torch.randn(16, 64)
    reference = model(x)
    quantize_model(model, 4)
    assert isinstance(model[0], Linear4bit) and model[0].weight_q.packed.numel() == 64 * 32 // 2
    assert torch.allclose(model(x), reference, atol=0.1)
    with otel_flops.track(model, mode="full", energy=False) as t:
        model(x).sum().backward()
    report = t.report()
    mm = 2 * 16 * 64 * 32 + 2 * 16 * 32 * 8
    assert report["by_op"]["aten.addmm"]["flops"] == mm
    assert report["by_op"]["aten.addmm"]["bops"] == 4 * mm
    assert {"forward", "backward"} <= set(report["phases"])


@pytest.mark.parametrize(("device", "message"), [("bogus", "'bogus' is not a torch device"),
                                                 ("cuda", "CUDA is not available on this machine")])
def test_a_bad_device_is_a_usage_error(capsys, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from otel_flops.commands.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "paper", "--quick", "--device", device])
    assert exc.value.code == 2
    assert f"argument --device: {message}" in capsys.readouterr().err
