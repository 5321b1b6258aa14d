"""``nvfp4_w4a16_mm``: fp16/bf16 activations times NVFP4 weights (E4M3 scales per 16 along K and
an FP32 global encode scale), as NVFP4 checkpoints need when activations stay in 16 bits."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import as_scalar, check_order, kernel_scalar
from fp4mm.backend import on_device_of_first_argument, resolve_backend
from fp4mm.ops.nvfp4_mm import (
    check_out,
    choose_kernel,
    run_gemv_sm90,
    sm90_layout,
    triton_layout,
    unpack_weight,
)
from fp4mm.ops.prepack import PrepackedNVFP4Weight


def nvfp4_w4a16_mm(
    x: torch.Tensor,
    w_q: torch.Tensor | PrepackedNVFP4Weight,
    w_scales: torch.Tensor | None,
    w_global_scale,
    *,
    order: str = "low_first",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ (e2m1(w_q) * e4m3(w_scales) / gs_w)^T`` as an ``(M, N)`` tensor of ``x.dtype``.

    Args:
        x: fp16/bf16 ``(M, K)`` activations, contiguous; K % 16 == 0.
        w_q: uint8 ``(N, K/2)`` packed E2M1 weights, contiguous, or a ``PrepackedNVFP4Weight``
            (then ``w_scales=None``).
        w_scales: uint8 or float8_e4m3fn ``(N, K/16)`` E4M3 block scales, row-major.
        w_global_scale: the FP32 *encode* scale ``gs_w = 448 * 6 / amax(|w|)`` (a float or a
            one-element tensor; ModelOpt stores its reciprocal as ``weight_scale_2``). A float32
            tensor on the GPU is not read on the host (no sync; CUDA-graph capturable), so its
            value is then not checked.
        order: nibble order of ``w_q``.
        out: optional preallocated ``(M, N)`` output of ``x.dtype``, written in place.

    The dequantised weights ``e2m1 * e4m3`` are exact in fp16 and bf16; ``1/gs_w`` is applied to
    the fp32 accumulator. M = 0 (an empty batch) or N = 0 gives an empty ``(M, N)`` output, as
    ``torch.mm`` does; no kernel runs.
    """
    return _nvfp4_w4a16_mm(x, w_q, w_scales, "w_global_scale", w_global_scale, True, order, out)


def nvfp4_w4a16_mm_alpha(
    x: torch.Tensor,
    w_q: torch.Tensor | PrepackedNVFP4Weight,
    w_scales: torch.Tensor | None,
    alpha,
    *,
    order: str = "low_first",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`nvfp4_w4a16_mm` with the output factor given instead of the encode scale:
    ``alpha = 1 / gs_w`` (what ModelOpt stores as ``weight_scale_2``), a positive float or a
    one-element floating tensor. A float32 tensor on x's device goes to the kernels as it is,
    so a call launches no reciprocal (``NVFP4Linear`` passes its ``weight_scale_2``); its value
    is then not checked. Other arguments as in :func:`nvfp4_w4a16_mm`."""
    return _nvfp4_w4a16_mm(x, w_q, w_scales, "alpha", alpha, False, order, out)


@on_device_of_first_argument
def _nvfp4_w4a16_mm(x, w_q, w_scales, name, factor, reciprocal, order, out):
    """The product with the output factor ``1 / factor`` (``reciprocal``: ``factor`` is gs_w)
    or ``factor`` (it is alpha itself); ``name`` names it in errors."""
    check_order(order)
    w_q, w_scales, prepacked = unpack_weight(w_q, w_scales, order)
    w_scales, M, N, K = reference.check_nvfp4_w4a16_operands(x, w_q, w_scales, contiguous=True)
    out = check_out(out, M, N, x.dtype, x.device)
    if resolve_backend(x.device, x.dtype) == "triton":
        # the output factor as a float, or as a device tensor without a host sync
        alpha = kernel_scalar(name, factor, x.device, positive=True, reciprocal=reciprocal)
        if M == 0 or N == 0:  # an empty batch or weight: an empty product, as torch.mm gives
            return out
        from fp4mm.kernels import fp4_gemm_sm90
        from fp4mm.kernels.fp4_gemm import nvfp4_w4a16_mm_gemm
        from fp4mm.kernels.fp4_gemv import nvfp4_w4a16_mm_gemv

        kernel = choose_kernel("nvfp4_w4a16_mm", M, N, K, x.device,
                               prepacked=prepacked is not None)
        if kernel == "gemv_sm90" and run_gemv_sm90(x, None, w_q, w_scales, alpha, order, out):
            return out
        if kernel in ("gemv", "gemv_sm90"):  # gemv_sm90 not run: no Gluon GEMV applies
            nvfp4_w4a16_mm_gemv(x, w_q, w_scales, alpha, order, out)
        elif kernel == "gemm_sm90":
            fp4_gemm_sm90.fp4_gemm_sm90_w4a16(x, w_q, w_scales, alpha, order, out,
                                              prepacked=sm90_layout(prepacked))
        else:
            nvfp4_w4a16_mm_gemm(x, w_q, w_scales, alpha, order, out,
                                prepacked=triton_layout(prepacked))
    else:
        f = as_scalar(name, factor, positive=True)
        out.copy_(reference.nvfp4_w4a16_mm(x, w_q, w_scales, f if reciprocal else 1.0 / f,
                                           order=order))
    return out
