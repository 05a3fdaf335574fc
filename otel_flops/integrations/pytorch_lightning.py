"""The Lightning callback (``otel_flops.integrations.lightning``) for the ``pytorch_lightning`` package."""

from __future__ import annotations

from typing import Any

import pytorch_lightning

from .lightning import add_callback, callback_class

OtelFlopsCallback = callback_class(pytorch_lightning.Callback)


def attach(trainer: Any) -> None:
    """Add our callback to a ``pytorch_lightning.Trainer`` (``otel_flops.integrations.attach_to_trainers``)."""
    add_callback(trainer, OtelFlopsCallback)
