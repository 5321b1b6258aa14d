"""``w4a16_mm``: fp16/bf16 activations times FP4 weights with 16-bit group scales."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import check_order
from fp4mm.backend import resolve_backend
from fp4mm.ops.nvfp4_mm import check_out, choose_kernel, run_gemv_sm90


def w4a16_mm(
    x: torch.Tensor,
    w_q: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    *,
    order: str = "low_first",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ (e2m1(w_q) * scales)^T`` as an ``(M, N)`` tensor of ``x.dtype``.

    Args:
        x: fp16/bf16 ``(M, K)`` activations, contiguous.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights, contiguous.
        scales: fp16/bf16 ``(N, K/group_size)`` group scales, contiguous.
        group_size: an even divisor of K (fast paths: powers of two).
        order: nibble order of ``w_q`` (``"low_first"`` canonical; the challenge uses
            ``"high_first"``).
        out: optional preallocated ``(M, N)`` output of ``x.dtype``, written in place.

    Exact up to float32 summation order against ``fp4mm.reference.w4a16_mm``: the kernels dot
    the unscaled E2M1 values (exact in 16 bits) over one group and apply the 16-bit scale to the
    float32 partial sum (groups below 16 form ``e2m1 * scale`` in float32 instead).
    """
    M, N, K = reference.check_w4a16_operands(x, w_q, scales, group_size, contiguous=True)
    check_order(order)
    out = check_out(out, M, N, x.dtype, x.device)
    if resolve_backend(x.device, x.dtype) == "triton":
        from fp4mm.kernels.fp4_gemm import w4a16_mm_gemm
        from fp4mm.kernels.fp4_gemv import w4a16_mm_gemv

        kernel = choose_kernel("w4a16_mm", M, N, K, x.device, group_size)
        if kernel == "gemv_sm90" and run_gemv_sm90(x, None, w_q, scales, 1.0, order, out,
                                                   group_size=group_size):
            return out
        if kernel in ("gemv", "gemv_sm90"):  # gemv_sm90 not run: operands not aligned for it
            w4a16_mm_gemv(x, w_q, scales, group_size, order, out)
        else:
            w4a16_mm_gemm(x, w_q, scales, group_size, order, out)
    else:
        out.copy_(reference.w4a16_mm(x, w_q, scales, group_size, order=order))
    return out
