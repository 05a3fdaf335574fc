"""Effective operand bit-width, shared by every backend.

Resolution order (seed paper sec. 3.1, DESIGN.md): module class markers, then configuration
attributes, then the dtype. Quantization libraries pack sub-byte weights in wider containers,
so the dtype alone lies for them; ``itemsize`` lies for packed dtypes too (quint4x2 is 4 bits).

Convention for mixed widths: an op takes the wider of its operands' dtypes, except inside a
module the resolver marks as quantized, where the module's bits are the effective width of the
op (the narrow weight sets the width of the multiply). See the README.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Bits per operand, keyed by the dtype's name as torch and numpy print it. Complex work is counted
# in real FLOPs, each on one real part (a complex multiply is 6 of them), so a complex dtype's
# width is its parts' width: complex64's FLOPs are 32-bit FLOPs.
DTYPE_BITS: dict[str, int] = {
    "float64": 64, "double": 64, "complex128": 64, "cdouble": 64, "complex64": 32, "cfloat": 32,
    "complex32": 16,
    "float32": 32, "float": 32, "float16": 16, "half": 16, "bfloat16": 16,
    "float8_e4m3fn": 8, "float8_e4m3fnuz": 8, "float8_e5m2": 8, "float8_e5m2fnuz": 8, "float8_e8m0fnu": 8,
    "float4_e2m1fn_x2": 4,
    "int64": 64, "long": 64, "uint64": 64, "int32": 32, "int": 32, "uint32": 32,
    "int16": 16, "short": 16, "uint16": 16, "int8": 8, "uint8": 8,
    "int4": 4, "uint4": 4, "int3": 3, "uint3": 3, "int2": 2, "uint2": 2, "int1": 1, "uint1": 1,
    "uint5": 5, "uint6": 6, "uint7": 7, "int5": 5, "int6": 6, "int7": 7,
    "bool": 8,
    "qint8": 8, "quint8": 8, "qint32": 32, "quint4x2": 4, "quint2x4": 2,
    "bits8": 8, "bits16": 16, "bits1x8": 1, "bits2x4": 2, "bits4x2": 4,
}

DEFAULT_BITS = 32


def dtype_name(dtype: Any) -> str:
    """torch's 'torch.bfloat16' and numpy's 'float32' both become the bare name."""
    return str(dtype).removeprefix("torch.")


def dtype_bits(dtype: Any, default: int = DEFAULT_BITS) -> int:
    return DTYPE_BITS.get(dtype_name(dtype), default)


# Class-name markers of quantized modules (a class whose name contains one is quantized).
# GPTQ's QuantLinear, AWQ's WQLinear and HQQLinear carry their bits in attributes, probed next.
CLASS_MARKERS: dict[str, int] = {
    "Linear4bit": 4,  # bitsandbytes
    "LinearNF4": 4,
    "LinearFP4": 4,
    "Params4bit": 4,
    "Linear8bitLt": 8,
    "Int8Params": 8,
    "Embedding4bit": 4,
    "Embedding8bit": 8,
    "Float8Linear": 8,  # torchao float8 training
    "Float8DynamicLinear": 8,
    "FP8Linear": 8,
    "Int4WeightOnlyLinear": 4,
    "Int8WeightOnlyLinear": 8,
    "Int8DynActInt4WeightLinear": 4,
    "WeightOnlyInt8Linear": 8,
    "WeightOnlyInt4Linear": 4,
}

_QUANT_TYPE_BITS = {"nf4": 4, "fp4": 4, "int4": 4, "int8": 8, "fp8": 8, "float8": 8}


def _quant_type_bits(module: Any) -> int | None:
    weight = getattr(module, "weight", None)
    quant_type = getattr(weight, "quant_type", None) or getattr(module, "quant_type", None)
    return _QUANT_TYPE_BITS.get(str(quant_type).lower()) if quant_type is not None else None


def _hqq_bits(module: Any) -> int | None:
    meta = getattr(module, "meta", None)
    return meta.get("nbits") if isinstance(meta, dict) else None


def _attr_path(path: str) -> Callable[[Any], Any]:
    names = path.split(".")

    def read(obj: Any) -> Any:
        for name in names:
            obj = getattr(obj, name, None)
            if obj is None:
                return None
        return obj

    return read


# Configuration attributes that carry the bit-width, probed in order.
ATTRIBUTE_PROBES: list[Callable[[Any], Any]] = [
    _attr_path("bits"),
    _attr_path("w_bit"),
    _attr_path("wbits"),
    _attr_path("nbits"),
    _attr_path("weight_bits"),
    _attr_path("quantize_config.bits"),
    _attr_path("quant_config.bits"),
    _attr_path("config.bits"),
    _hqq_bits,
    _quant_type_bits,
]

def marker_bits(cls_name: str) -> int | None:
    """Bits a quantized module class declares by its name (``Linear4bit``: 4), or None."""
    for marker, bits in CLASS_MARKERS.items():
        if marker in cls_name:
            return bits
    return None


def _attribute_bits(module: Any) -> int | None:
    for probe in ATTRIBUTE_PROBES:
        value = probe(module)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 64:
            return value
    return None


def module_bits(module: Any) -> int | None:
    """Bits a module's class marker or configuration declares, or None for an ordinary module."""
    bits = marker_bits(type(module).__name__)
    if bits is not None:
        return bits
    return _attribute_bits(module)


def resolve_bits(module: Any = None, dtype: Any = None, default: int = DEFAULT_BITS) -> int:
    """The full resolution order: markers, attributes, then the dtype table."""
    if module is not None:
        bits = module_bits(module)
        if bits is not None:
            return bits
    return dtype_bits(dtype, default) if dtype is not None else default
