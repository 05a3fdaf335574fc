"""torch's own operator database (OpInfo): every op with float32 CPU samples, forward and backward,
under full mode, leaves nothing in ``uncounted_ops`` and records no counting error."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils._pytree import tree_flatten

import otel_flops

common_methods_invocations = pytest.importorskip("torch.testing._internal.common_methods_invocations")

SAMPLES = 2
CHUNKS = 4  # the database in four slices, so a failure names a smaller set of ops
CUDA_ONLY = "jiterator"  # jiterator ops compile CUDA kernels: no CPU sample runs


def _ops() -> list:
    return [op for op in common_methods_invocations.op_db
            if torch.float32 in op.supported_dtypes("cpu") and not op.name.startswith(CUDA_ONLY)]


def _differentiable(op) -> bool:
    return op.supports_autograd and torch.float32 in op.supported_backward_dtypes("cpu")


def _run(op) -> int:
    """Two samples of ``op``, each forward and (where differentiable) backward; returns samples run."""
    grad = _differentiable(op)
    samples = list(op.sample_inputs("cpu", torch.float32, requires_grad=grad))[:SAMPLES]
    for sample in samples:
        out = op(sample.input, *sample.args, **sample.kwargs)
        if grad:
            outputs = [t for t in tree_flatten(out)[0]
                       if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()]
            if outputs:
                sum(t.sum() for t in outputs).backward()
    return len(samples)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_opinfo_op_is_counted(chunk):
    ops = _ops()[chunk::CHUNKS]
    ran = 0
    with warnings.catch_warnings(), otel_flops.track(mode="full", energy=False) as tracker:
        warnings.simplefilter("ignore")
        for op in ops:
            ran += _run(op) > 0
    report = tracker.report()
    assert ran > 150, f"only {ran} of {len(ops)} ops had samples"
    assert report["uncounted_ops"] == {}
    assert report["errors"] == {}
    assert report["totals"]["flops"] > 0
