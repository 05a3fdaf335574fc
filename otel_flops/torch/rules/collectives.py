"""Collectives: c10d ops (DDP's reducer, torch.distributed) move bytes and do no FLOPs worth counting.

Their first argument holds the tensors sent; its bytes are recorded as ``comm_bytes``.
"""

from __future__ import annotations

import torch

from .registry import REGISTRY, Rule, tensors, zero

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


def comm_bytes(args: tuple) -> int:
    return sum(t.numel() * t.element_size() for t in tensors(args[:1]))


def register_collectives() -> None:
    for namespace, names in (("c10d", COLLECTIVES), ("_c10d_functional", FUNCTIONAL_COLLECTIVES)):
        ops = getattr(torch.ops, namespace)
        for name in names:
            try:
                REGISTRY[getattr(ops, name)] = Rule("comm", zero, comm_bytes)
            except (AttributeError, RuntimeError):
                continue  # this build of torch has no such collective


register_collectives()
