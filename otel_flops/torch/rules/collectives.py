"""Collectives: c10d ops (DDP's reducer, torch.distributed) move bytes and do no FLOPs worth counting.

``comm_bytes`` records the bytes of the tensors a rank puts in: its input (the shard of an
all-gather, the whole buffer of a reduce-scatter, the tensor of an all-reduce), read from the
op's schema (the first argument not named ``output*``), so that c10d's ops, which take their
output buffer first, and the functional collectives DTensor uses record the same bytes for the
same exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch.utils._pytree import tree_leaves

from .registry import REGISTRY, Rule, zero

COLLECTIVES = (
    "allreduce_", "allreduce_coalesced_", "allgather_", "_allgather_base_", "allgather_coalesced_",
    "allgather_into_tensor_coalesced_", "reduce_scatter_", "_reduce_scatter_base_",
    "reduce_scatter_tensor_coalesced_", "broadcast_", "reduce_", "gather_", "scatter_", "alltoall_",
    "alltoall_base_", "send", "recv_", "recv_any_source_",
)
FUNCTIONAL_COLLECTIVES = (
    "all_reduce", "all_reduce_coalesced", "all_gather_into_tensor", "all_gather_into_tensor_coalesced",
    "reduce_scatter_tensor", "reduce_scatter_tensor_coalesced", "all_to_all_single", "broadcast",
)


def comm_bytes(args: tuple, sent: int = 0) -> int:
    """Bytes of the tensors in argument ``sent`` (a tensor, or lists of them nested to any depth:
    ``reduce_scatter_`` takes ``Tensor[][]``)."""
    return sum(t.numel() * t.element_size() for t in tree_leaves(args[sent]) if isinstance(t, torch.Tensor))


def _sent_bytes(op: torch._ops.OpOverloadPacket) -> Callable[[tuple], int]:
    names = [a.name for a in op.default._schema.arguments]
    return partial(comm_bytes, sent=next((i for i, name in enumerate(names) if not name.startswith("output")), 0))


def register_collectives() -> None:
    for namespace, names in (("c10d", COLLECTIVES), ("_c10d_functional", FUNCTIONAL_COLLECTIVES)):
        ops = getattr(torch.ops, namespace)
        for name in names:
            try:
                op = getattr(ops, name)
                REGISTRY[op] = Rule("comm", zero, _sent_bytes(op))
            except (AttributeError, RuntimeError):
                continue  # this build of torch has no such collective


register_collectives()
