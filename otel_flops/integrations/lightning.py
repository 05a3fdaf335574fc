"""Lightning (``lightning.pytorch``): the exact FLOPs of ``Trainer.fit``'s training in its loggers.

    trainer = L.Trainer(callbacks=[OtelFlopsCallback()])

Training (``on_train_start`` to ``on_train_end``) is counted in a session of its own (or the
active one: ``otel-flops run``). Every ``log_every_n_steps`` optimizer steps, and once at the end,
the metrics of ``TrainingRun.metrics`` (``otel_flops/flops``, ``otel_flops/flops_per_second``,
``otel_flops/mfu``, ``otel_flops/joules``, ...) go to every logger in ``trainer.loggers``
through ``log_metrics`` (as Lightning's LearningRateMonitor logs), with the optimizer step as the
step: as Python numbers, so FLOP counts stay exact (``pl_module.log`` would make them float32
tensors). Validation inside ``fit`` is counted too (phase ``inference``). A failure of ours is
contained (``otel_flops.containment``): the training goes on as without us.

The same callback for the older ``pytorch_lightning`` package is in
``otel_flops.integrations.pytorch_lightning``; both come from ``callback_class``.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch

from ..containment import Containment, contained
from .training import TrainingRun


class _Counting:
    """The callback's work, independent of the Lightning package that provides its base class."""

    def __init__(self) -> None:
        self.containment = Containment()
        self.run: TrainingRun | None = None
        self.report: dict[str, Any] | None = None  # the report the latest logged metrics came from
        self._logged_step = -1

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._begin()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._log(trainer, final=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._log(trainer, final=True)
        self.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.close()

    @contained("lightning callback (train start)", "the training runs uncounted")
    def _begin(self) -> None:
        self.run = TrainingRun.begin()
        self._logged_step = -1
        if self.run is not None:
            self.containment.ledger = self.run.session.ledger

    @contained("lightning callback (log)", "this step logs no otel_flops metrics")
    def _log(self, trainer: Any, final: bool) -> None:
        step = trainer.global_step
        if self.run is None:
            return
        if not final and (step in (0, self._logged_step) or step % max(trainer.log_every_n_steps, 1)):
            return
        self._logged_step = step
        metrics = self.run.metrics()
        self.report = self.run.report
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)

    @contained("lightning callback (train end)", "the session may stay open until the process ends")
    def close(self) -> None:
        """End the run (idempotent): at ``on_train_end``, or at ``on_exception``."""
        run, self.run = self.run, None
        if run is not None:
            run.end()


def callback_class(base: type) -> type:
    """Our callback on ``base`` (``lightning.pytorch.Callback`` or ``pytorch_lightning.Callback``)."""
    doc = "Counts ``fit``'s training and logs it to ``trainer.loggers`` (see otel_flops.integrations.lightning)."
    return type("OtelFlopsCallback", (_Counting, base), {"__module__": __name__, "__doc__": doc})


OtelFlopsCallback = callback_class(lightning.pytorch.Callback)


def add_callback(trainer: Any, callback_type: type) -> None:
    """Append a ``callback_type`` to ``trainer.callbacks`` unless it holds a callback of ours."""
    if not any(isinstance(c, _Counting) for c in trainer.callbacks):
        trainer.callbacks.append(callback_type())


def attach(trainer: Any) -> None:
    """Add our callback to a ``lightning.pytorch.Trainer`` (``otel_flops.integrations.attach_to_trainers``)."""
    add_callback(trainer, OtelFlopsCallback)
