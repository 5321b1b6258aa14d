"""NVFP4 -> fp16/bf16 dequantisation pre-pass (the activations of the W4A4 GEMM).

``out[m, k] = e2m1(q[m, k]) * e4m3(scales[m, k // 16])``, exact in fp16 and bf16 (at most 6
significant bits, magnitudes in [2^-10, 2688]); a NaN scale byte gives NaN for its 16 elements.
The global scale is *not* applied (the GEMM folds it into alpha).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fp4mm.kernels.fp4_decode import e2m1_to_f16_x64, e4m3_to_f16_x64
from fp4mm.kernels.host import cdiv
from fp4mm.kernels.launch import launch
from fp4mm.kernels.pdl import pdl_epilogue, pdl_prologue


@triton.jit
def _dequant_nvfp4_kernel(q_ptr, s_ptr, out_ptr, R, K, stride_q, stride_s, stride_o, zero_ptr,
                          n_zero, HIGH_FIRST: tl.constexpr, BLOCK_R: tl.constexpr,
                          BLOCK_K: tl.constexpr, PDL: tl.constexpr, ZERO: tl.constexpr,
                          ROW64: tl.constexpr = False, PDL_LATE: tl.constexpr = False):
    """q (R, K/2) uint8, s (R, K/16) uint8 E4M3, out (R, K) fp16/bf16; one [BLOCK_R, BLOCK_K] tile
    per program. PDL (launched with ``launch_pdl``): wait for the previous kernel before any
    memory access, then let the next kernel (the GEMM, which waits for this one) launch; with
    PDL_LATE only after the stores (the TMA GEMV of ``nvfp4_mm``'s 17-32-token route).
    ZERO: program (0, 0) also zeroes int32 ``zero_ptr[0:n_zero]`` (the next kernel's counters,
    without a memset node between the two launches). ROW64: 64-bit row offsets, for tensors
    past 2^31 elements (where 32-bit ones suffice they are kept: the 64-bit ones measured 2-3%
    slower at 2048 x 3072 on an H100)."""
    tl.static_assert(BLOCK_K % 16 == 0)
    pdl_prologue(PDL, PDL_LATE)
    if ZERO:
        if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
            for z in range(0, n_zero, 1024):
                offs_z = z + tl.arange(0, 1024)
                tl.store(zero_ptr + offs_z, tl.zeros([1024], tl.int32), mask=offs_z < n_zero)
    if ROW64:  # R x K past 2^31 elements (long prefills): int32 offsets would wrap
        offs_r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    else:
        offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    k0 = tl.program_id(1) * BLOCK_K
    offs_kb = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    offs_ks = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    r_ok = offs_r[:, None] < R
    qb = tl.load(q_ptr + offs_r[:, None] * stride_q + offs_kb[None, :],
                 mask=r_ok & (offs_kb[None, :] < K // 2), other=0)
    sb = tl.load(s_ptr + offs_r[:, None] * stride_s + offs_ks[None, :],
                 mask=r_ok & (offs_ks[None, :] < K // 16), other=0)
    lo = qb & 0xF
    hi = qb >> 4
    if HIGH_FIRST:
        lo, hi = hi, lo
    # (e2m1 * 2^-6) * (scale * 2^6), every factor and the product exact in fp16
    v = tl.join(e2m1_to_f16_x64(lo), e2m1_to_f16_x64(hi)).reshape(BLOCK_R, BLOCK_K)
    s = e4m3_to_f16_x64(sb)
    x = (v.reshape(BLOCK_R, BLOCK_K // 16, 16) * s[:, :, None]).reshape(BLOCK_R, BLOCK_K)
    offs_k = k0 + tl.arange(0, BLOCK_K)
    tl.store(out_ptr + offs_r[:, None] * stride_o + offs_k[None, :],
             x.to(out_ptr.dtype.element_ty), mask=r_ok & (offs_k[None, :] < K))
    pdl_epilogue(PDL, PDL_LATE)


def dequant_nvfp4(q: torch.Tensor, scales: torch.Tensor, *, order: str = "low_first",
                  dtype: torch.dtype = torch.float16, out: torch.Tensor | None = None,
                  pdl: bool = False, zero: torch.Tensor | None = None,
                  row64: bool | None = None, pdl_late: bool = False) -> torch.Tensor:
    """``e2m1(q) * e4m3(scales)`` as an ``(R, K)`` tensor of ``dtype`` (fp16 or bf16).

    Args:
        q: uint8 ``(R, K/2)`` packed E2M1, contiguous, nibble order ``order``.
        scales: uint8 ``(R, K/16)`` E4M3 bytes, contiguous.
        out: optional ``(R, K)`` tensor of ``dtype`` to write.
        pdl: launch with programmatic dependent launch (CUDA, sm_90+), so that a next kernel
            launched the same way starts early (it must wait for this one before reading).
        zero: an int32 tensor to zero as well (the GEMM's split-K counters).
        row64: 64-bit row offsets; ``None``: where a tensor passes 2^31 elements (int32 offsets
            would wrap there).
        pdl_late: with ``pdl``, let the next kernel launch only once this one's stores are
            issued (not at its start).
    Inputs are trusted (the public ops validate).
    """
    R, K = q.shape[0], q.shape[1] * 2
    if out is None:
        out = torch.empty((R, K), dtype=dtype, device=q.device)
    block_r, block_k = 32, 128
    grid = (cdiv(R, block_r), cdiv(K, block_k))
    launch(_dequant_nvfp4_kernel, grid, q, scales, out, R, K, q.stride(0), scales.stride(0),
           out.stride(0), out if zero is None else zero,
           0 if zero is None else zero.numel(),
           HIGH_FIRST=order == "high_first", BLOCK_R=block_r,
           BLOCK_K=block_k, PDL=pdl, ZERO=zero is not None,
           ROW64=(max(R * K, out.stride(0) * R) >= 2**31 if row64 is None
                  else row64),
           PDL_LATE=pdl and pdl_late, launch_pdl=pdl, num_warps=4)
    return out
