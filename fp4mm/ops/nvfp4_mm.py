"""``nvfp4_mm``: NVFP4 x NVFP4 (W4A4) matmul."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import as_alpha, check_order, check_out_dtype, check_same_device, check_tensor
from fp4mm.backend import resolve_backend


def check_out(out, M: int, N: int, out_dtype: torch.dtype, device: torch.device):
    """``out`` (optional) must be a contiguous ``(M, N)`` tensor of ``out_dtype`` on ``device``."""
    if out is None:
        return torch.empty((M, N), dtype=out_dtype, device=device)
    check_tensor("out", out, dtype=out_dtype, shape=(M, N))
    check_same_device(inputs=torch.empty(0, device=device), out=out)
    return out


def nvfp4_mm(
    x_q: torch.Tensor,
    x_scales: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    alpha,
    *,
    out_dtype: torch.dtype = torch.float16,
    order: str = "low_first",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * dequant(x) @ dequant(w)^T`` as an ``(M, N)`` tensor of ``out_dtype``.

    Args:
        x_q: uint8 ``(M, K/2)`` packed E2M1 activations, contiguous; K % 16 == 0.
        x_scales: uint8 or float8_e4m3fn ``(M, K/16)`` E4M3 block scales, row-major.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights, contiguous.
        w_scales: uint8 or float8_e4m3fn ``(N, K/16)``.
        alpha: finite float or one-element tensor; for quantised tensors ``1 / (gs_x * gs_w)``.
        out_dtype: float16 (default), bfloat16 or float32.
        order: nibble order shared by ``x_q`` and ``w_q`` (the product does not depend on it as
            long as both use the same one).
        out: optional preallocated ``(M, N)`` output of ``out_dtype``, written in place.

    Exact up to float32 summation order against ``fp4mm.reference.nvfp4_mm``.
    """
    x_q, x_scales, w_q, w_scales, M, N, K = reference.check_nvfp4_operands(
        x_q, x_scales, w_q, w_scales, contiguous=True
    )
    alpha = as_alpha(alpha)
    check_order(order)
    check_out_dtype(out_dtype)
    out = check_out(out, M, N, out_dtype, x_q.device)
    if resolve_backend(x_q.device) == "triton":
        from fp4mm.kernels.nvfp4_mm import nvfp4_mm_triton

        nvfp4_mm_triton(x_q, x_scales, w_q, w_scales, alpha, out)
    else:
        out.copy_(reference.nvfp4_mm(x_q, x_scales, w_q, w_scales, alpha, order=order))
    return out
