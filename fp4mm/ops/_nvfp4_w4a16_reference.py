"""FP32 oracle for ``nvfp4_w4a16_mm`` (16-bit activations, NVFP4 weights)."""

from __future__ import annotations

import math

import torch

from fp4mm._validate import check_order, check_same_device, check_tensor
from fp4mm.formats.nvfp4 import NVFP4_BLOCK, dequantize_nvfp4_blocks
from fp4mm.reference import _chunk_rows, _ieee_fp32, as_scale_bytes


def as_global_scale(w_global_scale) -> float:
    """The FP32 encode scale gs_w as a float: finite and positive."""
    if isinstance(w_global_scale, torch.Tensor):
        if w_global_scale.numel() != 1:
            raise ValueError(f"w_global_scale: expected a scalar, got a tensor of shape "
                             f"{tuple(w_global_scale.shape)}")
        w_global_scale = float(w_global_scale.item())
    elif isinstance(w_global_scale, bool) or not isinstance(w_global_scale, (int, float)):
        raise TypeError(f"w_global_scale: expected a float or a one-element tensor, got "
                        f"{type(w_global_scale).__name__}")
    value = float(w_global_scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"w_global_scale: expected a finite positive number, got {value}")
    return value


def check_nvfp4_w4a16_operands(x, w_q, w_scales, *, contiguous: bool):
    """Validate; returns ``(w_scales as uint8, M, N, K)``."""
    check_tensor("x", x, dtype=(torch.float16, torch.bfloat16), ndim=2, contiguous=contiguous)
    M, K = x.shape
    if K == 0 or K % NVFP4_BLOCK != 0:
        raise ValueError(f"x: expected (M, K) with K a positive multiple of {NVFP4_BLOCK}, got "
                         f"shape {tuple(x.shape)}")
    check_tensor("w_q", w_q, dtype=torch.uint8, shape=(None, K // 2), contiguous=contiguous)
    N = w_q.shape[0]
    w_scales = as_scale_bytes("w_scales", w_scales)
    check_tensor("w_scales", w_scales, shape=(N, K // NVFP4_BLOCK), contiguous=contiguous)
    check_same_device(x=x, w_q=w_q, w_scales=w_scales)
    return w_scales, M, N, K


def nvfp4_w4a16_mm(x, w_q, w_scales, w_global_scale, *, order: str = "low_first"):
    """float32 ``x @ (e2m1(w_q) * e4m3(w_scales) / gs_w)^T``, shape ``(M, N)``.

    Args:
        x: fp16/bf16 ``(M, K)``.
        w_q: uint8 ``(N, K/2)`` packed E2M1; w_scales: uint8/float8_e4m3fn ``(N, K/16)``.
        w_global_scale: the FP32 encode scale gs_w (float or one-element tensor).
    """
    w_scales, M, N, K = check_nvfp4_w4a16_operands(x, w_q, w_scales, contiguous=False)
    check_order(order)
    inv_gs = torch.tensor(1.0 / as_global_scale(w_global_scale), dtype=torch.float32,
                          device=x.device)
    out = torch.empty((M, N), dtype=torch.float32, device=x.device)
    rows = _chunk_rows(K)
    with _ieee_fp32():
        for m0 in range(0, M, rows):
            xf = x[m0:m0 + rows].float()
            for n0 in range(0, N, rows):
                w = dequantize_nvfp4_blocks(w_q[n0:n0 + rows], w_scales[n0:n0 + rows], order)
                out[m0:m0 + rows, n0:n0 + rows] = (xf @ w.T) * inv_gs
    return out
