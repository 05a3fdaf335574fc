"""The precision resolver: class markers, then attributes, then the dtype table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import otel_flops
from otel_flops.precision import dtype_bits, resolve_bits


class Linear4bit(nn.Linear):
    """Named like bitsandbytes' class: the marker alone makes it 4-bit."""


class ThreeBitLinear(nn.Linear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bits = 3


class QuantizeConfig:
    bits = 2


class GPTQLike(nn.Module):
    quantize_config = QuantizeConfig()


class AWQLike(nn.Module):
    w_bit = 4


class HQQLinear(nn.Module):
    meta = {"nbits": 3}


class NF4Weight:
    quant_type = "nf4"


class Params4bitHolder(nn.Module):
    weight = NF4Weight()


@pytest.mark.parametrize(
    "module, dtype, expected",
    [
        (Linear4bit(4, 4), torch.float16, 4),
        (ThreeBitLinear(4, 4), torch.float32, 3),
        (GPTQLike(), torch.float16, 2),
        (AWQLike(), torch.float16, 4),
        (HQQLinear(), torch.float16, 3),
        (Params4bitHolder(), torch.bfloat16, 4),
        (nn.Linear(4, 4), torch.bfloat16, 16),
        (None, torch.float8_e4m3fn, 8),
        (None, torch.float8_e5m2, 8),
        (None, torch.quint4x2, 4),
        (None, torch.quint2x4, 2),
        (None, torch.qint8, 8),
        (None, torch.float64, 64),
        (None, torch.float32, 32),
        (None, torch.bfloat16, 16),
        (None, torch.uint4, 4),
    ],
)
def test_resolution_order(module, dtype, expected):
    assert resolve_bits(module, dtype) == expected


def test_numpy_dtypes_and_fallback():
    np = pytest.importorskip("numpy")
    assert dtype_bits(np.dtype("float32")) == 32
    assert dtype_bits(np.dtype("float64")) == 64
    assert dtype_bits("mystery", default=64) == 64


def test_autocast_bf16_matmuls_carry_16_bits():
    model = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with otel_flops.track() as tracker, torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    matmuls = [(k, t) for k, t in tracker.session.ledger.items() if k.family == "matmul"]
    assert matmuls and {(k.dtype, k.bits) for k, _ in matmuls} == {("bfloat16", 16)}
    assert all(t.bops == 16 * t.flops for _, t in matmuls)


def test_ops_inside_a_marked_module_take_its_bits():
    model = nn.Sequential(Linear4bit(16, 8), nn.Linear(8, 2))
    with otel_flops.track() as tracker:
        model(torch.randn(4, 16)).sum().backward()
    forward_mm = {
        k.bits: t.flops for k, t in tracker.session.ledger.items() if k.family == "matmul" and k.phase == "forward"
    }
    assert forward_mm == {4: 2 * 4 * 16 * 8, 32: 2 * 4 * 8 * 2}


def test_backward_of_a_marked_module_takes_its_bits():
    """The autograd nodes a quantized module's forward created carry its bits into backward."""
    model = nn.Sequential(Linear4bit(16, 8), nn.Linear(8, 2))
    x = torch.randn(4, 16, requires_grad=True)
    with otel_flops.track(mode="full") as tracker:
        model(x).sum().backward()
    backward_mm = {}
    for key, totals in tracker.session.ledger.items():
        if key.family == "matmul" and key.phase == "backward":
            backward_mm[key.bits] = backward_mm.get(key.bits, 0) + totals.flops
    # Linear4bit: grad input and grad weight, 2 * (2*4*8*16); the plain layer: 2 * (2*4*2*8)
    assert backward_mm == {4: 2 * 2 * 4 * 8 * 16, 32: 2 * 2 * 4 * 2 * 8}
