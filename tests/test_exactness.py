"""Exactness against torch's FlopCounterMode, op by op, on full training steps (one process)."""

from __future__ import annotations

import torch
from conftest import training_step
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import otel_flops

# Ops that may stay uncounted in a training step: they do no arithmetic.
ALLOWED_UNCOUNTED = {"aten.t", "aten.view", "aten.detach", "aten._unsafe_view", "aten.expand", "aten.empty"}


def _ours(name: str) -> dict:
    with otel_flops.track() as tracker:
        training_step(name)
    return tracker.report()


def _torchs(name: str) -> dict[str, int]:
    with FlopCounterMode(display=False) as counter:
        training_step(name)
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def test_matches_flop_counter_mode_op_by_op(workload_name):
    ours = _ours(workload_name)["by_op"]
    theirs = _torchs(workload_name)
    assert theirs, "FlopCounterMode counted nothing; the comparison would be empty"
    known = {str(op) for op in flop_registry}
    shared = {op: ours[op]["flops"] for op in ours if op in known}
    assert shared == {op: n for op, n in theirs.items() if n or op in shared}


def test_counts_more_than_flop_counter_mode(workload_name):
    report = _ours(workload_name)
    theirs = sum(_torchs(workload_name).values())
    assert report["totals"]["flops"] > theirs
    families = set(report["by_family"])
    assert {"elementwise", "softmax", "loss"} <= families


def test_uncounted_ops_do_no_arithmetic(workload_name):
    report = _ours(workload_name)
    assert set(report["uncounted_ops"]) <= ALLOWED_UNCOUNTED
    assert report["errors"] == {}


def test_cpu_flash_attention_counted_like_sdpa():
    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    with otel_flops.track() as tracker:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out.sum().backward()
    by_op = tracker.report()["by_op"]
    b, h, s, d = 2, 4, 16, 8
    assert by_op["aten._scaled_dot_product_flash_attention_for_cpu"]["flops"] == b * h * (2 * s * d * s) * 2
    assert by_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"]["flops"] == b * h * 2 * s * s * d * 5
