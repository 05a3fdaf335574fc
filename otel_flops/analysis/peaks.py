"""Dense peak rates of datacenter and workstation GPUs by precision, for model FLOP utilisation (MFU).

Every figure is the vendor's dense rate (no 2:4 structured sparsity): where a datasheet lists only
"with sparsity" tensor figures, the dense rate is half of it. ``fp64`` is always the FP64
tensor-core rate (AMD: FP64 matrix-core rate) where the GPU has one (what DGEMM reaches; H100 SXM 67,
not its 34 non-tensor rate); Blackwell datasheets give one "FP64/FP64 Tensor Core" figure, and GPUs
whose datasheet gives no FP64 figure have None. ``fp32`` is the plain (non-tensor-core) FP32 rate, ``tf32``
the TF32 tensor-core rate that float32 matmuls and convolutions reach when torch allows TF32
(otel_flops.analysis.mfu decides), ``int8`` in integer operations per second. A precision a
datasheet does not give is None: that work has no peak, and MFU leaves it out. docs/gpu-peaks.md
is the same table for people; OTEL_FLOPS_PEAK_FLOPS replaces the table with one figure of yours.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

T = 1e12  # the datasheets' "TFLOPS"


@dataclass(frozen=True)
class Peaks:
    """One GPU's dense peak per precision, in FLOP/s (int8: op/s); None where the vendor gives none."""

    fp64: float | None = None
    fp32: float | None = None
    tf32: float | None = None
    bf16: float | None = None
    fp16: float | None = None
    fp8: float | None = None
    int8: float | None = None


# Hopper dense figures are the Hopper whitepaper's exact ones (989.4 = the datasheets' rounded
# "1,979*" with sparsity / 2); the NVL figures are the datasheet's NVL column halved (835* / 2 = 417.5).
HOPPER_SXM = Peaks(fp64=67 * T, fp32=67 * T, tf32=494.7 * T, bf16=989.4 * T, fp16=989.4 * T, fp8=1978.9 * T,
                   int8=1978.9 * T)
HOPPER_NVL = Peaks(fp64=60 * T, fp32=60 * T, tf32=417.5 * T, bf16=835.5 * T, fp16=835.5 * T, fp8=1670.5 * T,
                   int8=1670.5 * T)
MI300 = Peaks(fp64=163.4 * T, fp32=163.4 * T, tf32=653.7 * T, bf16=1307.4 * T, fp16=1307.4 * T, fp8=2614.9 * T,
              int8=2614.9 * T)

# (pattern searched in torch.cuda.get_device_name(), peaks). The first match wins, so a specific
# name (H100 NVL, H100 PCIe) comes before the general one (H100 SXM: "NVIDIA H100 80GB HBM3").
GPUS: list[tuple[str, Peaks]] = [
    # https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 NVL column).
    # unverified: no copy of the NVL column was found to read (only third-party tables quoting
    # ~835 BF16 / ~1670 FP8 dense); the figures are that column as first entered: 60/60/835*/1,671*/3,341*.
    (r"\bH100 NVL\b", HOPPER_NVL),
    # https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 PCIe column:
    # FP64 Tensor Core 51, FP32 51, TF32 756*, BF16/FP16 1,513*, FP8/INT8 3,026*; * with sparsity)
    (r"\bH100 PCIe\b", Peaks(fp64=51 * T, fp32=51 * T, tf32=378 * T, bf16=756.5 * T, fp16=756.5 * T,
                             fp8=1513 * T, int8=1513 * T)),
    # https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet (H100 SXM column:
    # FP64 Tensor Core 67, FP32 67, TF32 989*, BF16/FP16 1,979*, FP8/INT8 3,958*; * with sparsity)
    (r"\bH100\b", HOPPER_SXM),
    # https://www.nvidia.com/en-us/data-center/h200/ (H200 NVL column). unverified: no copy of the
    # H200 NVL figures was found; assumed equal to the H100 NVL's (same GH100 part and clocks).
    (r"\bH200 NVL\b", HOPPER_NVL),
    # https://www.nvidia.com/en-us/data-center/h200/ (H200 SXM column: the H100 SXM's compute figures)
    (r"\bH200\b", HOPPER_SXM),
    # unverified: NVIDIA publishes no H20 datasheet on nvidia.com and none was found; these are the
    # dense figures third-party reports give (FP64 1, FP32 44, TF32 74, FP16 148, INT8 296). Check them.
    (r"\bH20\b", Peaks(fp64=1 * T, fp32=44 * T, tf32=74 * T, bf16=148 * T, fp16=148 * T, fp8=296 * T, int8=296 * T)),
    # https://www.nvidia.com/en-us/data-center/gb200-nvl72/ (the per-GPU column: FP64/FP64 Tensor Core
    # 40, FP32 80, TF32 2.5 P*, BF16/FP16 5 P*, FP8/INT8 10 P*; the rack's 2,880 TF FP64 / 72 = 40. The
    # launch page's 3,240 TF FP64 rack figure gave 45)
    (r"\bGB200\b", Peaks(fp64=40 * T, fp32=80 * T, tf32=1250 * T, bf16=2500 * T, fp16=2500 * T, fp8=5000 * T,
                         int8=5000 * T)),
    # https://www.nvidia.com/en-us/data-center/hgx/ (HGX B200: the 8-GPU board's figures / 8; NVIDIA's
    # per-GPU table gives FP64 37, FP32 75, TF32 "2.2 P*", i.e. the board's 18 P* / 8 = 2.25 rounded)
    (r"\bB200\b", Peaks(fp64=37 * T, fp32=75 * T, tf32=1125 * T, bf16=2250 * T, fp16=2250 * T, fp8=4500 * T,
                        int8=4500 * T)),
    # https://www.nvidia.com/en-us/data-center/hgx/ (HGX B100 as first published: the 8-GPU figures / 8;
    # no FP32 figure given). unverified: the HGX page no longer lists B100 and no copy of its figures
    # was found; third-party spec tables agree on TF32 875, BF16 1750, FP8/INT8 3500 dense.
    (r"\bB100\b", Peaks(fp64=30 * T, tf32=875 * T, bf16=1750 * T, fp16=1750 * T, fp8=3500 * T, int8=3500 * T)),
    # https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
    # (FP64 Tensor Core 19.5, FP32 19.5, TF32 156 | 312*, BF16/FP16 312 | 624*, INT8 624 | 1,248*)
    (r"\bA100\b", Peaks(fp64=19.5 * T, fp32=19.5 * T, tf32=156 * T, bf16=312 * T, fp16=312 * T, int8=624 * T)),
    # https://www.nvidia.com/en-us/data-center/l40s/ (FP32 91.6, TF32 183 | 366*, BF16/FP16 362.05 |
    # 733*, FP8 733 | 1,466*: the datasheet's own dense BF16/FP16 figure, not 733 / 2)
    (r"\bL40S\b", Peaks(fp32=91.6 * T, tf32=183 * T, bf16=362.05 * T, fp16=362.05 * T, fp8=733 * T, int8=733 * T)),
    # https://www.nvidia.com/en-us/data-center/l40/ (FP32 90.5, TF32 90.5 | 181*, BF16/FP16 181.05 |
    # 362.1*, FP8 362 | 724*, INT8 362 | 724*)
    (r"\bL40\b", Peaks(fp32=90.5 * T, tf32=90.5 * T, bf16=181.05 * T, fp16=181.05 * T, fp8=362 * T, int8=362 * T)),
    # https://www.nvidia.com/en-us/data-center/l4/ (FP32 30.3, TF32 120*, BF16/FP16 242*, FP8/INT8 485*)
    (r"\bL4\b", Peaks(fp32=30.3 * T, tf32=60 * T, bf16=121 * T, fp16=121 * T, fp8=242.5 * T, int8=242.5 * T)),
    # https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (the A10G is another part: not matched).
    # unverified: no copy of the page's table was found; FP32 31.2, TF32 62.5 | 125*, BF16/FP16 125 |
    # 250*, INT8 250 | 500* as remembered (third-party tables agree on FP32 31.2 and FP16 125).
    (r"\bA10\b", Peaks(fp32=31.2 * T, tf32=62.5 * T, bf16=125 * T, fp16=125 * T, int8=250 * T)),
    # https://www.nvidia.com/en-us/design-visualization/rtx-6000/ (FP32 91.1 TFLOPS, FP8 1457 TFLOPS
    # with sparsity; FP16 and TF32 at Ada's 1/2 and 1/4 of the FP8 tensor rate: 1457 / 4 = 364.25)
    (r"RTX 6000 Ada", Peaks(fp32=91.1 * T, tf32=182.1 * T, bf16=364.3 * T, fp16=364.3 * T, fp8=728.5 * T,
                            int8=728.5 * T)),
    # https://www.nvidia.com/en-us/products/workstations/professional-desktop-gpus/rtx-pro-6000/ (FP32
    # 125 TFLOPS, 4000 FP4 AI TOPS with sparsity; FP8, FP16 and TF32 at 1/2, 1/4 and 1/8 of that dense.
    # Third-party tables computed from 188 SMs at 2617 MHz give 1007.6 / 503.8 / 251.9, 0.8% above)
    (r"RTX PRO 6000 Blackwell", Peaks(fp32=125 * T, tf32=250 * T, bf16=500 * T, fp16=500 * T, fp8=1000 * T,
                                      int8=1000 * T)),
    # https://www.amd.com/content/dam/amd/en/documents/instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf
    # (FP64/FP32 matrix 163.4, TF32 653.7, BF16/FP16 1307.4, FP8/INT8 2614.9 dense; vector FP64 81.7)
    (r"\bMI300X\b", MI300),
    # https://www.amd.com/content/dam/amd/en/documents/instinct-tech-docs/product-briefs/instinct-mi325x-datasheet.pdf
    # (the MI300X's compute figures; more and faster memory)
    (r"\bMI325X\b", MI300),
]

# Ledger dtype name -> the precision whose peak it runs at (float32: see otel_flops.analysis.mfu).
PRECISION: dict[str, str] = {
    "float64": "fp64", "float32": "fp32", "bfloat16": "bf16", "float16": "fp16",
    "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "float8_e4m3fnuz": "fp8", "float8_e5m2fnuz": "fp8",
    "int8": "int8", "uint8": "int8",
}


def gpu_peaks(device_name: str) -> Peaks | None:
    """The table's row for a device name as torch prints it ("NVIDIA H100 80GB HBM3"), or None."""
    for pattern, peaks in GPUS:
        if re.search(pattern, device_name):
            return peaks
    return None


def peak_flops(device_name: str, precision: str, override: float | None = None) -> float | None:
    """The dense peak in FLOP/s for ``precision`` ("fp32", "tf32", "bf16", ...) on ``device_name``:
    ``override`` if given, else the table's figure, else None (unknown device or precision)."""
    if override:
        return override
    peaks = gpu_peaks(device_name)
    return getattr(peaks, precision, None) if peaks is not None else None


def gpu_name() -> str:
    """The first GPU's name where torch is in use and sees one, else ''."""
    torch = sys.modules.get("torch")
    return torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else ""
