"""Ops whose output size depends on tensor values, not on shapes: the work after them does too.

torch tags them ``dynamic_output_shape`` (nonzero, masked_select, unique, repeat_interleave with
tensor repeats, bincount, ...). ``aten.index.Tensor`` carries the tag for every index, but only
boolean-mask indices (``x[mask]``) make its size depend on values: integer indices give the
index's own shape. A steady-mode recording that meets one of these is never replayed.
"""

from __future__ import annotations

from typing import Any

import torch

_INDEX = torch.ops.aten.index.Tensor
_MASK_DTYPES = (torch.bool, torch.uint8)
_NO, _YES, _IF_MASK = 0, 1, 2
_kinds: dict[Any, int] = {}


def _kind(func: Any) -> int:
    if func is _INDEX:
        return _IF_MASK
    return _YES if torch.Tag.dynamic_output_shape in getattr(func, "tags", ()) else _NO


def data_dependent(func: Any, args: tuple) -> bool:
    """Whether this call's output size depends on the values of its inputs."""
    kind = _kinds.get(func)
    if kind is None:
        kind = _kinds[func] = _kind(func)
    if kind != _IF_MASK:
        return kind == _YES
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in _MASK_DTYPES for i in indices)
