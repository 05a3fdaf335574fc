"""The rule registry: one small registered function per ATen op family, and the helpers rules share.

A rule takes the op's raw ``(args, kwargs, out)`` and returns an integer FLOP count. Raw
tensors, not pytree-mapped shapes, keep the per-op cost low.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

aten = torch.ops.aten

RuleFn = Callable[[tuple, dict, Any], int]
# The dtype that sets an op's width when its tensors do not show it (a dynamically quantized op's packed int8 weight).
WidthFn = Callable[[tuple, dict], Any]


@dataclass(frozen=True)
class Rule:
    family: str
    count: RuleFn
    comm_bytes: Callable[[tuple], int] | None = None  # collectives: bytes moved, not FLOPs
    width: WidthFn | None = None  # None: the widest operand's dtype


# Keyed by ATen overload packet.
REGISTRY: dict[Any, Rule] = {}
# Ops of namespaces that exist only once their Python module is imported (FSDP2's copy-ins,
# torch.nn's chunked linear cross-entropy), keyed by qualified name ("fsdp::chunk_cat").
BY_NAME: dict[str, Rule] = {}


def flop_rule(family: str, *packets: Any, width: WidthFn | None = None) -> Callable[[RuleFn], RuleFn]:
    """Register ``fn`` as the rule of ``packets`` (ATen overload packets, or "ns::name" strings)."""

    def register(fn: RuleFn) -> RuleFn:
        for packet in packets:
            if isinstance(packet, str):
                BY_NAME[packet] = Rule(family, fn, width=width)
            else:
                REGISTRY[packet] = Rule(family, fn, width=width)
        return fn

    return register


def packets(*names: str) -> list[Any]:
    """The ATen packets of ``names`` that this build of torch has (CUDA-only ops may be absent)."""
    return [getattr(aten, name) for name in names if hasattr(aten, name)]


def numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def tensors(args: tuple) -> list[torch.Tensor]:
    """Top-level tensor arguments, including those inside list arguments."""
    found: list[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(x for x in a if isinstance(x, torch.Tensor))
    return found


def first(out: Any) -> Any:
    return out[0] if isinstance(out, (tuple, list)) else out


def largest(args: tuple) -> int:
    """The element count of the largest tensor argument."""
    return max((t.numel() for t in tensors(args)), default=0)


def zero(args: tuple, kwargs: dict, out: Any) -> int:
    return 0


def per_element(n: int, source: str = "args0") -> RuleFn:
    """A rule of ``n`` FLOPs per element of the first argument (``source="largest"``: of the largest)."""

    def count(args: tuple, kwargs: dict, out: Any) -> int:
        return n * (largest(args) if source == "largest" else numel(args[0]))

    return count
