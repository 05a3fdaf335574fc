"""Phases detected with no help from the user, and backward measured through the engine."""

from __future__ import annotations

import torch
from conftest import training_step
from torch import nn

import otel_flops


def _report(fn):
    with otel_flops.track() as tracker:
        fn()
    return tracker.report()


def test_training_step_has_every_phase_and_they_sum_to_the_total(workload_name):
    report = _report(lambda: training_step(workload_name))
    phases = report["phases"]
    for name in ("forward", "backward", "loss", "optimizer"):
        assert phases[name]["flops"] > 0, name
    assert sum(p["flops"] for p in phases.values()) == report["totals"]["flops"]
    assert sum(p["bops"] for p in phases.values()) == report["totals"]["bops"]
    assert report["steps"] == 1


def _family_by_phase(report_ledger_items, families):
    out: dict[str, int] = {}
    for key, totals in report_ledger_items:
        if key.family in families:
            out[key.phase] = out.get(key.phase, 0) + totals.flops
    return out


def test_resnet_backward_is_about_twice_forward_on_matmul_and_conv():
    with otel_flops.track() as tracker:
        training_step("resnet18")
        by_phase = _family_by_phase(tracker.session.ledger.items(), {"matmul", "conv"})
    ratio = by_phase["backward"] / by_phase["forward"]
    assert 1.9 <= ratio <= 2.1, ratio


def test_mlp_phases_match_hand_derived_matmul_counts():
    """784-512-512-10 MLP, batch 16: forward 2*B*sum(in*out); backward twice that, less the
    first layer's grad-input (the data needs no gradient)."""
    layers = [(784, 512), (512, 512), (512, 10)]
    batch = 16
    forward = sum(2 * batch * i * o for i, o in layers)
    backward = 2 * forward - 2 * batch * 784 * 512
    with otel_flops.track() as tracker:
        training_step("mlp")
        by_phase = _family_by_phase(tracker.session.ledger.items(), {"matmul"})
    assert by_phase["forward"] == forward
    assert by_phase["backward"] == backward


def test_inference_preprocessing_and_explicit_phase():
    model = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with otel_flops.track(model) as tracker:
        with otel_flops.phase("augment"):
            x = x * 2  # 24 elementwise FLOPs
        scaled = x + 1  # outside the model, before any forward: preprocessing
        with torch.no_grad():
            model(scaled)
    phases = tracker.report()["phases"]
    assert phases["augment"]["flops"] == 24
    assert phases["preprocessing"]["flops"] == 24
    assert phases["inference"]["flops"] == 2 * 3 * 8 * 4
    assert "forward" not in phases


def test_functional_loss_after_forward_and_clipping_after_backward():
    model = nn.Linear(8, 4)
    x, y = torch.randn(5, 8), torch.randint(0, 4, (5,))
    with otel_flops.track(model) as tracker:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    phases = tracker.report()["phases"]
    # log_softmax (5 per element) + nll (one per target)
    assert phases["loss"]["flops"] == 5 * 5 * 4 + 5
    assert phases["optimizer"]["flops"] > 0  # the norm and the scaling of the gradients
    assert "preprocessing" not in phases or phases["preprocessing"]["flops"] == 0


def test_loss_module_inside_forward_window():
    model = nn.Sequential(nn.Linear(4, 4))
    criterion = nn.MSELoss()
    x = torch.randn(2, 4)
    with otel_flops.track(model) as tracker:
        criterion(model(x), torch.zeros(2, 4))
    report = tracker.report()
    assert report["phases"]["loss"]["flops"] == 3 * 8
    assert report["by_model"]["Sequential"]["flops"] > 0
