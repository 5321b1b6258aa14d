"""``w4a16_mm``: fp16/bf16 activations times FP4 weights with 16-bit group scales."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import check_order
from fp4mm.backend import on_device_of_first_argument, resolve_backend
from fp4mm.ops.nvfp4_mm import check_out, choose_kernel, run_gemv_sm90
from fp4mm.ops.prepack import PrepackedW4A16Weight


def unpack_w4a16_weight(w_q, scales, group_size: int, order: str):
    """``(w_q, scales, prepacked_or_None)`` from raw tensors or a ``PrepackedW4A16Weight``
    passed as ``w_q`` (then ``scales`` must be ``None``; ``group_size`` and ``order`` must
    match the ones it was packed with)."""
    if not isinstance(w_q, PrepackedW4A16Weight):
        return w_q, scales, None
    if scales is not None:
        raise ValueError("scales: expected None when w_q is a PrepackedW4A16Weight (it carries "
                         "its scales)")
    if w_q.group_size != group_size:
        raise ValueError(f"group_size: the prepacked weight has groups of {w_q.group_size}, got "
                         f"group_size={group_size}")
    if w_q.order != order:
        raise ValueError(f"order: the prepacked weight was packed from {w_q.order!r} bytes, got "
                         f"order={order!r}")
    return w_q.w_q, w_q.scales, w_q


@on_device_of_first_argument
def w4a16_mm(
    x: torch.Tensor,
    w_q: torch.Tensor | PrepackedW4A16Weight,
    scales: torch.Tensor | None,
    group_size: int,
    *,
    order: str = "low_first",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ (e2m1(w_q) * scales)^T`` as an ``(M, N)`` tensor of ``x.dtype``.

    Args:
        x: fp16/bf16 ``(M, K)`` activations, contiguous.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights, contiguous, or a ``PrepackedW4A16Weight``
            from ``prepack_w4a16_weight`` (then ``scales=None``).
        scales: fp16/bf16 ``(N, K/group_size)`` group scales, contiguous.
        group_size: an even divisor of K (fast paths: powers of two).
        order: nibble order of ``w_q`` (``"low_first"`` canonical; the challenge uses
            ``"high_first"``).
        out: optional preallocated ``(M, N)`` output of ``x.dtype``, written in place.

    Exact up to float32 summation order against ``fp4mm.reference.w4a16_mm``: the kernels dot
    the unscaled E2M1 values (exact in 16 bits) over one group and apply the 16-bit scale to the
    float32 partial sum (groups below 16 form ``e2m1 * scale`` in float32 instead). On Hopper,
    prefill-size M with group sizes 32 or multiples of 64 runs the Gluon GEMM, which re-lays the
    weight out on every call unless it is given a ``PrepackedW4A16Weight``. M = 0 (an empty
    batch) or N = 0 gives an empty ``(M, N)`` output, as ``torch.mm`` does; no kernel runs.
    """
    check_order(order)
    w_q, scales, prepacked = unpack_w4a16_weight(w_q, scales, group_size, order)
    M, N, K = reference.check_w4a16_operands(x, w_q, scales, group_size, contiguous=True)
    out = check_out(out, M, N, x.dtype, x.device)
    if M == 0 or N == 0:  # an empty batch or weight: an empty product, as torch.mm gives
        return out
    if resolve_backend(x.device, x.dtype) == "triton":
        from fp4mm.kernels.fp4_gemm import w4a16_mm_gemm
        from fp4mm.kernels.fp4_gemv import w4a16_mm_gemv

        kernel = choose_kernel("w4a16_mm", M, N, K, x.device, group_size,
                               prepacked=prepacked is not None and prepacked.sm90 is not None)
        if kernel == "gemv_sm90" and run_gemv_sm90(x, None, w_q, scales, 1.0, order, out,
                                                   group_size=group_size):
            return out
        if kernel in ("gemv", "gemv_sm90"):  # gemv_sm90 not run: operands not aligned for it
            w4a16_mm_gemv(x, w_q, scales, group_size, order, out)
        elif kernel == "gemm_sm90":
            from fp4mm.kernels.fp4_gemm_sm90 import fp4_gemm_sm90_grouped

            fp4_gemm_sm90_grouped(x, w_q, scales, group_size, order, out,
                                  prepacked=prepacked.sm90 if prepacked is not None else None)
        else:
            w4a16_mm_gemm(x, w_q, scales, group_size, order, out)
    else:
        out.copy_(reference.w4a16_mm(x, w_q, scales, group_size, order=order))
    return out
