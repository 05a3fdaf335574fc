"""Hugging Face ``transformers.Trainer``: the exact FLOPs of training in its logs and ``total_flos``.

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[OtelFlopsCallback()])

Training is counted in a session of its own (or the active one: ``otel-flops run``). Every
``Trainer.log`` during training (each ``logging_steps``, and the final train metrics) carries the
metrics of ``TrainingRun.metrics`` (``otel_flops/flops``, ``otel_flops/flops_per_second``,
``otel_flops/mfu``, ``otel_flops/joules``, ...): they are added to the logs before the Trainer
stores them, so they reach ``state.log_history`` and every ``report_to`` integration, whatever
the callbacks' order. ``state.total_flos`` (HF's estimate, 6 x non-embedding parameters x tokens,
of training alone) becomes the exact count of training: ``Trainer.store_flos`` is given the FLOPs
of the training phases (forward, loss, backward, optimizer) counted since it last ran instead of
the estimate, and sums them over ranks as it does its own; evaluation during training (the
inference phase) and data preprocessing are left out, as HF leaves them out of its own. A resumed
run keeps the ``total_flos`` of its checkpoint and adds this run's count.

The Trainer's ``log``, ``store_flos`` and ``train`` are wrapped once, at the import of this module
or of ``transformers.trainer``, whichever is later; they act only for a Trainer that holds this
callback. A failure of ours is contained (``otel_flops.containment``): the training and its own
logs go on as without us.
"""

from __future__ import annotations

import types
from typing import Any

import wrapt
from transformers import TrainerCallback

from ..containment import Containment, contained
from . import wrap_once
from .training import TrainingRun


class OtelFlopsCallback(TrainerCallback):
    """Counts the training between ``on_train_begin`` and ``on_train_end`` (see the module)."""

    def __init__(self) -> None:
        self.containment = Containment()
        self.run: TrainingRun | None = None
        self.report: dict[str, Any] | None = None  # the report the latest logged metrics came from
        self._stored = 0  # FLOPs already handed to Trainer.store_flos

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._begin()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    @contained("huggingface callback (train begin)", "the training runs uncounted")
    def _begin(self) -> None:
        self.run = TrainingRun.begin()
        self._stored = 0
        if self.run is not None:
            self.containment.ledger = self.run.session.ledger

    @contained("huggingface callback (train end)", "the session may stay open until the process ends")
    def close(self) -> None:
        """End the run (idempotent): at ``on_train_end``, or when ``train`` raised before it."""
        run, self.run = self.run, None
        if run is not None:
            run.end()

    @contained("huggingface callback (log)", "this log has no otel_flops metrics")
    def add_metrics(self, logs: dict[str, Any]) -> None:
        """Add the run's metrics (FLOPs, FLOP/s, MFU, joules, FLOP/J) to ``logs``, in place."""
        if self.run is not None:
            logs.update(self.run.metrics())
            self.report = self.run.report

    @contained("huggingface callback (total_flos)", "total_flos keeps the Trainer's estimate")
    def flops_to_store(self) -> int | None:
        """Training-phase FLOPs counted since the last call (for ``Trainer.current_flos``), or None when idle."""
        if self.run is None:
            return None
        flops = self.run.training_flops()
        delta, self._stored = flops - self._stored, flops
        return delta


def _ours(trainer: Any) -> OtelFlopsCallback | None:
    """The trainer's callback of ours that is counting, if any."""
    handler = getattr(trainer, "callback_handler", None)
    for callback in getattr(handler, "callbacks", ()):
        if isinstance(callback, OtelFlopsCallback) and callback.run is not None:
            return callback
    return None


def attach(trainer: Any) -> None:
    """Add our callback to ``trainer`` unless it has one (``otel_flops.integrations.attach_to_trainers``)."""
    if not any(isinstance(c, OtelFlopsCallback) for c in trainer.callback_handler.callbacks):
        trainer.add_callback(OtelFlopsCallback())


def _log(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    logs = args[0] if args else kwargs.get("logs")
    callback = _ours(instance)
    if callback is not None and isinstance(logs, dict):
        callback.add_metrics(logs)
    return wrapped(*args, **kwargs)


def _store_flos(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    callback = _ours(instance)
    flops = callback.flops_to_store() if callback is not None else None
    if flops is not None:
        instance.current_flos = flops
    return wrapped(*args, **kwargs)


def _train(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    try:
        return wrapped(*args, **kwargs)
    finally:
        callback = _ours(instance)
        if callback is not None:
            callback.close()


WRAPPERS = {"log": _log, "store_flos": _store_flos, "train": _train}


def patch(module: types.ModuleType) -> None:
    """Wrap ``module.Trainer``'s methods in ``WRAPPERS`` (the post-import hook of ``transformers.trainer``)."""
    wrap_once(module.Trainer, WRAPPERS)


wrapt.register_post_import_hook(patch, "transformers.trainer")
