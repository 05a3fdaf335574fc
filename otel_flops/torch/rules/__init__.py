"""FLOP rules for ATen ops: one small registered function per op family, one module per family.

Every op that torch's FlopCounterMode counts uses the same formula here, so totals agree with it
exactly, except the weight gradient of grouped convolutions, where torch 2.13's FlopCounterMode
is wrong (conv.py). Everything else follows the conventions in DESIGN.md and the README (a
multiply-add is 2 FLOPs; elementwise ops count max(N_in, N_out); reductions count N_in; views,
copies, allocation and indexing count 0); each family's module states its formulas and sources.

``resolve(func)`` finds the rule for an op overload: the explicit registry first, then generic
classes by ATen's own schema (the in-place form of a registered op; views, ``*_copy`` and in-place
stride ops: 0 FLOPs; a composite's own decomposition; random sampling: 0 FLOPs; the
``pointwise`` and ``reduction`` tags). An op with none is uncounted.
"""

from __future__ import annotations

from typing import Any

import torch

from . import attention, collectives, conv, fft, linalg, norms, products, quantized, resample, rnn, zero  # noqa: F401
from .decompose import decomposition_rule, is_composite
from .elementwise import REDUCTION_RULE, elementwise_rule
from .registry import BY_NAME, REGISTRY, Rule, RuleFn, aten, flop_rule
from .registry import zero as zero_rule

__all__ = ["REGISTRY", "Rule", "RuleFn", "flop_rule", "resolve"]

ZERO_RULE = Rule("zero", zero_rule)


def _foreach_elementwise(args: tuple, kwargs: dict, out: Any) -> int:
    """Each list element is one elementwise op: the sum over the first tensor list."""
    return sum(t.numel() for t in args[0])


FOREACH_RULE = Rule("optimizer", _foreach_elementwise)
FOREACH_REDUCTION_RULE = Rule("reduction", _foreach_elementwise)
FUSED_ADAM_PER_ELEMENT = 9  # the single-tensor Adam(W) path, op for op, per parameter element


@flop_rule("optimizer", aten._fused_adam_, aten._fused_adamw_, aten._fused_adam, aten._fused_adamw)
def fused_adam_flops(args: tuple, kwargs: dict, out: Any) -> int:
    return FUSED_ADAM_PER_ELEMENT * sum(t.numel() for t in args[0])


def _is_view(func: Any) -> bool:
    returns = func._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


def _is_zero_by_schema(func: torch._ops.OpOverload, name: str) -> bool:
    """Views, their ``*_copy`` variants and in-place stride changes: no arithmetic."""
    tags = func.tags
    return _is_view(func) or torch.Tag.inplace_view in tags or torch.Tag.view_copy in tags or name.endswith("_copy")


def _functional_rule(namespace: str, name: str) -> Rule | None:
    """``addmm_`` counts as ``addmm``: an in-place op does the arithmetic of its functional form."""
    functional = getattr(aten, name[:-1], None) if namespace == "aten" and name.endswith("_") else None
    if functional is None:
        return None
    overloads = functional.overloads()
    return resolve(getattr(functional, "default" if "default" in overloads else overloads[0])) if overloads else None


def resolve(func: Any) -> Rule | None:
    """The rule for an ATen overload, or None when the op is uncounted. Callers cache this."""
    packet = getattr(func, "overloadpacket", None)
    rule = REGISTRY.get(packet)
    if rule is not None:
        return rule
    name = getattr(func, "__name__", "")
    if name.startswith("_foreach_"):
        return FOREACH_REDUCTION_RULE if name.startswith("_foreach_norm") else FOREACH_RULE
    if not isinstance(func, torch._ops.OpOverload):
        return None
    namespace, short = func.namespace, packet.__name__
    rule = BY_NAME.get(f"{namespace}::{short}") or _functional_rule(namespace, short)
    if rule is not None:
        return rule
    if _is_zero_by_schema(func, short):
        return ZERO_RULE
    if is_composite(func):  # before the tags: a composite such as dropout is tagged random
        return decomposition_rule(func, resolve)
    if torch.Tag.nondeterministic_seeded in func.tags:  # sampling: no arithmetic on values
        return ZERO_RULE
    if torch.Tag.pointwise in func.tags:
        return elementwise_rule(short)
    if torch.Tag.reduction in func.tags:
        return REDUCTION_RULE
    return None


