"""The oracle: exact FP32 dequantise-and-matmul, on any device.

E2M1 x E4M3 products are exact in float32, so these results differ from any correct kernel only
by the order of the float32 summation. TF32 is switched off for the duration of each call.
Work is done in chunks of rows so that the dequantised copies stay under ``_CHUNK_ELEMENTS``
float32 values (the 2048 x 18432 x 3072 case runs in well under 1 GiB).

A NaN scale byte (0x7F or 0xFF) makes the 16 elements it scales NaN, hence every output that
reads them NaN; the kernels follow the same rule.
"""

from __future__ import annotations

import contextlib

import torch

from fp4mm._validate import (
    as_alpha,
    as_scalar,
    check_group_size,
    check_order,
    check_same_device,
    check_tensor,
)
from fp4mm.formats.groupwise import SCALE_DTYPES, dequantize_fp4_groupwise
from fp4mm.formats.nvfp4 import NVFP4_BLOCK, dequantize_nvfp4_blocks

_CHUNK_ELEMENTS = 1 << 24


@contextlib.contextmanager
def _ieee_fp32():
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


def _chunk_rows(K: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(K, 1))


def _chunked_product(M: int, N: int, K: int, device, x_rows, w_rows, scale=None):
    """float32 ``(x @ w^T) * scale``, ``(M, N)``, from functions that return float32 row ranges
    ``[r0, r1)`` of ``x`` and ``w``: no dequantised chunk holds more than _CHUNK_ELEMENTS values."""
    out = torch.empty((M, N), dtype=torch.float32, device=device)
    rows = _chunk_rows(K)
    with _ieee_fp32():
        for m0 in range(0, M, rows):
            x = x_rows(m0, m0 + rows)
            for n0 in range(0, N, rows):
                product = x @ w_rows(n0, n0 + rows).T
                out[m0:m0 + rows, n0:n0 + rows] = product if scale is None else product * scale
    return out


def as_scale_bytes(name: str, scales) -> torch.Tensor:
    """E4M3 scales as raw bytes: uint8 as is, float8_e4m3fn reinterpreted."""
    if isinstance(scales, torch.Tensor) and scales.dtype == torch.float8_e4m3fn:
        return scales.view(torch.uint8)
    return check_tensor(name, scales, dtype=(torch.uint8, torch.float8_e4m3fn), contiguous=False)


def _check_nvfp4_weight(w_q, w_scales, K: int, *, contiguous: bool):
    """NVFP4 weights for a reduction length K; returns ``(w_scales as uint8, N)``."""
    check_tensor("w_q", w_q, dtype=torch.uint8, shape=(None, K // 2), contiguous=contiguous)
    N = w_q.shape[0]
    w_scales = as_scale_bytes("w_scales", w_scales)
    check_tensor("w_scales", w_scales, shape=(N, K // NVFP4_BLOCK), contiguous=contiguous)
    return w_scales, N


def check_nvfp4_operands(x_q, x_scales, w_q, w_scales, *, contiguous: bool):
    """Validate a W4A4 problem; returns ``(x_q, x_scales, w_q, w_scales, M, N, K)`` with scales
    as uint8 bytes."""
    check_tensor("x_q", x_q, dtype=torch.uint8, ndim=2, contiguous=contiguous)
    M, K = x_q.shape[0], x_q.shape[1] * 2
    if K == 0 or K % NVFP4_BLOCK != 0:
        raise ValueError(
            f"x_q: expected (M, K/2) with K a positive multiple of {NVFP4_BLOCK}, "
            f"got shape {tuple(x_q.shape)} (K = {K})"
        )
    w_scales, N = _check_nvfp4_weight(w_q, w_scales, K, contiguous=contiguous)
    x_scales = as_scale_bytes("x_scales", x_scales)
    check_tensor("x_scales", x_scales, shape=(M, K // NVFP4_BLOCK), contiguous=contiguous)
    check_same_device(x_q=x_q, x_scales=x_scales, w_q=w_q, w_scales=w_scales)
    return x_q, x_scales, w_q, w_scales, M, N, K


def check_w4a16_operands(x, w_q, scales, group_size, *, contiguous: bool):
    """Validate a W4A16 problem; returns ``(M, N, K)``."""
    check_tensor("x", x, dtype=(torch.float16, torch.bfloat16), ndim=2, contiguous=contiguous)
    M, K = x.shape
    check_tensor("w_q", w_q, dtype=torch.uint8, ndim=2, contiguous=contiguous)
    if w_q.shape[1] * 2 != K:
        raise ValueError(
            f"w_q: expected shape (N, K/2) = (*, {K // 2}) to match x of shape {tuple(x.shape)}, "
            f"got {tuple(w_q.shape)}"
        )
    N = w_q.shape[0]
    check_group_size(group_size, K)
    check_tensor("scales", scales, dtype=SCALE_DTYPES, shape=(N, K // group_size),
                 contiguous=contiguous)
    check_same_device(x=x, w_q=w_q, scales=scales)
    return M, N, K


def check_nvfp4_w4a16_operands(x, w_q, w_scales, *, contiguous: bool):
    """Validate 16-bit activations against NVFP4 weights; returns
    ``(w_scales as uint8, M, N, K)``."""
    check_tensor("x", x, dtype=(torch.float16, torch.bfloat16), ndim=2, contiguous=contiguous)
    M, K = x.shape
    if K == 0 or K % NVFP4_BLOCK != 0:
        raise ValueError(
            f"x: expected (M, K) with K a positive multiple of {NVFP4_BLOCK}, "
            f"got shape {tuple(x.shape)}"
        )
    w_scales, N = _check_nvfp4_weight(w_q, w_scales, K, contiguous=contiguous)
    check_same_device(x=x, w_q=w_q, w_scales=w_scales)
    return w_scales, M, N, K


def nvfp4_mm(x_q, x_scales, w_q, w_scales, alpha, *, order: str = "low_first") -> torch.Tensor:
    """float32 ``alpha * dequant(x) @ dequant(w)^T``, shape ``(M, N)``.

    Args:
        x_q: uint8 ``(M, K/2)`` packed E2M1 activations.
        x_scales: uint8 (or float8_e4m3fn) ``(M, K/16)`` E4M3 block scales, row-major.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights.
        w_scales: uint8 (or float8_e4m3fn) ``(N, K/16)``.
        alpha: finite float (or one-element tensor), e.g. ``1 / (gs_x * gs_w)``.
        order: nibble order of both packed operands.
    """
    x_q, x_scales, w_q, w_scales, M, N, K = check_nvfp4_operands(
        x_q, x_scales, w_q, w_scales, contiguous=False
    )
    alpha32 = torch.tensor(as_alpha(alpha), dtype=torch.float32, device=x_q.device)
    check_order(order)
    return _chunked_product(
        M, N, K, x_q.device,
        lambda m0, m1: dequantize_nvfp4_blocks(x_q[m0:m1], x_scales[m0:m1], order),
        lambda n0, n1: dequantize_nvfp4_blocks(w_q[n0:n1], w_scales[n0:n1], order),
        alpha32,
    )


def w4a16_mm(x, w_q, scales, group_size: int, *, order: str = "low_first") -> torch.Tensor:
    """float32 ``x @ (e2m1(w_q) * scales)^T``, shape ``(M, N)``.

    Args:
        x: fp16/bf16 ``(M, K)`` activations.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights.
        scales: fp16/bf16 ``(N, K/group_size)`` group scales.
        group_size: an even divisor of K.
        order: nibble order of ``w_q``.
    """
    M, N, K = check_w4a16_operands(x, w_q, scales, group_size, contiguous=False)
    check_order(order)
    return _chunked_product(
        M, N, K, x.device,
        lambda m0, m1: x[m0:m1].float(),
        lambda n0, n1: dequantize_fp4_groupwise(w_q[n0:n1], scales[n0:n1], group_size, order),
    )


def nvfp4_w4a16_mm(x, w_q, w_scales, w_global_scale, *, order: str = "low_first") -> torch.Tensor:
    """float32 ``x @ (e2m1(w_q) * e4m3(w_scales) / gs_w)^T``, shape ``(M, N)``.

    Args:
        x: fp16/bf16 ``(M, K)`` activations; K % 16 == 0.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights.
        w_scales: uint8 (or float8_e4m3fn) ``(N, K/16)`` E4M3 block scales.
        w_global_scale: the FP32 encode scale gs_w (finite, positive; float or one-element tensor).
        order: nibble order of ``w_q``.
    """
    w_scales, M, N, K = check_nvfp4_w4a16_operands(x, w_q, w_scales, contiguous=False)
    check_order(order)
    gs = as_scalar("w_global_scale", w_global_scale, positive=True)
    inv_gs = torch.tensor(1.0 / gs, dtype=torch.float32, device=x.device)
    return _chunked_product(
        M, N, K, x.device,
        lambda m0, m1: x[m0:m1].float(),
        lambda n0, n1: dequantize_nvfp4_blocks(w_q[n0:n1], w_scales[n0:n1], order),
        inv_gs,
    )
