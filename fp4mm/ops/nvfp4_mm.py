"""``nvfp4_mm``: NVFP4 x NVFP4 (W4A4) matmul."""

from __future__ import annotations

import torch

from fp4mm import reference
from fp4mm._validate import (
    as_alpha,
    check_order,
    check_out_dtype,
    check_same_device,
    check_tensor,
    kernel_scalar,
)
from fp4mm.backend import is_hopper, on_device_of_first_argument, resolve_backend
from fp4mm.ops.dispatch import (
    GEMV_FP8_SM90_MAX_M,
    GEMV_SM90_RING_MAX_M_16BIT_X,
    GEMV_SM90_RING_MAX_M_GROUPED,
    GEMV_SM90_TMA_MIN_M,
    GEMV_W4A4_TMA_MIN_M,
    GEMV_W4A4_TMA_MIN_WEIGHT,
    gemv_sm90_max_m,
    select_kernel,
    tma_min_m_grouped,
)
from fp4mm.ops.prepack import PrepackedNVFP4Weight


def check_out(out, M: int, N: int, out_dtype: torch.dtype, device: torch.device):
    """``out`` (optional) must be a contiguous ``(M, N)`` tensor of ``out_dtype`` on ``device``."""
    if out is None:
        return torch.empty((M, N), dtype=out_dtype, device=device)
    check_tensor("out", out, dtype=out_dtype, shape=(M, N))
    check_same_device(inputs=device, out=out)
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


def choose_kernel(op: str, M: int, N: int, K: int, device: torch.device,
                  group_size: int | None = None, prepacked: bool = False) -> str:
    """``"gemv_sm90"`` (the Gluon decode GEMVs: Hopper, M <= ``gemv_sm90_max_m(op, N)``,
    K % 128 == 0, NVFP4 weights or group sizes 32, 64 and multiples of 128 up to
    ``GEMV_SM90_RING_MAX_M_GROUPED`` tokens, or 16 at up to two tokens; the group sizes
    :func:`~fp4mm.ops.dispatch.tma_min_m_grouped` knows above that with K % 256 == 0;
    :func:`run_gemv_sm90` picks which), ``"gemv"`` (the plain-Triton
    decode GEMV), ``"gemm_sm90"`` (the Gluon warp-specialised GEMM: Hopper, NVFP4 weights or
    group sizes 32 and multiples of 64) or ``"gemm"`` (the plain-Triton GEMM: other GPUs, other
    group sizes, the interpreter). The
    measured table in ``fp4mm.ops.dispatch`` places the boundaries. ``"gemv_sm90"`` also needs
    16-byte aligned operands (and for 16-bit x above 16 tokens K % 256 == 0): see
    :func:`run_gemv_sm90`, which leaves the rest to ``"gemv"``."""
    nvfp4 = op != "w4a16_mm"
    if select_kernel(op, M, N, K, device, group_size=group_size, prepacked=prepacked) == "gemv":
        if is_hopper(device) and M <= gemv_sm90_max_m(op, N) and K % 128 == 0:
            from fp4mm.kernels import fp4_gemv_sm90, fp4_gemv_tma_sm90

            if nvfp4 or (fp4_gemv_sm90.group_size_is_supported(group_size)
                         and M <= fp4_gemv_sm90.max_m(False, group_size)):
                return "gemv_sm90"
            if (M > GEMV_SM90_RING_MAX_M_GROUPED and K % fp4_gemv_tma_sm90.KCHUNK == 0
                    and tma_min_m_grouped(group_size) is not None):
                return "gemv_sm90"  # the TMA-fed GEMV with group scales
        return "gemv"
    if is_hopper(device):
        from fp4mm.kernels.fp4_gemm_sm90 import group_k

        if nvfp4 or group_k(group_size):
            return "gemm_sm90"
    return "gemm"


def run_gemv_sm90(x, x_scales, w_q, w_scales, alpha, order: str, out, *,
                  group_size: int | None = None) -> bool:
    """Run a Gluon decode GEMV if every operand suits it (contiguous, 16-byte aligned); return
    False (nothing run) otherwise, so the caller takes the plain-Triton GEMV. ``group_size``:
    ``w_scales`` are 16-bit group scales (``w4a16_mm``). NVFP4 activations (W4A4) of up to
    ``GEMV_FP8_SM90_MAX_M`` tokens with K % 256 == 0 take the E4M3-wgmma GEMV
    (``fp4_gemv_fp8_sm90``); from ``GEMV_W4A4_TMA_MIN_M`` tokens, on weights of
    ``GEMV_W4A4_TMA_MIN_WEIGHT`` elements or more, x dequantised to fp16 (the GEMM's pre-pass)
    and the TMA-fed GEMV, where it applies. NVFP4 weights with 16-bit x at
    ``GEMV_SM90_TMA_MIN_M`` tokens or more take the TMA-fed GEMV (``fp4_gemv_tma_sm90``); where
    it does not apply, the register-ring GEMV (``fp4_gemv_sm90``) serves them up to
    ``GEMV_SM90_RING_MAX_M_16BIT_X`` tokens, and above that nothing does. 16-bit group scales
    of the sizes in ``GEMV_SM90_TMA_MIN_M_GROUPED`` (every multiple of 128 as 128), from that
    many tokens (:func:`~fp4mm.ops.dispatch.tma_min_m_grouped`), take the TMA-fed
    GEMV too, where it applies (else the ring up to ``GEMV_SM90_RING_MAX_M_GROUPED``).
    Everything else that fits goes to the register-ring GEMV."""
    from fp4mm.kernels import fp4_gemv_fp8_sm90, fp4_gemv_sm90, fp4_gemv_tma_sm90

    M, K = x.shape[0], w_q.shape[1] * 2
    if (x_scales is not None and M <= GEMV_FP8_SM90_MAX_M
            and fp4_gemv_fp8_sm90.is_supported(out.device, M, K, x, x_scales, w_q, w_scales,
                                               out)):
        fp4_gemv_fp8_sm90.gemv_fp8_sm90(x, x_scales, w_q, w_scales, alpha, out)
        return True
    if (x_scales is not None and M >= GEMV_W4A4_TMA_MIN_M
            and w_q.shape[0] * K >= GEMV_W4A4_TMA_MIN_WEIGHT
            and fp4_gemv_tma_sm90.is_supported(out.device, M, K, w_q, w_scales)):
        from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4

        # exact (E2M1 x E4M3 fits fp16); with PDL, but the GEMV may launch only after the
        # pre-pass's stores: launched at its start, the GEMV's CTAs piled onto the SMs the
        # pre-pass left free, 11-44 us slower at K >= 8192 (dispatch.GEMV_W4A4_TMA_MIN_M).
        # Nothing piles up behind a late trigger, so no fair-share pad (0-0.44 us slower with
        # it); the early trigger with the pad instead was 1-4% either way by shape (session 33,
        # bench/results/2026-11-28-fair-share-route-h100.json)
        x16 = dequant_nvfp4(x, x_scales, order=order, dtype=torch.float16, pdl=True,
                            pdl_late=True)
        fp4_gemv_tma_sm90.gemv_tma_sm90(x16, w_q, w_scales, alpha, order, out, fair_share=False)
        return True
    if x_scales is None and group_size is None and M >= GEMV_SM90_TMA_MIN_M:
        if fp4_gemv_tma_sm90.is_supported(out.device, M, K, x, w_q, w_scales):
            fp4_gemv_tma_sm90.gemv_tma_sm90(x, w_q, w_scales, alpha, order, out)
            return True
        if M > GEMV_SM90_RING_MAX_M_16BIT_X:
            return False
    first_tma = tma_min_m_grouped(group_size)
    if (first_tma is not None and M >= first_tma
            and fp4_gemv_tma_sm90.is_supported(out.device, M, K, x, w_q, w_scales)):
        fp4_gemv_tma_sm90.gemv_tma_sm90(x, w_q, w_scales, alpha, order, out,
                                        group_size=group_size)
        return True
    if group_size is not None and M > GEMV_SM90_RING_MAX_M_GROUPED:
        return False
    tensors = (x, w_q, w_scales, out) if x_scales is None else (x, x_scales, w_q, w_scales, out)
    if not fp4_gemv_sm90.is_supported(out.device, M, K, *tensors, group_size=group_size,
                                      x_fp4=x_scales is not None):
        return False
    fp4_gemv_sm90.gemv_sm90(x, x_scales, w_q, w_scales, alpha, order, out,
                            group_size=group_size)
    return True


def triton_layout(prepacked: PrepackedNVFP4Weight | None) -> PrepackedNVFP4Weight | None:
    """The prepacked weight if it holds the plain-Triton GEMM's layout, else ``None`` (raw)."""
    return prepacked if prepacked is not None and prepacked.packed is not None else None


def sm90_layout(prepacked: PrepackedNVFP4Weight | None):
    """The Gluon kernel's packed weight if ``prepacked`` holds one, else ``None`` (it packs);
    a deferred one (a callable, see ``PrepackedNVFP4Weight.sm90``) is made here."""
    sm90 = prepacked.sm90 if prepacked is not None else None
    return sm90() if callable(sm90) else sm90


@on_device_of_first_argument
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
            A float32 tensor on the GPU is read by the kernel itself (no host sync, so the call
            can be captured in a CUDA graph); its value is then not checked.
        out_dtype: float16 (default), bfloat16 or float32.
        order: nibble order shared by ``x_q`` and ``w_q`` (the product does not depend on it as
            long as both use the same one).
        out: optional preallocated ``(M, N)`` output of ``out_dtype``, written in place.

    Exact up to float32 summation order against ``fp4mm.reference.nvfp4_mm`` (the activations
    are dequantised to fp16 exactly, products accumulate in fp32). A NaN scale byte gives NaN in
    every output that reads it. M = 0 (an empty batch) or N = 0 gives an empty ``(M, N)``
    output, as ``torch.mm`` does; no kernel runs.
    """
    check_order(order)
    w_q, w_scales, prepacked = unpack_weight(w_q, w_scales, order)
    x_q, x_scales, w_q, w_scales, M, N, K = reference.check_nvfp4_operands(
        x_q, x_scales, w_q, w_scales, contiguous=True
    )
    check_out_dtype(out_dtype)
    out = check_out(out, M, N, out_dtype, x_q.device)
    if resolve_backend(x_q.device) == "triton":
        alpha = kernel_scalar("alpha", alpha, x_q.device)  # a device tensor stays one: no sync
        if M == 0 or N == 0:  # an empty batch or weight: an empty product, as torch.mm gives
            return out
        # Imported here: triton is needed only on this path.
        from fp4mm.kernels import fp4_gemm_sm90
        from fp4mm.kernels.fp4_gemm import nvfp4_mm_gemm
        from fp4mm.kernels.fp4_gemv import nvfp4_mm_gemv

        kernel = choose_kernel("nvfp4_mm", M, N, K, x_q.device, prepacked=prepacked is not None)
        if kernel == "gemv_sm90" and run_gemv_sm90(x_q, x_scales, w_q, w_scales, alpha, order,
                                                    out):
            return out
        if kernel in ("gemv", "gemv_sm90"):  # gemv_sm90 not run: operands not aligned for it
            nvfp4_mm_gemv(x_q, x_scales, w_q, w_scales, alpha, order, out)
        elif kernel == "gemm_sm90":
            fp4_gemm_sm90.fp4_gemm_sm90(x_q, x_scales, w_q, w_scales, alpha, order, out,
                                        prepacked=sm90_layout(prepacked))
        else:
            nvfp4_mm_gemm(x_q, x_scales, w_q, w_scales, alpha, order, out,
                          prepacked=triton_layout(prepacked))
    else:
        out.copy_(reference.nvfp4_mm(x_q, x_scales, w_q, w_scales, as_alpha(alpha), order=order))
    return out
