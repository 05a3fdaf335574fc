"""Steady mode is exact: per-phase totals equal full mode's over a varied 200-step run."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import otel_flops
from otel_flops.torch import steady


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.block = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 2, 64, batch_first=True), 1,
                                           enable_nested_tensor=False)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 50)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.block(self.embed(tokens))))


def _varied_run(steps: int = 200) -> None:
    """Shorter last batch, varying lengths, eval every 50 steps, two micro-batches a step,
    a layer frozen at step 100, autocast from step 150."""
    torch.manual_seed(0)
    model = TinyLM()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    data = torch.Generator().manual_seed(1)
    for step in range(steps):
        batch = 3 if step == steps - 1 else 4
        seq = (8, 12, 16)[step % 3]
        if step == 100:
            model.embed.weight.requires_grad_(False)
        optimizer.zero_grad(set_to_none=True)
        for _ in range(2):
            tokens = torch.randint(0, 50, (batch, seq + 1), generator=data)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=step >= 150):
                logits = model(tokens[:, :-1])
                loss = criterion(logits.float().reshape(-1, 50), tokens[:, 1:].reshape(-1)) / 2
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 49:
            model.eval()
            with torch.no_grad():
                model(torch.randint(0, 50, (2, 10), generator=data)).argmax(-1)
            model.train()


def _report(**overrides):
    with otel_flops.track(**overrides) as tracker:
        _varied_run()
    return tracker.report()


def _flops_by_op(report):
    return {op: (c["flops"], c["bops"]) for op, c in report["by_op"].items()}


@pytest.fixture(scope="module")
def full_report():
    return _report(mode="full")


@pytest.mark.parametrize("audit_every", [1000, 7])
def test_steady_equals_full_per_phase_and_op(full_report, audit_every):
    steady = _report(mode="steady", audit_every=audit_every)
    assert steady["mode"] == "steady" and full_report["mode"] == "full"
    assert steady["phases"] == full_report["phases"]
    # FLOPs and BOPs agree op by op; call counts of zero-FLOP bookkeeping ops (zero_grad's
    # profiler marks, the data's randint) can differ where an eval step shifts them between gaps
    assert _flops_by_op(steady) == _flops_by_op(full_report)
    assert steady["by_dtype"] == full_report["by_dtype"]
    assert steady["uncounted_ops"] == full_report["uncounted_ops"]
    assert steady["steps"] == full_report["steps"] == 200
    stats = steady["steady"]
    assert stats["mismatches"] == 0
    assert stats["replayed"] > 5 * stats["recorded"], stats  # most segments were not intercepted
    if audit_every == 7:
        assert stats["audited"] > 0


def test_an_audit_that_disagrees_is_reported_and_retraced():
    model = nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with otel_flops.track(mode="steady", audit_every=4) as tracker:
        for step in range(8):
            optimizer.zero_grad()
            out = model(torch.randn(2, 8))
            if step >= 2:
                out.detach().exp()  # extra work that neither the forward's signature nor its graph shows
            out.sum().backward()
            optimizer.step()
    report = tracker.report()
    stats = report["steady"]
    # every segment is audited at its 4th and 8th occurrence; only the forward's first audit
    # (step 3) sees the new work, and the count says it is incomplete
    assert stats["mismatches"] == 1 and stats["audited"] >= 2
    assert report["incomplete"] == [steady.INCOMPLETE["audit"].format(n=1)]


def test_no_tensor_is_kept_alive():
    import weakref

    model = nn.Linear(8, 8)
    with otel_flops.track(mode="steady"):
        x = torch.randn(4, 8)
        ref = weakref.ref(x)
        for _ in range(3):
            model(x).sum().backward()
        del x
        gc.collect()
        assert ref() is None


def _full_and_steady(run) -> dict:
    reports = {}
    for mode in ("full", "steady"):
        with otel_flops.track(mode=mode, energy=False) as tracker:
            run()
        reports[mode] = tracker.report()
    return reports


def test_a_new_model_first_trained_after_another_is_counted_from_its_first_step():
    """The second model's first forward starts right after a replayed optimizer step of the first."""
    from conftest import training_step

    def both():
        training_step("mlp", steps=3)
        training_step("resnet18", steps=3)

    reports = _full_and_steady(both)
    assert reports["steady"]["phases"] == reports["full"]["phases"]
    assert reports["steady"]["steady"]["replayed"] > 0


class _Jitter(nn.Module):
    """Extra work only in training mode, read in a helper method rather than in forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._maybe_jitter(x)

    def _maybe_jitter(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rand_like(x) if self.training else x


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_only_modules_whose_code_reads_training_enter_the_key():
    from otel_flops.torch.steady import reads_training

    assert reads_training(_Jitter) and reads_training(nn.Dropout) and reads_training(nn.BatchNorm2d)
    assert not reads_training(nn.Linear) and not reads_training(nn.Sequential) and not reads_training(nn.ReLU)
    assert reads_training(type(torch.jit.script(nn.Linear(2, 2))))  # code it cannot read counts as reading it


def test_a_submodule_switched_to_eval_alone_is_a_new_key():
    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 8), _Jitter(), nn.Linear(8, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for step in range(12):
            model[1].train(step < 6)  # the root's own flag never changes
            optimizer.zero_grad()
            model(torch.randn(4, 8)).sum().backward()
            optimizer.step()

    reports = _full_and_steady(run)
    assert reports["steady"]["phases"] == reports["full"]["phases"]
    assert reports["steady"]["steady"]["mismatches"] == 0


def test_stopped_and_started_again_it_replays_its_records():
    """The overhead benchmark pauses steady mode between blocks of steps; its records outlive a pause."""
    from conftest import BATCH, train_step

    from otel_flops.analysis.workloads import WORKLOADS

    workload = WORKLOADS["mlp"]
    model = workload.build()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = workload.make_batch(BATCH["mlp"], torch.device("cpu"))
    reports = {}
    for mode in ("full", "steady"):
        with otel_flops.track(mode=mode, energy=False) as tracker:
            for _ in range(3):
                train_step(model, optimizer, workload, x, y)
            if mode == "steady":
                counting = tracker.session._counting
                recorded = counting.stats()["recorded"]
                counting.stop()
                train_step(model, optimizer, workload, x, y)  # not counted
                counting.start()
            for _ in range(3):
                train_step(model, optimizer, workload, x, y)
        reports[mode] = tracker.report()
    assert reports["steady"]["phases"] == reports["full"]["phases"]
    assert reports["steady"]["steps"] == 6
    stats = reports["steady"]["steady"]
    assert stats["recorded"] == recorded and stats["replayed"] >= 6


def test_a_roots_own_pre_hooks_are_in_its_forward_on_every_step():
    """A forward pre-hook registered on the model before the session (FSDP2 gathers its parameters
    in one) runs inside the head both when the step is recorded and when it is replayed."""
    model = nn.Sequential(nn.Linear(8, 4))
    model.register_forward_pre_hook(lambda module, args: (args[0] * 2,), prepend=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def steps():
        for _ in range(4):
            optimizer.zero_grad()
            model(torch.ones(3, 8)).sum().backward()
            optimizer.step()

    reports = _full_and_steady(steps)
    assert reports["steady"]["phases"] == reports["full"]["phases"]
    assert reports["steady"]["by_op"]["aten.mul"] == reports["full"]["by_op"]["aten.mul"] == {
        "flops": 4 * 3 * 8, "bops": 4 * 3 * 8 * 32, "calls": 4}
    assert reports["steady"]["steady"]["replayed"] > 0
