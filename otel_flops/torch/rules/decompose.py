"""Composite ops seen whole (under inference_mode) that have no rule of their own: count their decomposition.

torch runs a CompositeImplicitAutograd op as a sequence of other ops; with autograd on or under
no_grad the counting mode sees those. Under inference_mode it sees the composite itself. Its
count here is the sum of the rules of the ops its own decomposition runs, replayed once per signature of shapes,
dtypes and arguments,
so inference_mode counts what no_grad counts. The replay runs on fake tensors of the same devices
(no data, no RNG, no effect on the caller), so a composite picks the kernels it picks for real.
Hot composites (linear, conv, matmul, norms, softmax, SDPA, RNNs) have direct rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from .registry import Rule

CACHE_LIMIT = 4096  # signatures kept; a full cache starts over


class DecompositionUncounted(LookupError):
    """An op inside a composite's decomposition has no rule: the composite cannot be counted."""


def _signature(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype, x.layout)
    if isinstance(x, (list, tuple)):
        return tuple(_signature(v) for v in x)
    if isinstance(x, dict):
        return tuple((k, _signature(v)) for k, v in x.items())
    try:
        hash(x)
    except TypeError:
        return id(x)
    return x


class _Summing(TorchDispatchMode):
    """Adds up the rules of every op it sees."""

    def __init__(self, resolve: Callable[[Any], Rule | None]) -> None:
        super().__init__()
        self.flops = 0
        self._resolve = resolve

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rule = self._resolve(func)
        if rule is None:
            raise DecompositionUncounted(f"{func} has no FLOP rule")
        self.flops += rule.count(args, kwargs, out)
        return out


def decomposition_rule(func: Any, resolve: Callable[[Any], Rule | None]) -> Rule:
    """A rule counting ``func`` as the ops of its CompositeImplicitAutograd decomposition.

    Raises DecompositionUncounted (contained by the counting mode) when one of them has no rule.
    """
    cache: dict[Any, int] = {}

    def count(args: tuple, kwargs: dict, out: Any) -> int:
        key = _signature((args, kwargs))
        flops = cache.get(key)
        if flops is None:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            flops = cache[key] = _replay(func, args, kwargs, resolve)
        return flops

    return Rule("composite", count)


def _replay(func: Any, args: tuple, kwargs: dict, resolve: Callable[[Any], Rule | None]) -> int:
    """The FLOPs of ``func``'s decomposition, run on fake copies of its arguments under no_grad."""
    with torch.inference_mode(False), torch.no_grad(), FakeTensorMode() as fake:
        fake_args, fake_kwargs = tree_map(
            lambda x: fake.from_tensor(x) if isinstance(x, torch.Tensor) else x, (args, kwargs)
        )
        with _Summing(resolve) as summing:
            func.decompose(*fake_args, **fake_kwargs)
    return summing.flops


def is_composite(func: torch._ops.OpOverload) -> bool:
    """Whether ``func`` has a CompositeImplicitAutograd kernel (ops outside the dispatcher have none)."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")
    except RuntimeError:
        return False
