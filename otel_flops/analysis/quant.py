"""Emulated INT4 and INT8 weight quantization, for measuring what quantized training counts.

bitsandbytes needs CUDA, so the paper's "emulated INT4" is rebuilt here in plain torch.
``Linear4bit`` behaves like bitsandbytes' module of that name: its weight is stored packed, two
4-bit codes per byte, with one absmax scale per block of 64 weights, and is dequantized to the
activation dtype at every forward. The precision resolver sees it as 4-bit through its class
name (and its ``bits`` attribute, which is how the convolution variants resolve), so the ops
inside its forward count 4 bits. ``Linear8bitLt``/``Conv2d8bit`` do the same with int8 codes.

Unlike bitsandbytes (whose packed weight is frozen), the block scales are trainable parameters:
the backward then computes the weight gradient exactly as the FP32 model does, so forward+backward
FLOPs stay comparable across formats, as in the paper's Table 2. The dequantization (unpack,
shift, scale) is real work that the counter sees: it is the small FLOP increase at INT4.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BLOCK = 64


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Two signed 4-bit codes (-8..7) per uint8: even index in the low nibble, odd in the high."""
    flat = (codes.flatten().to(torch.int16) + 8).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_int4(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of :func:`pack_int4`, as int8 codes."""
    low = (packed & 0x0F).to(torch.int8) - 8
    high = (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=1).flatten()[:numel]


def _blockwise(weight: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax codes in [-levels, levels] and one scale per block of ``BLOCK`` weights."""
    flat = weight.detach().float().flatten()
    pad = (-flat.numel()) % BLOCK
    blocks = F.pad(flat, (0, pad)).view(-1, BLOCK)
    scale = blocks.abs().amax(dim=1).clamp_min(1e-12) / levels
    codes = torch.round(blocks / scale[:, None]).clamp(-levels - 1, levels).to(torch.int8)
    return codes.flatten()[: flat.numel()], scale


class _QuantizedWeight(nn.Module):
    """Int8 codes (a buffer) plus trainable block scales; ``dequantized()`` rebuilds the weight."""

    bits = 8

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.shape = tuple(weight.shape)
        self.numel = weight.numel()
        codes, scale = _blockwise(weight, 2 ** (self.bits - 1) - 1)
        self.register_buffer("packed", self._pack(codes))
        self.scale = nn.Parameter(scale.to(weight.dtype))

    def _pack(self, codes: torch.Tensor) -> torch.Tensor:
        return codes

    def _codes(self) -> torch.Tensor:
        return self.packed

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        codes = self._codes().to(dtype)
        codes = F.pad(codes, (0, (-self.numel) % BLOCK)).view(-1, BLOCK)
        return (codes * self.scale.to(dtype)[:, None]).flatten()[: self.numel].view(self.shape)


class _Int4Weight(_QuantizedWeight):
    """Two 4-bit codes per byte: half the int8 storage, unpacked at every dequantization."""

    bits = 4

    def _pack(self, codes: torch.Tensor) -> torch.Tensor:
        return pack_int4(codes)

    def _codes(self) -> torch.Tensor:
        return unpack_int4(self.packed, self.numel)


class Linear8bitLt(nn.Module):
    """An nn.Linear whose weight is stored as int8 block codes; dequantized in forward."""

    bits = 8

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_q = _quantized(linear.weight, self.bits)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_q.dequantized(x.dtype), _cast(self.bias, x.dtype))


class Linear4bit(Linear8bitLt):
    """bitsandbytes-style Linear4bit: two 4-bit codes per byte, block absmax scales."""

    bits = 4


class Conv2d8bit(nn.Module):
    """An nn.Conv2d whose weight is stored as int8 block codes; dequantized in forward."""

    bits = 8

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.weight_q = _quantized(conv.weight, self.bits)
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_q.dequantized(x.dtype)
        return F.conv2d(x, weight, _cast(self.bias, x.dtype), self.stride, self.padding, self.dilation, self.groups)


class Conv2d4bit(Conv2d8bit):
    """Conv2d with its weight packed two 4-bit codes per byte."""

    bits = 4


class MultiheadAttention8bit(nn.Module):
    """nn.MultiheadAttention (self-attention, packed in-projection) with quantized projections.

    ``in_proj_bias`` reads None so that nn.TransformerEncoderLayer never takes its fused
    inference fast path, which would read the float weights this module no longer has.
    """

    bits = 8
    in_proj_bias = None

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim:
            raise ValueError("only attention with a packed in-projection can be quantized")
        self.embed_dim, self.num_heads, self.dropout = mha.embed_dim, mha.num_heads, mha.dropout
        self.batch_first, self._qkv_same_embed_dim = mha.batch_first, True
        self.in_proj_q = _quantized(mha.in_proj_weight, self.bits)
        self.out_proj_q = _quantized(mha.out_proj.weight, self.bits)
        self.in_bias, self.out_bias = mha.in_proj_bias, mha.out_proj.bias

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        dtype = query.dtype
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads,
            self.in_proj_q.dequantized(dtype), _cast(self.in_bias, dtype), None, None, False, self.dropout,
            self.out_proj_q.dequantized(dtype), _cast(self.out_bias, dtype), training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal,
        )
        return (out.transpose(0, 1) if self.batch_first else out), weights


class MultiheadAttention4bit(MultiheadAttention8bit):
    """Self-attention with its projections packed two 4-bit codes per byte."""

    bits = 4


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def _quantized(weight: torch.Tensor, bits: int) -> _QuantizedWeight:
    cls = _Int4Weight if bits == 4 else _QuantizedWeight
    return cls(weight)


_SWAPS = {
    4: {nn.Linear: Linear4bit, nn.Conv2d: Conv2d4bit, nn.MultiheadAttention: MultiheadAttention4bit},
    8: {nn.Linear: Linear8bitLt, nn.Conv2d: Conv2d8bit, nn.MultiheadAttention: MultiheadAttention8bit},
}


def quantize_model(model: nn.Module, bits: int) -> nn.Module:
    """Replace every nn.Linear, nn.Conv2d and nn.MultiheadAttention of ``model`` (in place) by
    its ``bits``-bit emulation; returns ``model``."""
    if bits not in _SWAPS:
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    for name, child in list(model.named_children()):
        swap = _SWAPS[bits].get(type(child))
        if swap is not None:
            setattr(model, name, swap(child))
        else:
            quantize_model(child, bits)
    return model
