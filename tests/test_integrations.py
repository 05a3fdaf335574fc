"""Trainer integrations (otel_flops.integrations): real transformers.Trainer and Lightning Trainer runs on CPU.

Each run's logged FLOPs are checked against a ``track()`` run of the same seeded steps (exact
integers per phase), MFU against the report it came from (a peak set by OTEL_FLOPS_PEAK_FLOPS: a
CPU has none in the table), and the no-code path under ``otel-flops run`` against its report.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import otel_flops
from otel_flops import integrations

transformers = pytest.importorskip("transformers")
from hf_trainer import hf_trainer  # noqa: E402

from otel_flops.integrations.huggingface import OtelFlopsCallback  # noqa: E402
from otel_flops.integrations.training import TrainingRun  # noqa: E402

PEAK = 1e12  # FLOP/s, the OTEL_FLOPS_PEAK_FLOPS of the MFU test
TRAINING_PHASES = ("forward", "loss", "backward", "optimizer")
KEY = "otel_flops/"


def phases(entry: dict) -> dict[str, int]:
    return {k.removeprefix(KEY + "flops/"): v for k, v in entry.items() if k.startswith(KEY + "flops/")}


def reference(make, monkeypatch) -> dict:
    """The report of ``make()``'s training under ``track()`` with no callback (energy off: it changes no count)."""
    with monkeypatch.context() as m:
        m.setenv("OTEL_FLOPS_ENERGY", "off")
        with otel_flops.track() as tracker:
            make()
    return tracker.report()


class WaitForEnergy(transformers.TrainerCallback):
    """Holds training at its start until the session's energy sources measure (CodeCarbon takes a few
    seconds to start, longer than these 3 steps), as they do in any run longer than that."""

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        energy = otel_flops.session.active().energy
        deadline = time.monotonic() + 60
        while energy.unavailable is not None or not energy.reading().total_joules:
            if time.monotonic() > deadline:
                if os.environ.get("CI"):
                    pytest.fail(f"no energy source measures: {energy.unavailable}")
                pytest.skip(f"no energy source measures here: {energy.unavailable}")
            time.sleep(0.1)


def test_huggingface_logs_the_exact_count_mfu_and_energy(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_FLOPS_PEAK_FLOPS", str(PEAK))
    monkeypatch.setenv("OTEL_FLOPS_ENERGY_INTERVAL", "0.2")
    callback = OtelFlopsCallback()
    trainer = hf_trainer(tmp_path, [callback, WaitForEnergy()])
    trainer.train()
    expected = reference(lambda: hf_trainer(tmp_path).train(), monkeypatch)

    history = trainer.state.log_history
    steps = [e for e in history if "loss" in e]
    final = history[-1]
    assert [e["step"] for e in steps] == [1, 2, 3] and "train_runtime" in final
    assert all(KEY + "flops" in e for e in history)
    assert steps[0][KEY + "flops"] < steps[1][KEY + "flops"] < steps[2][KEY + "flops"] == final[KEY + "flops"]
    # The exact count, equal to track()'s per phase, and HF's total_flos replaced by its training phases'.
    assert final[KEY + "flops"] == expected["totals"]["flops"] > 0
    assert final[KEY + "bops"] == expected["totals"]["bops"]
    assert phases(final) == {p: c["flops"] for p, c in expected["phases"].items()}
    training = sum(expected["phases"][p]["flops"] for p in TRAINING_PHASES)
    assert final["total_flos"] == trainer.state.total_flos == training < expected["totals"]["flops"]
    # MFU: the report's, which is the exact FLOPs at the given peak over the session's seconds.
    mfu = callback.report["mfu"]
    assert final[KEY + "mfu"] == mfu["mfu"]
    assert final[KEY + "mfu"] == pytest.approx(final[KEY + "flops"] / PEAK / mfu["seconds"], rel=1e-9)
    # Energy (CodeCarbon's CPU-load model here): joules of the same report, and FLOP/J from them.
    energy = callback.report["energy"]
    assert energy["available"], energy
    assert final[KEY + "joules"] == energy["joules"] > 0
    assert final[KEY + "flops_per_joule"] == final[KEY + "flops"] / final[KEY + "joules"]
    assert otel_flops.session.active() is None  # the callback's session ended with training


def test_huggingface_attaches_once_under_process_wide_counting(monkeypatch, tmp_path):
    """With attaching on (what ``otel-flops run`` turns on), a Trainer made in a session gets the callback,
    and one given by hand is not doubled: the count is the session's, once."""
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    monkeypatch.setattr(integrations, "_attaching", False)  # restored at teardown: later tests attach nothing
    integrations.attach_to_trainers()
    with otel_flops.track() as tracker:
        auto = hf_trainer(tmp_path)
        by_hand = hf_trainer(tmp_path, [OtelFlopsCallback()])
        by_hand.add_callback(OtelFlopsCallback())  # a second one by hand: stays idle while the first counts
        before = tracker.session.ledger.work()[0]
        auto.train()
        middle = tracker.session.ledger.work()[0]
        by_hand.train()
        after = tracker.session.ledger.work()[0]
    ours = [[c for c in t.callback_handler.callbacks if isinstance(c, OtelFlopsCallback)] for t in (auto, by_hand)]
    assert [len(c) for c in ours] == [1, 2]
    assert auto.state.log_history[-1][KEY + "flops"] == middle - before
    assert by_hand.state.log_history[-1][KEY + "flops"] == after - middle
    for trainer in (auto, by_hand):  # total_flos: the training phases' FLOPs (preprocessing left out)
        final = trainer.state.log_history[-1]
        assert trainer.state.total_flos == sum(final[f"{KEY}flops/{p}"] for p in TRAINING_PHASES)
    assert middle - before == after - middle > 0  # the same seeded steps, counted once each
    assert "otel_flops/mfu" not in by_hand.state.log_history[-1]  # no GPU and no OTEL_FLOPS_PEAK_FLOPS


def test_huggingface_total_flos_is_training_alone_with_evaluation_on(monkeypatch, tmp_path):
    """Evaluation after every step (its loss too: grad off, so inference) stays out of total_flos, which
    equals a run without evaluation's training phases exactly."""
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    callback = OtelFlopsCallback()
    trainer = hf_trainer(tmp_path, [callback], evaluate=True)
    trainer.train()
    expected = reference(lambda: hf_trainer(tmp_path).train(), monkeypatch)
    phases_run = callback.report["phases"]
    assert phases_run["inference"]["flops"] > 0  # 3 evaluations ran and were counted
    training = sum(expected["phases"][p]["flops"] for p in TRAINING_PHASES)
    assert trainer.state.total_flos == training == sum(phases_run[p]["flops"] for p in TRAINING_PHASES)
    assert trainer.state.total_flos < callback.report["totals"]["flops"]


def test_huggingface_mfu_is_of_training_in_a_session_started_long_before(monkeypatch, tmp_path):
    """Joining a session that ran 2 s before training: MFU, FLOP/s and the report's seconds are training's."""
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    monkeypatch.setenv("OTEL_FLOPS_PEAK_FLOPS", str(PEAK))
    callback = OtelFlopsCallback()
    with otel_flops.track():
        trainer = hf_trainer(tmp_path, [callback])
        time.sleep(2.0)
        began = time.monotonic()
        trainer.train()
        training_seconds = time.monotonic() - began
    final = trainer.state.log_history[-1]
    seconds = callback.report["mfu"]["seconds"]
    assert 0 < seconds <= training_seconds  # the session's 2 s before training are not in it
    assert final[KEY + "mfu"] == pytest.approx(final[KEY + "flops"] / PEAK / seconds, rel=1e-9)
    assert final[KEY + "mfu"] > final[KEY + "flops"] / PEAK / training_seconds
    assert final[KEY + "flops_per_second"] > final[KEY + "flops"] / (training_seconds + 1.0)


NO_CODE_SCRIPT = """
    import json
    from hf_trainer import hf_trainer  # transformers only: nothing of otel_flops
    trainer = hf_trainer({out!r})
    trainer.train()
    print("HISTORY " + json.dumps(trainer.state.log_history))
"""


def test_otel_flops_run_attaches_the_callback_with_no_code_change(tmp_path):
    script, report = tmp_path / "train.py", tmp_path / "report.json"
    script.write_text(textwrap.dedent(NO_CODE_SCRIPT.format(out=str(tmp_path / "out"))))
    env = {**os.environ, "OTEL_FLOPS_ENERGY": "off", "PYTHONPATH": str(Path(__file__).parent)}
    result = subprocess.run([sys.executable, "-m", "otel_flops", "run", "--report", str(report), "--port", "0",
                             "--", sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("HISTORY "))
    history = json.loads(line.removeprefix("HISTORY "))
    final = json.loads(report.read_text())
    # The script does no counted work outside training, so the whole run's report is the training's.
    assert history[-1][KEY + "flops"] == final["totals"]["flops"] > 0
    assert history[-1]["total_flos"] == sum(final["phases"][p]["flops"] for p in TRAINING_PHASES)
    assert phases(history[-1]) == {p: c["flops"] for p, c in final["phases"].items()}
    assert sum(KEY + "flops" in e for e in history) == 4  # 3 steps and the train metrics, one set each


def lightning_run(package: str, callbacks=(), logger=False):
    """3 SGD steps of a 2-layer MLP (8-16-2) on 32 seeded samples, batch 8, then one validation batch
    (its forward alone), with ``package``'s Trainer."""
    pl = importlib.import_module(package)

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            self.net(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 8, generator=g), torch.randint(0, 2, (32,), generator=g))
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, log_every_n_steps=1, callbacks=list(callbacks),
                         logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, val_check_interval=3, num_sanity_val_steps=0)
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    trainer.fit(MLP(), loader, loader)
    return trainer


def memory_logger(package: str):
    """A ``package`` Logger that keeps what it is given, as a list of dicts with their step."""
    Logger = importlib.import_module(package).loggers.Logger  # noqa: N806

    class Memory(Logger):
        name, version = "memory", 0

        def __init__(self) -> None:
            super().__init__()
            self.history: list[dict] = []

        def log_hyperparams(self, params, *args, **kwargs) -> None:
            pass

        def log_metrics(self, metrics, step=None) -> None:
            self.history.append({**metrics, "step": step})

    return Memory()


@pytest.mark.parametrize("package", ["lightning.pytorch", "pytorch_lightning"])
def test_lightning_logs_the_exact_count_to_its_loggers(package, monkeypatch):
    pytest.importorskip(package)
    module = importlib.import_module(f"otel_flops.integrations.{package.partition('.')[0]}")
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    monkeypatch.delenv("OTEL_FLOPS_PEAK_FLOPS", raising=False)
    logger = memory_logger(package)
    callback = module.OtelFlopsCallback()
    assert isinstance(callback, importlib.import_module(package).Callback)
    lightning_run(package, [callback], logger)
    expected = reference(lambda: lightning_run(package), monkeypatch)

    assert [e["step"] for e in logger.history] == [1, 2, 3, 3]  # every step (log_every_n_steps=1), and the end
    final = logger.history[-1]
    # Training's phases equal track()'s; its preprocessing leaves out fit's set-up before training starts
    # (Lightning compares two scalars there: 4 FLOPs that track() around fit() counts).
    for phase in (*TRAINING_PHASES, "inference"):
        assert final[f"{KEY}flops/{phase}"] == expected["phases"][phase]["flops"] > 0, phase
    assert final[KEY + "flops"] == sum(phases(final).values())
    # By hand: an 8-16-2 MLP's forward at batch 8 is two addmm (2*m*n*k, as FlopCounterMode) + ReLU (1 per
    # element); 3 in training, 1 in validation (after the step logged last: the end's log has it).
    forward = 2 * 8 * 8 * 16 + 2 * 8 * 16 * 2 + 8 * 16
    assert (final[f"{KEY}flops/forward"], final[f"{KEY}flops/inference"]) == (3 * forward, forward)
    assert f"{KEY}flops/inference" not in logger.history[-2]
    assert not {KEY + "mfu", KEY + "joules", KEY + "flops_per_joule"} & final.keys()  # no peak, no energy
    assert final[KEY + "flops_per_second"] > 0
    assert otel_flops.session.active() is None


def test_lightning_mfu_is_of_training_in_a_session_started_long_before(monkeypatch):
    pytest.importorskip("lightning")
    from otel_flops.integrations.lightning import OtelFlopsCallback as LightningCallback

    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    monkeypatch.setenv("OTEL_FLOPS_PEAK_FLOPS", str(PEAK))
    logger, callback = memory_logger("lightning.pytorch"), LightningCallback()
    with otel_flops.track():
        time.sleep(2.0)
        began = time.monotonic()
        lightning_run("lightning.pytorch", [callback], logger)
        training_seconds = time.monotonic() - began
    final = logger.history[-1]
    seconds = callback.report["mfu"]["seconds"]
    assert 0 < seconds <= training_seconds  # the session's 2 s before training are not in it
    assert final[KEY + "mfu"] == pytest.approx(final[KEY + "flops"] / PEAK / seconds, rel=1e-9)
    assert final[KEY + "mfu"] > final[KEY + "flops"] / PEAK / training_seconds


def test_lightning_attaches_once_under_process_wide_counting(monkeypatch):
    pytest.importorskip("lightning")
    from otel_flops.integrations.lightning import OtelFlopsCallback as LightningCallback

    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")
    monkeypatch.setattr(integrations, "_attaching", False)  # restored at teardown: later tests attach nothing
    integrations.attach_to_trainers()
    auto, by_hand = memory_logger("lightning.pytorch"), memory_logger("lightning.pytorch")
    with otel_flops.track():
        first = lightning_run("lightning.pytorch", logger=auto)
        second = lightning_run("lightning.pytorch", [LightningCallback()], logger=by_hand)
    assert [sum(isinstance(c, LightningCallback) for c in t.callbacks) for t in (first, second)] == [1, 1]
    assert [e["step"] for e in auto.history] == [e["step"] for e in by_hand.history] == [1, 2, 3, 3]
    # Each fit's training alone, from the shared session: the same seeded steps, the same count.
    assert by_hand.history[-1] == {**auto.history[-1], KEY + "flops_per_second": by_hand.history[-1][
        KEY + "flops_per_second"]}
    assert auto.history[-1][f"{KEY}flops/forward"] == 3 * (2 * 8 * 8 * 16 + 2 * 8 * 16 * 2 + 8 * 16)
    assert auto.history[-1][f"{KEY}flops/inference"] == 2 * 8 * 8 * 16 + 2 * 8 * 16 * 2 + 8 * 16


def test_a_failure_of_ours_leaves_training_as_it_was(monkeypatch, tmp_path):
    """Our metrics failing at every log: training runs and logs exactly as without the callback (bitwise
    equal losses and gradient norms), the failure is counted in the report's errors, and the session ends."""
    monkeypatch.setenv("OTEL_FLOPS_ENERGY", "off")

    def broken(self):
        raise RuntimeError("injected")

    monkeypatch.setattr(TrainingRun, "metrics", broken)
    callback = OtelFlopsCallback()
    counted = hf_trainer(tmp_path, [callback])
    counted.train()
    bare = hf_trainer(tmp_path)
    bare.train()

    def plain(trainer):
        return [{k: v for k, v in e.items() if k in ("loss", "grad_norm", "learning_rate", "step")}
                for e in trainer.state.log_history]

    assert plain(counted) == plain(bare) and len(plain(bare)) == 4
    assert not any(k.startswith(KEY) for e in counted.state.log_history for k in e)
    assert counted.state.total_flos > 0  # store_flos still gets the exact count
    assert callback.run is None and otel_flops.session.active() is None
    assert callback.containment.ledger.errors["huggingface callback (log)"] == 4
