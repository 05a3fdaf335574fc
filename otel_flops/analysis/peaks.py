"""Dense peak FLOP/s of common GPUs by dtype, for model FLOP utilisation (MFU).

Figures are NVIDIA's datasheets' dense (no structured sparsity) tensor-core rates: where a
datasheet lists "with sparsity" figures, the dense rate is half. float32 maps to the TF32 rate,
because cuDNN runs float32 convolutions on TF32 tensor cores by default; set
OTEL_FLOPS_PEAK_FLOPS to use one figure of your own instead.

Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM and PCIe), NVIDIA H200 datasheet, NVIDIA
A100 datasheet, NVIDIA L4 datasheet, NVIDIA A10 datasheet.
"""

from __future__ import annotations

import sys

# (name fragment as torch.cuda.get_device_name prints it, dtype) -> dense FLOP/s
PEAKS: dict[tuple[str, str], float] = {
    ("H100 80GB HBM3", "bfloat16"): 989.4e12,  # H100 SXM
    ("H100 80GB HBM3", "float16"): 989.4e12,
    ("H100 80GB HBM3", "float32"): 494.7e12,
    ("H100 80GB HBM3", "float8_e4m3fn"): 1978.9e12,
    ("H100 PCIe", "bfloat16"): 756.0e12,
    ("H100 PCIe", "float16"): 756.0e12,
    ("H100 PCIe", "float32"): 378.0e12,
    ("H200", "bfloat16"): 989.4e12,
    ("H200", "float16"): 989.4e12,
    ("H200", "float32"): 494.7e12,
    ("H200", "float8_e4m3fn"): 1978.9e12,
    ("A100", "bfloat16"): 312.0e12,
    ("A100", "float16"): 312.0e12,
    ("A100", "float32"): 156.0e12,
    ("L4", "bfloat16"): 121.0e12,
    ("L4", "float16"): 121.0e12,
    ("L4", "float32"): 60.0e12,
    ("A10", "bfloat16"): 125.0e12,
    ("A10", "float16"): 125.0e12,
    ("A10", "float32"): 62.5e12,
}


def peak_flops(device_name: str, dtype: str, override: float | None = None) -> float | None:
    """The dense peak for ``dtype`` on ``device_name``, or None for a device not in the table."""
    if override:
        return override
    for (fragment, peak_dtype), value in PEAKS.items():
        if fragment in device_name and peak_dtype == dtype:
            return value
    return None


def seconds_at_peak(items: list, device_name: str, override: float | None = None) -> float | None:
    """How long the counted GPU FLOPs would take at peak: MFU = this / the elapsed time."""
    total, known = 0.0, False
    for key, totals in items:
        if not key.device.startswith("cuda") or not totals.flops:
            continue
        peak = peak_flops(device_name, key.dtype, override)
        if peak:
            total += totals.flops / peak
            known = True
    return total if known else None


def gpu_name() -> str:
    """The first GPU's name where torch is in use and sees one, else ''."""
    torch = sys.modules.get("torch")
    return torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else ""
