"""torch's CPU quantization paths: a quantized model counts its float model's FLOPs, at the packed weight's width."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import otel_flops

tq = pytest.importorskip("torch.ao.quantization")

# torch 2.13 deprecates the eager quantization API and quantized tensor creation: silenced here only.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*torch.ao.quantization is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*quantized tensor creation functions:UserWarning"),
    pytest.mark.filterwarnings("ignore:Please use quant_min and quant_max:UserWarning"),
]


def _report(model: nn.Module, *inputs: torch.Tensor, inference_mode: bool = True) -> dict:
    with otel_flops.track() as tracker, torch.inference_mode(inference_mode), torch.no_grad():
        model(*inputs)
    return tracker.report()


def _ops(report: dict, prefix: str = "quantized.") -> dict[str, dict]:
    return {op: c for op, c in report["by_op"].items() if op.startswith(prefix)}


def _float_products(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FlopCounterMode's total on the float model: its products and convolutions."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize(
    ("dtype", "fused", "op", "bits"),
    [
        (torch.qint8, False, "quantized.linear_dynamic", 8),
        (torch.qint8, True, "quantized.linear_relu_dynamic", 8),
        (torch.float16, False, "quantized.linear_dynamic_fp16", 16),
    ],
)
@pytest.mark.parametrize("inference_mode", [True, False])
def test_dynamic_linear_counts_the_float_products_at_the_weight_width(dtype, fused, op, bits, inference_mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    x = torch.randn(8, 32)
    products = _float_products(model, x)
    assert products == 2 * 8 * 32 * 64 + 2 * 8 * 64 * 10
    if fused:
        model = tq.fuse_modules(model, [["0", "1"]])
    quantized = tq.quantize_dynamic(model, {nn.Linear, torch.ao.nn.intrinsic.LinearReLU}, dtype=dtype)
    report = _report(quantized, x, inference_mode=inference_mode)
    relu = 8 * 64
    assert report["totals"]["flops"] == products + relu
    assert _ops(report)[op]["flops"] == (2 * 8 * 32 * 64 + relu if fused else products)
    assert all(c["bops"] == bits * c["flops"] for c in _ops(report).values())
    assert report["uncounted_ops"] == {} and report["errors"] == {}


def _lstm_layer(inputs: int, hidden: int) -> int:
    """Per step and sequence: 4 gates' input and hidden products, 13 gate FLOPs per hidden unit (rnn.py)."""
    return 2 * 4 * hidden * (inputs + hidden) + 13 * hidden


def _gru_layer(inputs: int, hidden: int) -> int:
    return 2 * 3 * hidden * (inputs + hidden) + 10 * hidden


@pytest.mark.parametrize(("dtype", "bits"), [(torch.qint8, 8), (torch.float16, 16)])
def test_dynamic_lstm_and_gru_stacks_count_the_float_formulas(dtype, bits):
    torch.manual_seed(0)
    seq, batch = 5, 3
    lstm = nn.Sequential(nn.LSTM(32, 16, num_layers=2)).eval()
    gru = nn.Sequential(nn.GRU(32, 16, bidirectional=True)).eval()
    x = torch.randn(seq, batch, 32)
    expected = {
        "aten.quantized_lstm": seq * batch * (_lstm_layer(32, 16) + _lstm_layer(16, 16)),
        "aten.quantized_gru": seq * batch * 2 * _gru_layer(32, 16),
    }
    float_lstm, float_gru = _report(lstm, x), _report(gru, x)
    assert float_lstm["totals"]["flops"] == expected["aten.quantized_lstm"]
    assert float_gru["totals"]["flops"] == expected["aten.quantized_gru"]
    for model in (lstm, gru):
        quantized = tq.quantize_dynamic(model, {nn.LSTM, nn.GRU}, dtype=dtype)
        report = _report(quantized, x)
        (op, counts), = _ops(report, "aten.quantized_").items()
        assert counts["flops"] == expected[op] == report["totals"]["flops"]
        assert counts["bops"] == bits * counts["flops"]
        assert report["uncounted_ops"] == {} and report["errors"] == {}


def test_dynamic_cells_count_one_step_of_the_float_formula():
    torch.manual_seed(0)
    cells = nn.ModuleList([nn.LSTMCell(32, 16), nn.GRUCell(32, 16), nn.RNNCell(32, 16)])
    quantized = tq.quantize_dynamic(cells, {nn.LSTMCell, nn.GRUCell, nn.RNNCell}, dtype=torch.qint8)
    x = torch.randn(3, 32)
    with otel_flops.track() as tracker, torch.no_grad():
        for cell in quantized:
            cell(x)
    report = tracker.report()
    assert {op: c["flops"] for op, c in _ops(report).items()} == {
        "quantized.quantized_lstm_cell_dynamic": 3 * _lstm_layer(32, 16),
        "quantized.quantized_gru_cell_dynamic": 3 * _gru_layer(32, 16),
        "quantized.quantized_rnn_tanh_cell_dynamic": 3 * (2 * 16 * (32 + 16) + 2 * 16),
    }
    assert all(c["bops"] == 8 * c["flops"] for c in _ops(report).values())
    assert report["uncounted_ops"] == {} and report["errors"] == {}


class ConvNet(nn.Module):
    """Conv+ReLU, a FloatFunctional add, max pooling, a transposed conv and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.relu = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.add = nn.quantized.FloatFunctional()
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.conv(self.quant(x)))
        y = self.up(self.pool(self.add.add(y, y)))
        return self.dequant(self.fc(y.flatten(1)))


@pytest.mark.parametrize("inference_mode", [True, False])
def test_static_conv_and_linear_count_the_float_model(inference_mode):
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    products = _float_products(model, x)
    conv, up, fc = 2 * (2 * 8 * 8) * 9 * 8 * 3, 2 * (2 * 4 * 4) * 4 * 8 * 4, 2 * 2 * 256 * 10
    assert products == conv + up + fc
    model.qconfig = tq.get_default_qconfig(torch.backends.quantized.engine)
    model.up.qconfig = tq.default_qconfig  # per-channel weights are not supported for transposed convs
    prepared = tq.prepare(tq.fuse_modules(model, [["conv", "relu"]]))
    prepared(x)
    quantized = tq.convert(prepared)
    report = _report(quantized, x, inference_mode=inference_mode)
    elementwise = 2 * 8 * 8 * 8  # the fused ReLU and the add, one per conv output each
    pool = 2 * 8 * 4 * 4 * 4
    assert report["totals"]["flops"] == products + 2 * elementwise + pool
    ops = {op: c["flops"] for op, c in report["by_op"].items() if c["flops"]}
    pool_op = next(op for op in ops if "max_pool2d" in op)
    assert ops == {
        "quantized.conv2d_relu": conv + elementwise, "quantized.add": elementwise, pool_op: pool,
        "quantized.conv_transpose2d": up, "quantized.linear": fc,
    }
    assert report["by_dtype"]["quint8/8"] == {"flops": report["totals"]["flops"], "bops": 8 * report["totals"]["flops"]}
    assert report["uncounted_ops"] == {} and report["errors"] == {}


@pytest.mark.parametrize(
    ("norm", "per_element"),
    [(nn.BatchNorm2d(8), 2 + 2), (nn.LayerNorm([8, 4, 4]), 3 + 2 + 2), (nn.GroupNorm(2, 8), 3 + 2 + 2),
     (nn.InstanceNorm2d(8, affine=True), 3 + 2 + 2)],
    ids=["batch", "layer", "group", "instance"],
)
def test_static_norms_count_the_float_per_element_formula_at_8_bits(norm, per_element):
    """Running-statistics batch norm: apply 2 + affine 2; the others add their statistics, 3."""
    x = torch.randn(2, 8, 4, 4)
    model = nn.Sequential(tq.QuantStub(), norm, tq.DeQuantStub()).eval()
    assert _report(model, x)["totals"]["flops"] == per_element * x.numel()
    model.qconfig = tq.default_qconfig
    prepared = tq.prepare(model)
    prepared(x)
    report = _report(tq.convert(prepared), x)
    assert report["totals"]["flops"] == per_element * x.numel()
    assert report["by_dtype"]["quint8/8"] == {"flops": per_element * x.numel(), "bops": 8 * per_element * x.numel()}
    assert report["uncounted_ops"] == {} and report["errors"] == {}
