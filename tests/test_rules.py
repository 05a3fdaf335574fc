"""Hand-derived FLOP counts for single ops, and agreement with FlopCounterMode where it counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import otel_flops

aten = torch.ops.aten


def _by_op(fn):
    with otel_flops.track() as tracker:
        fn()
    return {op: c["flops"] for op, c in tracker.report()["by_op"].items()}


def _flop_counter(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}


CONVS = {
    "plain": (nn.Conv2d(8, 16, 3, padding=1), (2, 8, 10, 10)),
    "strided": (nn.Conv2d(8, 16, 3, stride=2), (2, 8, 11, 11)),
    "transposed": (nn.ConvTranspose2d(8, 4, 3, stride=2), (2, 8, 6, 6)),
    "conv1d": (nn.Conv1d(3, 6, 5), (4, 3, 20)),
    "conv3d": (nn.Conv3d(2, 4, 3), (1, 2, 6, 6, 6)),
}
# torch 2.13's FlopCounterMode counts the weight gradient of these ``groups`` times too large.
GROUPED = {
    "grouped": (nn.Conv2d(8, 16, 3, groups=4), (2, 8, 10, 10)),
    "depthwise": (nn.Conv2d(8, 8, 5, groups=8, padding=2), (2, 8, 9, 9)),
    "transposed-grouped": (nn.ConvTranspose2d(8, 4, 3, groups=2), (2, 8, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convolutions_forward_and_backward_match_flop_counter_mode(name):
    conv, shape = CONVS[name]
    x = torch.randn(shape, requires_grad=True)

    def step():
        conv(x).sum().backward()

    ours, theirs = _by_op(step), _flop_counter(step)
    assert ours["aten.convolution"] == theirs["aten.convolution"] > 0
    assert ours["aten.convolution_backward"] == theirs["aten.convolution_backward"] > 0


def _split(conv: nn.Module) -> list[nn.Module]:
    """The same convolution as ``groups`` separate ungrouped convolutions, one per channel group."""
    g = conv.groups
    transposed = isinstance(conv, nn.ConvTranspose2d)
    c_in, c_out = conv.in_channels // g, conv.out_channels // g
    kind = nn.ConvTranspose2d if transposed else nn.Conv2d
    return [kind(c_in, c_out, conv.kernel_size, stride=conv.stride, padding=conv.padding, bias=False)
            for _ in range(g)]


@pytest.mark.parametrize("name", sorted(GROUPED))
def test_grouped_convolution_backward_equals_its_groups_run_separately(name):
    conv, shape = GROUPED[name]
    x = torch.randn(shape, requires_grad=True)
    parts = _split(conv)
    chunks = [c.detach().requires_grad_() for c in x.chunk(conv.groups, dim=1)]
    grouped = _by_op(lambda: conv(x).sum().backward())
    separate = _by_op(lambda: [p(c).sum().backward() for p, c in zip(parts, chunks)])
    assert grouped["aten.convolution"] == separate["aten.convolution"] > 0
    assert grouped["aten.convolution_backward"] == separate["aten.convolution_backward"] > 0
    # and FlopCounterMode's weight-gradient term is the one that is groups times too large
    theirs = _flop_counter(lambda: conv(x).sum().backward())
    assert theirs["aten.convolution_backward"] > grouped["aten.convolution_backward"]


def test_grouped_convolution_backward_is_twice_its_forward():
    conv = nn.Conv2d(2, 2, 1, groups=2, bias=False)
    x = torch.randn(1, 2, 1, 1, requires_grad=True)
    counts = _by_op(lambda: conv(x).sum().backward())
    assert counts["aten.convolution"] == 4
    assert counts["aten.convolution_backward"] == 8  # FlopCounterMode of torch 2.13: 12


def test_grouped_convolution_hand_count():
    conv = nn.Conv2d(8, 16, 3, groups=4, bias=False)
    x = torch.randn(2, 8, 10, 10)
    # out 2x16x8x8; each output point: (8/4 channels) x 3x3 multiply-adds
    assert _by_op(lambda: conv(x))["aten.convolution"] == 2 * (2 * 16 * 8 * 8) * (2 * 3 * 3)


def test_vector_and_batched_products():
    a, v, w = torch.randn(6, 5), torch.randn(5), torch.randn(5)
    b1, b2, acc = torch.randn(3, 6, 5), torch.randn(3, 5, 4), torch.randn(6, 4)
    counts = _by_op(lambda: (torch.mv(a, v), torch.dot(v, w), torch.addmv(torch.zeros(6), a, v),
                             torch.addbmm(acc, b1, b2), torch.bmm(b1, b2)))
    assert counts["aten.mv"] == 2 * 6 * 5
    assert counts["aten.dot"] == 2 * 5
    assert counts["aten.addmv"] == 2 * 6 * 5
    assert counts["aten.addbmm"] == 3 * 2 * 6 * 5 * 4
    assert counts["aten.bmm"] == 3 * 2 * 6 * 5 * 4


def test_int_and_packed_weight_matmuls():
    a8, b8 = torch.randint(-8, 8, (32, 64), dtype=torch.int8), torch.randint(-8, 8, (64, 32), dtype=torch.int8)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    w8 = torch.randint(-8, 8, (16, 64), dtype=torch.int8)
    counts = _by_op(lambda: (torch._int_mm(a8, b8), torch._weight_int8pack_mm(x, w8, torch.ones(16, dtype=x.dtype))))
    assert counts["aten._int_mm"] == 2 * 32 * 64 * 32
    assert counts["aten._weight_int8pack_mm"] == 2 * 4 * 64 * 16


def test_int_mm_carries_8_bits():
    a8, b8 = torch.randint(-8, 8, (32, 64), dtype=torch.int8), torch.randint(-8, 8, (64, 32), dtype=torch.int8)
    with otel_flops.track() as tracker:
        torch._int_mm(a8, b8)
    ((key, totals),) = [(k, t) for k, t in tracker.session.ledger.items() if k.op == "aten._int_mm"]
    assert (key.dtype, key.bits, totals.bops) == ("int8", 8, 8 * totals.flops)


def test_norms_softmax_losses_per_element():
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    seq = torch.randn(3, 7, requires_grad=True)
    target = torch.randn(3, 7)

    def step():
        nn.functional.batch_norm(x, None, None, torch.ones(6), torch.zeros(6), training=True).sum().backward()
        nn.functional.layer_norm(seq, (7,)).sum().backward()
        nn.functional.group_norm(x, 3, torch.ones(6), torch.zeros(6)).sum().backward()
        torch.softmax(seq, -1).sum().backward()
        nn.functional.mse_loss(seq, target).backward()

    counts = _by_op(step)
    n, m = x.numel(), seq.numel()
    assert counts["aten.native_batch_norm"] == 7 * n  # stats 3 + apply 2 + affine 2
    assert counts["aten.native_batch_norm_backward"] == 9 * n
    assert counts["aten.native_layer_norm"] == 5 * m  # no affine
    assert counts["aten.native_group_norm"] == 7 * n
    assert counts["aten._softmax"] == 5 * m
    assert counts["aten._softmax_backward_data"] == 4 * m
    assert counts["aten.mse_loss"] == 3 * m and counts["aten.mse_loss_backward"] == 3 * m


def test_embedding_is_free_and_its_backward_scatter_adds():
    emb = nn.Embedding(100, 8)
    idx = torch.randint(0, 100, (4, 5))
    counts = _by_op(lambda: emb(idx).sum().backward())
    assert counts["aten.embedding"] == 0
    assert counts["aten.embedding_dense_backward"] == 4 * 5 * 8


def test_foreach_optimizer_ops_count_per_element():
    model = nn.Sequential(nn.Linear(10, 5), nn.Linear(5, 2))
    model(torch.randn(3, 10)).sum().backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
    params = sum(p.numel() for p in model.parameters())
    with otel_flops.track() as tracker:
        optimizer.step()
    report = tracker.report()
    assert report["phases"]["optimizer"]["flops"] == report["totals"]["flops"]
    assert report["by_op"]["aten._foreach_add_"]["flops"] == params


def test_elementwise_and_reductions():
    a, b = torch.randn(4, 1), torch.randn(1, 5)
    counts = _by_op(lambda: (a + b, torch.exp(a), a.sum(), b.mean(dim=1)))
    assert counts["aten.add"] == 20  # max(N_in, N_out) with broadcasting
    assert counts["aten.exp"] == 4
    assert counts["aten.sum"] == 4
    assert counts["aten.mean"] == 5


def test_views_are_seen_with_zero_flops():
    x = torch.randn(4, 6)
    counts = _by_op(lambda: (x.view(24), x.t(), x.transpose(0, 1), x[1:3]))
    assert counts["aten.view"] == counts["aten.t"] == counts["aten.transpose"] == counts["aten.slice"] == 0


def test_an_op_with_no_rule_is_listed_not_dropped():
    lib = torch.library.Library("otel_flops_test", "FRAGMENT")
    lib.define("mystery(Tensor x) -> Tensor")
    lib.impl("mystery", lambda x: x * 2, "CPU")
    with otel_flops.track() as tracker:
        torch.ops.otel_flops_test.mystery(torch.randn(3))
    assert tracker.report()["uncounted_ops"].get("otel_flops_test.mystery") == 1


def _unfused(fn):
    """``fn``'s counts with the MultiheadAttention / TransformerEncoderLayer fast path off."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _by_op(fn)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)


def test_transformer_fast_path_counts_what_its_unfused_path_counts():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        fused, unfused = _by_op(lambda: layer(x)), _unfused(lambda: layer(x))
    assert set(fused) - {"aten.empty"} == {"aten._transformer_encoder_layer_fwd"}
    assert fused["aten._transformer_encoder_layer_fwd"] == sum(unfused.values()) == 47520
