"""MFU: the peak table, the TF32 choice from torch's own settings, and seconds at peak from a real
Ledger (no GPU needed: the device name is given, the flags are torch's real ones)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import free_port
from prometheus_server import Prometheus

from otel_flops.analysis import mfu
from otel_flops.analysis.mfu import PeakTime, tf32_families
from otel_flops.analysis.peaks import GPUS, gpu_peaks, peak_flops
from otel_flops.ledger import CountKey, Ledger

RULES = Path(__file__).resolve().parent.parent / "deploy/prometheus/rules/otel-flops.yml"
H100 = "NVIDIA H100 80GB HBM3"
M, N, K = 4096, 4096, 4096
MATMUL_FLOPS = 2 * M * N * K  # one (M, K) x (K, N) product: a multiply-add is 2 FLOPs


def _key(dtype: str, family: str = "matmul", device: str = "cuda:0") -> CountKey:
    op = {"matmul": "aten.mm", "conv": "aten.convolution"}.get(family, "aten.add")
    return CountKey("torch", "forward", op, family, dtype, 32 if dtype == "float32" else 16, device, "M")


@pytest.fixture
def torch_tf32():
    """torch's TF32 settings as they were before the test, restored after it whatever it set."""
    nodes = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn,
             torch.backends.cudnn, torch.backends)
    saved = [node.fp32_precision for node in nodes]
    # torch's test utilities (imported by the OpInfo tests) freeze the flags for the process; lift
    # that for this test as torch's own flags() context managers do.
    with getattr(torch.backends, "__allow_nonbracketed_mutation")():
        yield
        for node, value in zip(nodes, saved):
            node.fp32_precision = value


def _matmul_step_seconds(dtype: str = "float32", family: str = "matmul") -> float:
    ledger = Ledger()
    ledger.add(_key(dtype, family), MATMUL_FLOPS, MATMUL_FLOPS * 32)
    at_peak = PeakTime(device_name=lambda: H100).measure(ledger.items())
    assert at_peak is not None and at_peak.device == H100 and at_peak.flops == MATMUL_FLOPS
    return at_peak.seconds


def test_fp32_matmul_uses_the_fp32_peak_unless_tf32_is_allowed(torch_tf32):
    torch.backends.cuda.matmul.allow_tf32 = False
    assert _matmul_step_seconds() == pytest.approx(MATMUL_FLOPS / 67e12, rel=1e-12)
    torch.backends.cuda.matmul.allow_tf32 = True
    assert _matmul_step_seconds() == pytest.approx(MATMUL_FLOPS / 494.7e12, rel=1e-12)
    torch.set_float32_matmul_precision("highest")
    assert _matmul_step_seconds() == pytest.approx(MATMUL_FLOPS / 67e12, rel=1e-12)
    torch.set_float32_matmul_precision("high")
    assert _matmul_step_seconds() == pytest.approx(MATMUL_FLOPS / 494.7e12, rel=1e-12)
    torch.backends.cuda.matmul.fp32_precision = "ieee"  # the new API, then the legacy flag cannot be read
    assert _matmul_step_seconds() == pytest.approx(MATMUL_FLOPS / 67e12, rel=1e-12)


def test_fp32_convolution_follows_cudnn_which_allows_tf32_by_default(torch_tf32):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    assert _matmul_step_seconds(family="conv") == pytest.approx(MATMUL_FLOPS / 494.7e12, rel=1e-12)
    torch.backends.cudnn.allow_tf32 = False
    assert _matmul_step_seconds(family="conv") == pytest.approx(MATMUL_FLOPS / 67e12, rel=1e-12)
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    assert _matmul_step_seconds(family="conv") == pytest.approx(MATMUL_FLOPS / 494.7e12, rel=1e-12)


def test_other_fp32_work_and_other_dtypes_take_their_own_peak(torch_tf32):
    torch.backends.cuda.matmul.allow_tf32 = True
    assert _matmul_step_seconds(family="elementwise") == pytest.approx(MATMUL_FLOPS / 67e12, rel=1e-12)
    assert _matmul_step_seconds("bfloat16") == pytest.approx(MATMUL_FLOPS / 989.4e12, rel=1e-12)
    assert _matmul_step_seconds("float8_e4m3fn") == pytest.approx(MATMUL_FLOPS / 1978.9e12, rel=1e-12)


def test_flags_are_read_once_per_session_so_the_counter_never_goes_back(torch_tf32):
    torch.backends.cuda.matmul.allow_tf32 = False
    ledger, peak_time = Ledger(), PeakTime(device_name=lambda: H100)
    ledger.add(_key("bfloat16"), MATMUL_FLOPS, 0)
    assert peak_time.measure(ledger.items()).seconds == pytest.approx(MATMUL_FLOPS / 989.4e12)
    assert peak_time.tf32 is None  # no float32 GPU matmul yet: not read, so a later setting still counts
    torch.backends.cuda.matmul.allow_tf32 = True
    ledger.add(_key("float32"), MATMUL_FLOPS, 0)
    first = peak_time.measure(ledger.items()).seconds
    assert first == pytest.approx(MATMUL_FLOPS / 989.4e12 + MATMUL_FLOPS / 494.7e12, rel=1e-12)
    assert peak_time.tf32 == frozenset({"matmul", "conv", "rnn"})
    torch.backends.cuda.matmul.allow_tf32 = False
    assert peak_time.measure(ledger.items()).seconds == first


def test_tf32_families_read_torch_defaults_and_survive_mixed_apis(torch_tf32):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    assert tf32_families() == mfu.TF32_DEFAULT == frozenset({"conv", "rnn"})
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    with pytest.raises(RuntimeError):
        torch.get_float32_matmul_precision()  # torch refuses the legacy read now; we must not
    assert tf32_families() == frozenset({"matmul", "conv", "rnn"})


def test_cpu_work_has_a_peak_only_with_the_override():
    ledger = Ledger()
    ledger.add(_key("float32", device="cpu"), MATMUL_FLOPS, 0)
    ledger.add(_key("float64", family="elementwise", device="cpu"), 1000, 0)
    assert PeakTime(device_name=lambda: "").measure(ledger.items()) is None
    at_peak = PeakTime(override=1e12, device_name=lambda: "").measure(ledger.items())
    assert (at_peak.device, at_peak.flops) == ("cpu", MATMUL_FLOPS + 1000)
    assert at_peak.seconds == pytest.approx((MATMUL_FLOPS + 1000) / 1e12, rel=1e-12)


def test_gpu_work_on_a_device_the_table_lacks_needs_the_override():
    ledger = Ledger()
    ledger.add(_key("bfloat16"), MATMUL_FLOPS, 0)
    ledger.add(_key("bfloat16", device="cpu"), 10**15, 0)  # with GPU work counted, CPU work has no peak
    assert PeakTime(device_name=lambda: "Tesla T4").measure(ledger.items()) is None
    at_peak = PeakTime(override=65e12, device_name=lambda: "Tesla T4").measure(ledger.items())
    assert at_peak.seconds == pytest.approx(MATMUL_FLOPS / 65e12, rel=1e-12)


@pytest.mark.parametrize(("name", "precision", "peak"), [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
    ("NVIDIA H100 PCIe", "bf16", 756.5e12),
    ("NVIDIA H100 NVL", "fp8", 1670.5e12),
    ("NVIDIA H200", "tf32", 494.7e12),
    ("NVIDIA H200 NVL", "fp32", 60e12),
    ("NVIDIA H20", "bf16", 148e12),
    ("NVIDIA B200", "bf16", 2250e12),
    ("NVIDIA GB200", "fp8", 5000e12),
    ("NVIDIA A100-SXM4-80GB", "fp16", 312e12),
    ("NVIDIA A100-SXM4-80GB", "fp8", None),
    ("NVIDIA L4", "fp8", 242.5e12),
    ("NVIDIA L40", "bf16", 181.05e12),
    ("NVIDIA L40S", "bf16", 362.05e12),
    ("NVIDIA A10", "tf32", 62.5e12),
    ("NVIDIA A10G", "tf32", None),
    ("NVIDIA RTX 6000 Ada Generation", "fp32", 91.1e12),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "bf16", 500e12),
    ("AMD Instinct MI300X", "bf16", 1307.4e12),
    ("Tesla T4", "bf16", None),
])
def test_peak_table_matches_names_as_torch_prints_them(name, precision, peak):
    assert peak_flops(name, precision) == peak


def test_every_row_orders_its_precisions_and_similar_names_stay_apart():
    for pattern, peaks in GPUS:
        assert peaks.bf16 and peaks.fp16 and peaks.tf32, pattern
        assert peaks.fp32 is None or peaks.fp32 <= peaks.tf32 <= peaks.bf16 <= (peaks.fp8 or peaks.bf16), pattern
    assert gpu_peaks("NVIDIA L40S") is not gpu_peaks("NVIDIA L40") is not gpu_peaks("NVIDIA L4")


def test_mfu_from_the_counters_in_prometheus_equals_the_report(tmp_path):
    """A real session serves /metrics to a real Prometheus that evaluates the committed rules. The
    CPU has no table peak, so OTEL_FLOPS_PEAK_FLOPS (here 1 GFLOP/s) stands for the device's."""
    import otel_flops

    port = free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": "otel-flops", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}
    prometheus = Prometheus(yaml.safe_dump(config), tmp_path)
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(256, 256)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with otel_flops.track(model, serve=True, host="127.0.0.1", port=port, peak_flops=1e9, linger=10,
                              energy=False, run_id="mfu-test") as tracker:
            # Train until the recording rule has seen the work grow (Prometheus may start scraping late).
            deadline, seen = time.monotonic() + 60, []
            while not seen and time.monotonic() < deadline:
                for _ in range(20):
                    optimizer.zero_grad()
                    model(torch.randn(64, 256)).sum().backward()
                    optimizer.step()
                    time.sleep(0.01)
                seen = [s for s in prometheus.query('otel_flops:mfu:ratio_rate5m{run="mfu-test"}')
                        if float(s["value"][1]) > 0]
            assert seen, f"the MFU recording rule never saw the work; log:\n{prometheus.log.read_text()[-2000:]}"
        report = tracker.report()
        run = '{run="mfu-test"}'
        whole_run = (f"last_over_time(otel_flops_peak_time_seconds_total{run}[1m]) / "
                     f"(last_over_time(otel_flops_run_finished{run}[1m]) "
                     f"- last_over_time(otel_flops_run_started{run}[1m]))")
        prometheus.wait(lambda: prometheus.query(whole_run), "the final scrape", timeout=15)
        (promql,) = prometheus.query(whole_run)
        (steps,) = prometheus.query(f"last_over_time(otel_flops_steps_total{run}[1m])")
        (rule,) = prometheus.query(f"last_over_time(otel_flops:mfu:ratio_rate5m{run}[1m])")
    finally:
        prometheus.stop()
    mfu_report = report["mfu"]
    assert mfu_report["available"] and mfu_report["device"] == "cpu"
    assert mfu_report["peak_seconds"] == pytest.approx(report["totals"]["flops"] / 1e9, rel=1e-12)
    assert float(promql["value"][1]) == pytest.approx(mfu_report["mfu"], rel=1e-9)
    assert int(float(steps["value"][1])) == report["steps"] > 10
    # The recording rule reads the exporter's series; it is a rate over 5 minutes, so a 4 s run is
    # a sliver of its window (its arithmetic is checked in deploy/prometheus/tests/otel-flops_test.yml).
    assert 0 < float(rule["value"][1]) < mfu_report["mfu"]


def test_the_documented_peak_table_is_the_code_table():
    text = (Path(__file__).resolve().parent.parent / "docs/gpu-peaks.md").read_text()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ")]
    documented = [(row[1].strip("`"), row[2:9]) for row in rows if row[1].startswith("`") and len(row) == 10]
    fields = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")
    code = [(pattern, [f"{getattr(peaks, f) / 1e12:g}" if getattr(peaks, f) else "-" for f in fields])
            for pattern, peaks in GPUS]
    assert documented == code
