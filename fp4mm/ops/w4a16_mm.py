"""``w4a16_mm``: fp16/bf16 activations times FP4 weights with 16-bit group scales."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import check_order
from fp4mm.backend import resolve_backend
from fp4mm.ops.nvfp4_mm import check_out


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
        group_size: an even divisor of K.
        order: nibble order of ``w_q`` (``"low_first"`` canonical; the challenge uses
            ``"high_first"``).
        out: optional preallocated ``(M, N)`` output of ``x.dtype``, written in place.
    """
    M, N, K = reference.check_w4a16_operands(x, w_q, scales, group_size, contiguous=True)
    check_order(order)
    out = check_out(out, M, N, x.dtype, x.device)
    if resolve_backend(x.device) == "triton":
        from fp4mm.kernels.w4a16_mm import w4a16_mm_triton

        w4a16_mm_triton(x, w_q, scales, group_size, order, out)
    else:
        out.copy_(reference.w4a16_mm(x, w_q, scales, group_size, order=order))
    return out
