"""Instrumentation never changes a model's results: outputs and gradients are bitwise identical."""

from __future__ import annotations

import torch
from conftest import BATCH

import otel_flops
from otel_flops.analysis.workloads import WORKLOADS


def _forward_backward(name: str):
    torch.manual_seed(1)
    workload = WORKLOADS[name]
    model = workload.build()
    x, y = workload.make_batch(BATCH[name], torch.device("cpu"))
    out = model(x)
    workload.loss(out, y).backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_outputs_and_gradients_bitwise_identical(workload_name):
    bare_out, bare_grads = _forward_backward(workload_name)
    with otel_flops.track():
        out, grads = _forward_backward(workload_name)
    assert torch.equal(out, bare_out)
    assert len(grads) == len(bare_grads)
    assert all(torch.equal(g, b) for g, b in zip(grads, bare_grads))
