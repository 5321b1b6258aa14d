"""Weight-only FP4 with 16-bit group scales (revision 1 of the challenge, W4A16).

``w ~= e2m1(q) * scale[n, k // group_size]``, with ``scale = amax_group / 6`` rounded to the
scale dtype (fp16 or bf16) and elements rounded to nearest even, saturating at +-6.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from fp4mm._validate import check_group_size, check_order, check_tensor
from fp4mm.formats.e2m1 import E2M1_MAX, decode_e2m1, encode_e2m1, pack_fp4, unpack_fp4

SCALE_DTYPES = (torch.float16, torch.bfloat16)


class FP4GroupwiseTensor(NamedTuple):
    """``data`` uint8 ``(..., K/2)``, ``scales`` fp16/bf16 ``(..., K/group_size)``."""

    data: torch.Tensor
    scales: torch.Tensor


def quantize_fp4_groupwise(
    w: torch.Tensor,
    group_size: int,
    order: str = "low_first",
    scale_dtype: torch.dtype = torch.float16,
) -> FP4GroupwiseTensor:
    """Quantise ``w`` ``(..., K)`` (finite fp32/fp16/bf16) with one 16-bit scale per group."""
    check_tensor("w", w, dtype=(torch.float32, torch.float16, torch.bfloat16), contiguous=False)
    if w.dim() == 0:
        raise ValueError("w: expected at least one dimension, got a 0-d tensor")
    check_group_size(group_size, w.shape[-1])
    check_order(order)
    if scale_dtype not in SCALE_DTYPES:
        raise TypeError(f"scale_dtype: expected one of {SCALE_DTYPES}, got {scale_dtype!r}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w: contains NaN or inf, which FP4 cannot represent")
    K = w.shape[-1]
    groups = w.float().reshape(*w.shape[:-1], K // group_size, group_size)
    scale_max = torch.finfo(scale_dtype).max
    scales = (groups.abs().amax(dim=-1) / E2M1_MAX).clamp(max=scale_max).to(scale_dtype)
    scale_f = scales.float().unsqueeze(-1)
    scaled = torch.where(scale_f == 0, 0.0, groups / scale_f)  # all-zero groups encode +0
    codes = encode_e2m1(scaled)
    return FP4GroupwiseTensor(pack_fp4(codes.reshape(w.shape), order), scales.contiguous())


def dequantize_fp4_groupwise(
    data: torch.Tensor, scales: torch.Tensor, group_size: int, order: str = "low_first"
) -> torch.Tensor:
    """float32 ``e2m1(q) * scale``, shape ``(..., K)``."""
    check_tensor("data", data, dtype=torch.uint8, contiguous=False)
    check_tensor("scales", scales, dtype=SCALE_DTYPES, contiguous=False)
    check_order(order)
    if data.dim() == 0:
        raise ValueError("data: expected at least one dimension, got a 0-d tensor")
    K = data.shape[-1] * 2
    check_group_size(group_size, K)
    expected = (*data.shape[:-1], K // group_size)
    if tuple(scales.shape) != expected:
        raise ValueError(
            f"scales: expected shape {expected} for data of shape {tuple(data.shape)} and "
            f"group_size {group_size}, got {tuple(scales.shape)}"
        )
    values = decode_e2m1(unpack_fp4(data, order))
    values = values.reshape(*expected, group_size) * scales.float().unsqueeze(-1)
    return values.reshape(*data.shape[:-1], K)
