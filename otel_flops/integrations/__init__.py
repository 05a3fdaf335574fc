"""Trainer integrations: exact FLOPs, FLOP/s, MFU and energy in a trainer's own logs.

- ``otel_flops.integrations.huggingface.OtelFlopsCallback``: a ``transformers.TrainerCallback``;
- ``otel_flops.integrations.lightning.OtelFlopsCallback``: a ``lightning.pytorch.Callback``
  (``otel_flops.integrations.pytorch_lightning`` for the ``pytorch_lightning`` package).

Under process-wide counting (``otel-flops run``, ``opentelemetry-instrument``) every Trainer made
while a session is active gets the callback without a code change (``attach_to_trainers``); one
added by hand as well is not doubled (``training.TrainingRun`` opens one run per process).
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable
from typing import Any

import wrapt

from ..containment import Containment

# Trainer module -> our integration module, whose ``attach(trainer)`` adds its callback to a Trainer.
TRAINERS = {
    "transformers.trainer": "otel_flops.integrations.huggingface",
    "lightning.pytorch.trainer.trainer": "otel_flops.integrations.lightning",
    "pytorch_lightning.trainer.trainer": "otel_flops.integrations.pytorch_lightning",
}

_attaching = False
_containment = Containment()
_wrapped: set[tuple[int, str]] = set()


def attach_to_trainers() -> None:
    """From now on, a Trainer of the libraries in ``TRAINERS`` made while a session is active gets
    our callback (``Trainer.__init__`` is wrapped at once where the library is imported, else when it is)."""
    global _attaching
    if _attaching:
        return
    _attaching = True
    for module in TRAINERS:
        wrapt.register_post_import_hook(_follow, module)


def _follow(module: types.ModuleType) -> None:
    """The post-import hook of a trainer module: wrap its ``Trainer.__init__``. It imports nothing
    here: the library may still be importing (``lightning.pytorch`` is while its trainer module loads)."""
    integration = TRAINERS[module.__name__]

    def init(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        wrapped(*args, **kwargs)
        if _attaching:
            _containment.guard("trainer integration (attach)", "this Trainer runs without our callback",
                               _attach)(integration, instance)

    wrap_once(module.Trainer, {"__init__": init})


def _attach(integration: str, trainer: Any) -> None:
    from ..session import active

    if active() is not None:
        importlib.import_module(integration).attach(trainer)


def wrap_once(cls: type, wrappers: dict[str, Callable[..., Any]]) -> None:
    """Wrap each method ``name`` of ``cls`` with ``wrappers[name]`` (a ``wrapt`` wrapper), once per
    class and name however often a post-import hook runs."""
    for name, wrapper in wrappers.items():
        if (id(cls), name) not in _wrapped:
            _wrapped.add((id(cls), name))
            wrapt.wrap_function_wrapper(cls, name, wrapper)
