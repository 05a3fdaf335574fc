"""Fast Fourier transforms, by the convention of FFTW's benchFFT.

A complex transform of N points (N = the product of the transformed sizes) counts
``5 N log2 N``; a real-input or real-output transform ``2.5 N log2 N``, half of it. Each
transform along the remaining (batch) dimensions counts once. These are the usual nominal
counts (exact for radix-2 Cooley-Tukey), not the operations a library's mixed-radix plan runs;
the normalisation's scaling is not counted.
"""

from __future__ import annotations

from math import log2, prod
from typing import Any

from .registry import aten, flop_rule

COMPLEX_FFT = 5.0
REAL_FFT = 2.5


def _transforms(shape: Any, dims: list[int], per_point: float) -> int:
    n = prod(shape[d] for d in dims)
    batch = prod(shape) // n if n else 0
    return round(batch * per_point * n * log2(n)) if n > 1 else 0


@flop_rule("fft", aten._fft_r2c)
def fft_r2c_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Real to complex: 2.5 N log2 N per transform, N from the real input."""
    return _transforms(args[0].shape, args[1], REAL_FFT)


@flop_rule("fft", aten._fft_c2r)
def fft_c2r_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Complex to real: 2.5 N log2 N per transform, N from the real output."""
    return _transforms(out.shape, args[1], REAL_FFT)


@flop_rule("fft", aten._fft_c2c)
def fft_c2c_flops(args: tuple, kwargs: dict, out: Any) -> int:
    """Complex to complex: 5 N log2 N per transform."""
    return _transforms(args[0].shape, args[1], COMPLEX_FFT)


