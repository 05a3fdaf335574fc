"""What decides a segment's work, as hashable values: the signatures steady mode keys on.

A tensor's signature is its shape, dtype, device and requires_grad; a nested tensor's holds
every component's shape. Tensors are found wherever they sit in the arguments: lists, tuples,
dicts, dataclasses and the attributes of plain objects (a batch object), to ``MAX_DEPTH``
levels and ``MAX_NODES`` values. Values that steer control flow (numbers, strings, flags,
enums) enter as they are. What cannot be described within those bounds raises ``Unkeyable``:
its segment is intercepted in full instead of replayed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import torch

Tensor = torch.Tensor
PLAIN = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size, enum.Enum)
MAX_DEPTH = 6
MAX_NODES = 512


class Unkeyable(Exception):
    """A value whose work-deciding content cannot be described in a key."""


def tensor_signature(t: Tensor) -> tuple:
    if t.is_nested:
        return _nested_signature(t)
    return (t.shape, t.dtype, t.device, t.requires_grad)


def _nested_signature(t: Tensor) -> tuple:
    """Nested tensors have no single shape: their components' shapes decide the work. Read with
    Python dispatch off, so a recording dispatch mode does not see the reads as the step's ops."""
    with torch._C._DisableTorchDispatch():
        if t.layout == torch.jagged:
            sizes: Any = (tuple(t.offsets().tolist()), tuple(t.shape[t._ragged_idx + 1:]))
        else:
            sizes = tuple(map(tuple, t._nested_tensor_size().tolist()))
    return ("nested", t.layout, sizes, t.dtype, t.device, t.requires_grad)


def value_signature(value: Any) -> Any:
    """A hashable description of ``value`` that differs whenever the work it feeds may differ."""
    return _signature(value, 0, [MAX_NODES])


def _signature(value: Any, depth: int, budget: list[int]) -> Any:
    if isinstance(value, Tensor):
        return tensor_signature(value)
    if isinstance(value, PLAIN):
        return value
    budget[0] -= 1
    if depth >= MAX_DEPTH or budget[0] < 0:
        raise Unkeyable(f"arguments nested deeper than {MAX_DEPTH} levels or holding over {MAX_NODES} values")
    depth += 1
    if isinstance(value, (list, tuple)):
        return (type(value), tuple([_signature(v, depth, budget) for v in value]))
    if isinstance(value, dict):
        return (type(value), tuple([(k, _signature(v, depth, budget)) for k, v in value.items()]))
    if isinstance(value, torch.nn.Module):
        return (type(value), id(value))  # a module argument's own work is keyed at its own root
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return (type(value), tuple([_signature(getattr(value, f.name), depth, budget) for f in fields]))
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:  # numpy and other arrays
        return (type(value), shape, str(dtype))
    if callable(value):
        return (type(value), getattr(value, "__qualname__", None))
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return (type(value), _signature(attributes, depth, budget))
    return type(value)


def frozen_option(value: Any) -> Any:
    """An optimizer option as a hashable key part. Numbers count only as zero or not (a zero
    weight decay skips its ops; a scheduler that cycles momentum must not make every step
    new); lists and dicts (custom optimizers keep them) become tuples; tensors, which a key
    must not read on the device, their signature."""
    if type(value) in (int, float):
        return value == 0
    if isinstance(value, Tensor):
        return tensor_signature(value)
    if isinstance(value, (list, tuple)):
        return tuple(map(frozen_option, value))
    if isinstance(value, dict):
        return tuple((k, frozen_option(v)) for k, v in value.items())
    try:
        hash(value)
    except TypeError:
        return type(value)
    return value
