"""CUDA graphs (``torch.cuda.graph``, ``make_graphed_callables``): a replay runs no ATen op, so
each graph's work is what its capture saw, credited at every replay.

A capture records kernels without running them, but the counting mode sees its ops as usual,
so the capture is counted as the graph's first run, and the first replay is not credited: after
any replay the totals are exact. What the capture added to the session's Ledger (the difference
of two snapshots: steady mode may open a segment inside the capture) is the graph's record,
credited at each later replay. Inductor's CUDA graphs (``mode="reduce-overhead"``) capture inside
a compiled graph, where the mode is paused: their record is empty, and the compiled graph's own
credit counts them (compiled.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..ledger import CountKey, Ledger, Totals
from .dispatch import counting_mode

STATE = "_otel_flops"  # a graph's capture state: (ledger, snapshot) while open, then [record, replays]


def _snapshot(ledger: Ledger) -> dict[CountKey, Totals]:
    return dict(ledger.items())


def _difference(after: dict[CountKey, Totals], before: dict[CountKey, Totals]) -> dict[CountKey, Totals]:
    out = {}
    for key, t in after.items():
        b = before.get(key, Totals())
        delta = Totals(t.flops - b.flops, t.bops - b.bops, t.calls - b.calls, t.comm_bytes - b.comm_bytes,
                       t.alpha_flops - b.alpha_flops, t.predicted_ns - b.predicted_ns)
        if delta != Totals():
            out[key] = delta
    return out


def _capture_begin(original: Callable[..., None]) -> Callable[..., None]:
    def capture_begin(graph: Any, *args: Any, **kwargs: Any) -> None:
        original(graph, *args, **kwargs)
        mode = counting_mode()
        if mode is not None:
            ledger = mode.sink.root
            graph.__dict__[STATE] = (ledger, _snapshot(ledger))

    return capture_begin


def _capture_end(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def capture_end(graph: Any) -> None:
        original(graph)
        state = graph.__dict__.get(STATE)
        if isinstance(state, tuple):
            ledger, before = state
            graph.__dict__[STATE] = [_difference(_snapshot(ledger), before), 0]

    return capture_end


def _replay(original: Callable[[Any], None]) -> Callable[[Any], None]:
    def replay(graph: Any) -> None:
        original(graph)
        state = graph.__dict__.get(STATE)
        if not isinstance(state, list):
            return
        state[1] += 1
        mode = counting_mode()
        if state[1] > 1 and mode is not None and not mode.paused:  # the capture counted the first
            for key, totals in state[0].items():
                mode.sink.add_totals(key, totals)

    return replay


PATCHES = {"capture_begin": _capture_begin, "capture_end": _capture_end, "replay": _replay}


def install() -> list[Callable[[], None]]:
    """Patch ``torch.cuda.CUDAGraph`` for this session; returns the undos (none without CUDA)."""
    if not torch.cuda.is_available():
        return []
    cls = torch.cuda.CUDAGraph
    originals = {name: cls.__dict__[name] for name in PATCHES if name in cls.__dict__}
    for name, original in originals.items():
        setattr(cls, name, PATCHES[name](original))

    def undo() -> None:
        for name, original in originals.items():
            setattr(cls, name, original)

    return [undo]
