"""The loss phase by what the code does: a loss function called inside a model's forward is ``loss``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import otel_flops

MODES = ("full", "steady")
BATCH, SEQ, VOCAB = 2, 8, 64


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=16,
                        attn_implementation="sdpa")
    return GPT2LMHeadModel(config)


def _phases(mode: str, step, repeats: int = 2) -> dict:
    """Phase totals of ``repeats`` identical training steps (steady mode replays the second)."""
    model = _gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))
    with otel_flops.track(mode=mode, energy=False) as tracker:
        for _ in range(repeats):
            optimizer.zero_grad()
            step(model, ids).backward()
            optimizer.step()
    report = tracker.report()
    assert not report["errors"] and not report["incomplete"]
    return report["phases"]


def _loss_inside(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, labels=ids).loss


def _loss_outside(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    """What transformers' ForCausalLMLoss does, written after the model returns."""
    logits = model(ids).logits.float()
    shifted = F.pad(ids, (0, 1), value=-100)[..., 1:]
    return F.cross_entropy(logits.view(-1, VOCAB), shifted.reshape(-1), ignore_index=-100)


def _cross_entropy_alone(mode: str) -> dict:
    """F.cross_entropy over B x T x V logits on its own: log-softmax + NLL, forward and backward."""
    logits = torch.randn(BATCH * SEQ, VOCAB, requires_grad=True)
    targets = F.pad(torch.randint(0, VOCAB, (BATCH, SEQ)), (0, 1), value=-100)[..., 1:].reshape(-1)
    with otel_flops.track(mode=mode, energy=False) as tracker:
        F.cross_entropy(logits, targets, ignore_index=-100)
    return tracker.report()


@pytest.mark.parametrize("mode", MODES)
def test_hugging_face_loss_with_labels_counts_as_loss(mode):
    inside = _phases(mode, _loss_inside)
    outside = _phases(mode, _loss_outside)
    assert inside == outside  # where the loss is computed does not change its phase
    alone = _cross_entropy_alone(mode)
    assert set(alone["by_op"]) >= {"aten._log_softmax", "aten.nll_loss_forward"}
    assert alone["by_op"]["aten._log_softmax"]["flops"] > 0
    assert inside["loss"]["flops"] == 2 * alone["phases"]["loss"]["flops"]  # two steps


@pytest.mark.parametrize("mode", MODES)
def test_loss_module_inside_forward_counts_as_loss_and_its_backward_as_backward(mode):
    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(6, 4)
            self.criterion = nn.CrossEntropyLoss()

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.criterion(self.linear(x), y)

    def run(inside: bool) -> dict:
        torch.manual_seed(0)
        model = WithLoss()
        x, y = torch.randn(5, 6), torch.randint(0, 4, (5,))
        with otel_flops.track(mode=mode, energy=False) as tracker:
            for _ in range(2):
                loss = model(x, y) if inside else F.cross_entropy(model.linear(x), y)
                loss.backward()
        return tracker.report()["phases"]

    inside, outside = run(True), run(False)
    assert inside == outside
    assert inside["loss"]["flops"] > 0 and inside["backward"]["flops"] > 0
    assert inside["forward"]["flops"] == 2 * 2 * 5 * 6 * 4  # the linear alone, two steps


@pytest.mark.parametrize("mode", MODES)
def test_functional_loss_inside_forward_counts_as_loss(mode):
    class Regressor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(self.linear(x), target)

    torch.manual_seed(0)
    model = Regressor()
    with otel_flops.track(mode=mode, energy=False) as tracker:
        model(torch.randn(4, 3), torch.randn(4, 2))
    phases = tracker.report()["phases"]
    assert phases["forward"]["flops"] == 2 * 4 * 3 * 2
    assert phases["loss"]["flops"] == tracker.report()["by_op"]["aten.mse_loss"]["flops"] > 0


def test_a_loss_with_grad_off_is_evaluation_work():
    """An evaluation's loss (grad off: no backward can follow), inside the forward (an HF model given
    labels) or through a loss module after it, is ``inference``: the training phases hold training's
    work alone (a Trainer's ``total_flos``). The same calls with grad on split the same FLOPs exactly
    into forward and loss."""
    model, criterion = _gpt2(), nn.CrossEntropyLoss()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))

    def phases(grad: bool) -> dict[str, int]:
        # Full mode: steady mode over-counts a loss after the session's last no-grad forward (phase aside).
        with otel_flops.track(mode="full", energy=False) as tracker, torch.set_grad_enabled(grad):
            for _ in range(2):
                model(ids, labels=ids)
                criterion(model(ids).logits.flatten(0, 1), ids.flatten())
        return {p: c["flops"] for p, c in tracker.report()["phases"].items() if c["flops"]}

    training, evaluation = phases(grad=True), phases(grad=False)
    assert set(training) == {"forward", "loss"} and training["loss"] > 0
    assert evaluation == {"inference": training["forward"] + training["loss"]}


def test_loss_functions_are_restored_after_the_session():
    before = F.cross_entropy
    with otel_flops.track(energy=False):
        assert F.cross_entropy is not before
    assert F.cross_entropy is before
