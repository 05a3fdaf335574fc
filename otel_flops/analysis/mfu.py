"""Seconds at peak: how long the counted work would take at its device's dense peak. MFU is these
seconds over the elapsed ones; in Prometheus, ``rate(otel_flops_peak_time_seconds_total[5m])``.

Each count is weighed by the peak of its precision (otel_flops.analysis.peaks). float32 work runs at
the plain FP32 peak, except where torch lets the tensor cores use TF32: matmuls (family "matmul",
cuBLAS) when ``torch.backends.cuda.matmul`` allows it (off by default; ``allow_tf32 = True`` or
``torch.set_float32_matmul_precision("high")`` turn it on), convolutions and RNNs (families "conv",
"rnn", cuDNN) when ``torch.backends.cudnn`` allows it (on by default). Both the new
``fp32_precision`` settings and the legacy flags are read. The flags are read once per session: at
the first computation that finds float32 GPU work of those families (after the script has set them,
in the usual case), and kept, so the counter never goes back.

With OTEL_FLOPS_PEAK_FLOPS, that one figure is the peak of every precision, and of the CPU on a
machine where no GPU work is counted (so a CPU run has an MFU against the figure given).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..ledger import CountKey, Totals
from .peaks import PRECISION, gpu_name, peak_flops

# Op family -> the torch.backends settings that decide whether its float32 work may use TF32,
# innermost first (a value of "none" defers to the next); then the legacy flag.
TF32_SETTINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "matmul": (("cuda", "matmul"), ()),
    "conv": (("cudnn", "conv"), ("cudnn",), ()),
    "rnn": (("cudnn", "rnn"), ("cudnn",), ()),
}
TF32_DEFAULT = frozenset({"conv", "rnn"})  # torch's defaults: cuDNN allows TF32, cuBLAS does not


def _legacy(torch: Any, family: str) -> bool:
    if family == "matmul":
        return bool(torch.backends.cuda.matmul.allow_tf32) or torch.get_float32_matmul_precision() != "highest"
    return bool(torch.backends.cudnn.allow_tf32)


def _allows_tf32(torch: Any, family: str) -> bool:
    for path in TF32_SETTINGS[family]:
        node = torch.backends
        for name in path:
            node = getattr(node, name, None)
        value = getattr(node, "fp32_precision", "none")
        if value != "none":
            return value == "tf32"
    return _legacy(torch, family)


def tf32_families() -> frozenset[str]:
    """The op families whose float32 work torch now lets use TF32 ({"conv", "rnn"} by default).

    torch raises when the legacy flags are read after the new settings were used; a setting that
    cannot be read counts as torch's default for it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return TF32_DEFAULT
    allowed = set()
    for family in TF32_SETTINGS:
        try:
            if _allows_tf32(torch, family):
                allowed.add(family)
        except (RuntimeError, AttributeError):
            if family in TF32_DEFAULT:
                allowed.add(family)
    return frozenset(allowed)


def precision(key: CountKey, tf32: frozenset[str]) -> str | None:
    """The peak a count runs at: "tf32" for float32 work of a family in ``tf32``, else its dtype's."""
    if key.dtype == "float32" and key.family in tf32:
        return "tf32"
    return PRECISION.get(key.dtype)


@dataclass(frozen=True)
class AtPeak:
    """``seconds`` (s) the ``flops`` (FLOPs) that have a known peak would take at it, on ``device``."""

    seconds: float
    flops: int
    device: str


class PeakTime:
    """Seconds at peak of a session's counts; the metrics and the report read the same one, so the
    MFU from Prometheus and the report's agree."""

    def __init__(self, override: float | None = None, device_name: Callable[[], str] = gpu_name) -> None:
        self._override = override
        self._device_name = device_name
        self._name: str | None = None
        self._tf32: frozenset[str] | None = None
        self._lock = threading.Lock()

    @property
    def override(self) -> float | None:
        """OTEL_FLOPS_PEAK_FLOPS: the one peak (FLOP/s) used instead of the table, if set."""
        return self._override

    @property
    def tf32(self) -> frozenset[str] | None:
        """The families allowed TF32, once read (None before any float32 GPU work was weighed)."""
        return self._tf32

    def _gpu(self) -> str:
        if self._name is None:
            name = self._device_name()
            if not name:
                return ""
            self._name = name
        return self._name

    def measure(self, items: list[tuple[CountKey, Totals]]) -> AtPeak | None:
        """Seconds at peak of ``items`` (the Ledger's), or None where no counted work has a peak:
        no GPU work and no OTEL_FLOPS_PEAK_FLOPS, or a GPU the table does not know."""
        gpu_items = [(k, t) for k, t in items if k.device.startswith("cuda") and t.flops]
        if gpu_items:
            device = self._gpu()
        elif self._override:
            gpu_items, device = [(k, t) for k, t in items if t.flops], "cpu"
        else:
            return None
        tf32 = self._flags(gpu_items)
        seconds, flops = 0.0, 0
        for key, totals in gpu_items:
            peak = peak_flops(device, precision(key, tf32) or "", self._override)
            if peak:
                seconds += totals.flops / peak
                flops += totals.flops
        return AtPeak(seconds, flops, device) if flops else None

    def _flags(self, items: list[tuple[CountKey, Totals]]) -> frozenset[str]:
        with self._lock:
            if self._tf32 is None:
                if not any(k.dtype == "float32" and k.family in TF32_SETTINGS and k.device.startswith("cuda")
                           for k, _ in items):
                    return TF32_DEFAULT  # no work it would change yet: keep reading until there is
                self._tf32 = tf32_families()
            return self._tf32
