"""MFU from the peak table: the arithmetic, with real Ledger entries (no GPU needed)."""

from __future__ import annotations

import pytest

from otel_flops.analysis.peaks import peak_flops, seconds_at_peak
from otel_flops.ledger import CountKey, Ledger

H100 = "NVIDIA H100 80GB HBM3"


def _key(dtype: str, device: str = "cuda:0") -> CountKey:
    return CountKey("torch", "forward", "aten.mm", "matmul", dtype, 16, device, "M")


def test_peak_table_and_override():
    assert peak_flops(H100, "bfloat16") == 989.4e12
    assert peak_flops("NVIDIA H200", "bfloat16") == 989.4e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "float16") == 312e12
    assert peak_flops("Tesla T4", "bfloat16") is None
    assert peak_flops("Tesla T4", "bfloat16", override=65e12) == 65e12


def test_seconds_at_peak_weighs_each_dtype_by_its_own_peak_and_skips_the_cpu():
    ledger = Ledger()
    ledger.add(_key("bfloat16"), 989_400_000_000_000, 0)  # one second at the bf16 peak
    ledger.add(_key("float32"), 494_700_000_000_000 // 2, 0)  # half a second at the TF32 peak
    ledger.add(_key("bfloat16", device="cpu"), 10**15, 0)  # CPU work has no GPU peak
    assert seconds_at_peak(ledger.items(), H100) == pytest.approx(1.5)
    assert seconds_at_peak(ledger.items(), "Tesla T4") is None
