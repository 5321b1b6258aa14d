"""``nvfp4_mm``: NVFP4 x NVFP4 (W4A4) matmul."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import as_alpha, check_order, check_out_dtype, check_same_device, check_tensor
from fp4mm.backend import resolve_backend
from fp4mm.ops.dispatch import select_kernel
from fp4mm.ops.prepack import PrepackedNVFP4Weight


def check_out(out, M: int, N: int, out_dtype: torch.dtype, device: torch.device):
    """``out`` (optional) must be a contiguous ``(M, N)`` tensor of ``out_dtype`` on ``device``."""
    if out is None:
        return torch.empty((M, N), dtype=out_dtype, device=device)
    check_tensor("out", out, dtype=out_dtype, shape=(M, N))
    check_same_device(inputs=torch.empty(0, device=device), out=out)
    return out


def unpack_weight(w_q, w_scales, order: str):
    """``(w_q, w_scales, prepacked_or_None)`` from raw tensors or a ``PrepackedNVFP4Weight``
    passed as ``w_q`` (then ``w_scales`` must be ``None`` and ``order`` must match)."""
    if not isinstance(w_q, PrepackedNVFP4Weight):
        return w_q, w_scales, None
    if w_scales is not None:
        raise ValueError("w_scales: expected None when w_q is a PrepackedNVFP4Weight (it carries "
                         "its scales)")
    if w_q.order != order:
        raise ValueError(f"order: the prepacked weight was packed from {w_q.order!r} bytes, got "
                         f"order={order!r}")
    return w_q.w_q, w_q.w_scales, w_q


def use_gemv(op: str, M: int, N: int, K: int, device: torch.device,
             group_size: int | None = None) -> bool:
    """The measured table in ``fp4mm.ops.dispatch`` picks the decode GEMV or the GEMM."""
    return select_kernel(op, M, N, K, device, group_size=group_size) == "gemv"


def nvfp4_mm(
    x_q: torch.Tensor,
    x_scales: torch.Tensor,
    w_q: torch.Tensor | PrepackedNVFP4Weight,
    w_scales: torch.Tensor | None,
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
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights, contiguous, or a
            ``PrepackedNVFP4Weight`` from ``prepack_nvfp4_weight`` (then ``w_scales=None``).
        w_scales: uint8 or float8_e4m3fn ``(N, K/16)``.
        alpha: finite float or one-element tensor; for quantised tensors ``1 / (gs_x * gs_w)``.
        out_dtype: float16 (default), bfloat16 or float32.
        order: nibble order shared by ``x_q`` and ``w_q`` (the product does not depend on it as
            long as both use the same one).
        out: optional preallocated ``(M, N)`` output of ``out_dtype``, written in place.

    Exact up to float32 summation order against ``fp4mm.reference.nvfp4_mm`` (the activations
    are dequantised to fp16 exactly, products accumulate in fp32). A NaN scale byte gives NaN in
    every output that reads it.
    """
    check_order(order)
    w_q, w_scales, prepacked = unpack_weight(w_q, w_scales, order)
    x_q, x_scales, w_q, w_scales, M, N, K = reference.check_nvfp4_operands(
        x_q, x_scales, w_q, w_scales, contiguous=True
    )
    alpha = as_alpha(alpha)
    check_out_dtype(out_dtype)
    out = check_out(out, M, N, out_dtype, x_q.device)
    if resolve_backend(x_q.device) == "triton":
        if use_gemv("nvfp4_mm", M, N, K, x_q.device):
            from fp4mm.kernels.fp4_gemv import nvfp4_mm_gemv

            nvfp4_mm_gemv(x_q, x_scales, w_q, w_scales, alpha, order, out)
        else:
            from fp4mm.kernels.fp4_gemm import nvfp4_mm_gemm

            nvfp4_mm_gemm(x_q, x_scales, w_q, w_scales, alpha, order, out, prepacked=prepacked)
    else:
        out.copy_(reference.nvfp4_mm(x_q, x_scales, w_q, w_scales, alpha, order=order))
    return out
