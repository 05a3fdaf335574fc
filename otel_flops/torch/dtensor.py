"""DTensor work counted where it runs: on each rank's local shard, never at the logical shape.

A dispatch mode sees a DTensor op once, with the DTensor's logical (whole-tensor) shapes, and
by default never sees the local ops DTensor runs for it. So the counting mode declines DTensor
ops (returns NotImplemented): DTensor then redistributes its inputs and runs the op on its
local tensors, and those ops come back to the mode as plain tensors with the shard's shapes,
whatever the placement (Shard, Replicate, Partial). The collectives a redistribution needs come
back the same way and land in ``comm_bytes``. Summing a job's ranks gives the job's work.

DTensor decides its output placement by running the op once per signature on fake tensors
(sharding propagation); that is no work, so nothing is counted while a fake-tensor mode is
active.
"""

from __future__ import annotations

import sys

import torch

# Wrapper subclasses whose local work reaches the dispatcher, by (module, class name).
DELEGATING = (("torch.distributed.tensor", "DTensor"),)

_delegates: dict[type, bool] = {}
_fake_key = torch._C._TorchDispatchModeKey.FAKE
_infra_mode = torch._C._get_dispatch_mode


def delegated(types: tuple[type, ...]) -> bool:
    """Whether an op on these tensor subclasses should be left to them, to be counted from the
    local ops they run (cached per type: a few dict lookups per op that carries a subclass)."""
    for kind in types:
        found = _delegates.get(kind)
        if found is None:
            found = _delegates[kind] = _is_delegating(kind)
        if found:
            return True
    return False


def _is_delegating(kind: type) -> bool:
    for module_name, name in DELEGATING:
        module = sys.modules.get(module_name)  # not imported yet: none of its tensors exist
        cls = getattr(module, name, None) if module is not None else None
        if cls is not None and issubclass(kind, cls):
            return True
    return False


def propagating() -> bool:
    """Whether ops run on fake tensors now (DTensor's sharding propagation): nothing to count."""
    return _infra_mode(_fake_key) is not None
