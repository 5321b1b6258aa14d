"""NVFP4: E2M1 elements, one E4M3 scale per 16 elements along K, one FP32 global scale.

Ecosystem convention (see the README's "Formats"):

- global (encode) scale ``gs = 448 * 6 / amax(|x|)``;
- block scale ``s_b = e4m3((amax_b / 6) * gs)``, round to nearest even, clamped to 448, no lower
  clamp (a small block may get a subnormal scale);
- element ``q = e2m1_rne((x * gs) / s_b)``, saturating at +-6; a block whose scale is 0 is all
  zeros;
- dequantised value ``q * s_b / gs``.

All arithmetic is float32, in the order written above, with IEEE (correctly rounded) division
on every device; the Triton quantiser reproduces it bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fp4mm._validate import as_scalar, check_order, check_tensor
from fp4mm.formats.e2m1 import E2M1_MAX, decode_e2m1, encode_e2m1, pack_fp4, unpack_fp4
from fp4mm.formats.e4m3 import E4M3_MAX, e4m3_to_float, float_to_e4m3

NVFP4_BLOCK = 16
_FLOAT32_MAX = torch.finfo(torch.float32).max


class NVFP4Tensor(NamedTuple):
    """A quantised tensor. ``data`` uint8 ``(..., K/2)``, ``scales`` uint8 E4M3 bytes
    ``(..., K/16)`` row-major, ``global_scale`` float32 0-d tensor (the encode scale ``gs``)."""

    data: torch.Tensor
    scales: torch.Tensor
    global_scale: torch.Tensor


def _check_quant_input(x: torch.Tensor) -> torch.Tensor:
    check_tensor("x", x, dtype=(torch.float32, torch.float16, torch.bfloat16), contiguous=False)
    if x.dim() == 0 or x.shape[-1] % NVFP4_BLOCK != 0 or x.shape[-1] == 0:
        raise ValueError(
            f"x: expected a last dimension (K) that is a positive multiple of {NVFP4_BLOCK}, "
            f"got shape {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x: contains NaN or inf, which NVFP4 cannot represent")
    return x


def nvfp4_global_scale(x: torch.Tensor) -> torch.Tensor:
    """The encode scale ``448 * 6 / amax(|x|)`` as a float32 0-d tensor.

    ``amax == 0`` gives 1.0 (every block is zero anyway), and so does an empty ``x`` (no
    element: amax 0); an amax so small that the quotient overflows float32 gives float32's
    largest finite value.
    """
    x = _check_quant_input(x)
    amax = x.abs().amax().float() if x.numel() else x.new_zeros((), dtype=torch.float32)
    # Tensor / tensor: torch computes ``2688 / t`` as ``t.reciprocal() * 2688`` and, on CUDA,
    # ``t / 6`` as ``t * (1 / 6)``; both round differently from IEEE division and from each other.
    gs = torch.full_like(amax, E4M3_MAX * E2M1_MAX) / amax
    gs = torch.where(amax == 0, torch.ones_like(gs), gs)
    return gs.clamp(max=_FLOAT32_MAX)


def _as_global_scale(global_scale, device) -> torch.Tensor:
    value = as_scalar("global_scale", global_scale, positive=True)
    return torch.tensor(value, dtype=torch.float32, device=device)


def quantize_nvfp4(x: torch.Tensor, global_scale=None, order: str = "low_first") -> NVFP4Tensor:
    """Quantise ``x`` ``(..., K)`` (fp32/fp16/bf16, K % 16 == 0, finite) to NVFP4.

    ``global_scale`` (the encode scale gs) defaults to ``nvfp4_global_scale(x)``; pass one for
    static activation quantisation. Returns ``NVFP4Tensor(data, scales, global_scale)``.
    """
    x = _check_quant_input(x)
    check_order(order)
    gs = nvfp4_global_scale(x) if global_scale is None else _as_global_scale(global_scale, x.device)
    blocks = x.float().reshape(*x.shape[:-1], x.shape[-1] // NVFP4_BLOCK, NVFP4_BLOCK)
    block_amax = blocks.abs().amax(dim=-1)
    scale_bytes = float_to_e4m3((block_amax / torch.full_like(block_amax, E2M1_MAX)) * gs)
    block_scale = e4m3_to_float(scale_bytes).unsqueeze(-1)
    # A block whose scale rounds to 0 encodes +0 everywhere (and avoids 0/0).
    scaled = torch.where(block_scale == 0, 0.0, (blocks * gs) / block_scale)
    codes = encode_e2m1(scaled)
    data = pack_fp4(codes.reshape(x.shape), order)
    return NVFP4Tensor(data, scale_bytes.contiguous(), gs)


def dequantize_nvfp4_blocks(data: torch.Tensor, scales: torch.Tensor, order: str = "low_first"):
    """``e2m1(q) * e4m3(s_b)`` in float32, shape ``(..., K)``: the dequantised value times gs.

    E2M1 x E4M3 products are exact in float32 (and in fp16/bf16). A NaN scale byte (0x7F, 0xFF)
    gives NaN for its 16 elements.
    """
    check_tensor("data", data, dtype=torch.uint8, contiguous=False)
    check_tensor("scales", scales, dtype=torch.uint8, contiguous=False)
    check_order(order)
    K = data.shape[-1] * 2 if data.dim() else 0
    expected = (*data.shape[:-1], K // NVFP4_BLOCK) if data.dim() else None
    if data.dim() == 0 or K % NVFP4_BLOCK != 0 or tuple(scales.shape) != expected:
        raise ValueError(
            f"scales: expected shape {expected} for data of shape {tuple(data.shape)} "
            f"(one scale per {NVFP4_BLOCK} elements; K = 2 * data.shape[-1] must be a multiple of "
            f"{NVFP4_BLOCK}), got {tuple(scales.shape)}"
        )
    if data.device != scales.device:
        raise ValueError(
            f"expected data and scales on one device, got {data.device} and {scales.device}"
        )
    values = decode_e2m1(unpack_fp4(data, order))
    values = values.reshape(*values.shape[:-1], K // NVFP4_BLOCK, NVFP4_BLOCK)
    return (values * e4m3_to_float(scales).unsqueeze(-1)).reshape(*data.shape[:-1], K)


def dequantize_nvfp4(
    data: torch.Tensor, scales: torch.Tensor, global_scale, order: str = "low_first"
) -> torch.Tensor:
    """float32 ``q * s_b / gs``, shape ``(..., K)``: the inverse of :func:`quantize_nvfp4`."""
    blocks = dequantize_nvfp4_blocks(data, scales, order)
    return blocks / _as_global_scale(global_scale, blocks.device)
