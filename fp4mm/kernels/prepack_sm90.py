"""Memory-speed prepack of NVFP4 weights for ``fp4_gemm_sm90`` (plain Triton, interpreter-safe),
and of 16-bit group scales (``group_scales_sm90_triton``, the fp32 layout of
``fp4_gemm_sm90.prepack_grouped_sm90``).

Produces exactly the ``codes`` and ``scales`` tensors of ``fp4_gemm_sm90.prepack_weight_sm90``
(its torch code is the twin), layout in that module's docstring. Per (128-row block nb, 64-K tile
kt), with input row ``16 w + 8 h + 4 g1 + g0`` (g = 4 g1 + g0) and input code byte ``4 i + c``:

- codes: the ``[128, 32]`` byte tile goes to row ``nb*16 + 2 w + g1``, column
  ``kt*256 + 64 g0 + 16 c + 2 i + h`` (nibbles swapped to low-first for ``high_first``);
- scales: the ``[128, 4]`` tile (K-block kb) goes to row ``nb*8 + w``, column
  ``kt*64 + 8 g + 2 kb + h``.

Rows >= N and K >= the logical K read as zero, so the padding (rows to a multiple of 128, K to a
multiple of 128) is zero codes and zero scales, as in the twin. The permutation is done in
registers (reshape / permute / join) between one wide load and one wide store per tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fp4mm.kernels.host import cdiv
from fp4mm.kernels.launch import launch

BM = 128  # weight rows per block (fp4_gemm_sm90.BM)
BK = 64  # K per tile (fp4_gemm_sm90.BK)
K_ALIGN = 2 * BK  # K is padded to an even number of 64-K tiles (fp4_gemm_sm90.K_ALIGN)


@triton.jit
def _prepack_sm90_kernel(q_ptr, s_ptr, codes_ptr, scales_ptr, N, KB, KS,
                         stride_qn, stride_qk, stride_sn, stride_sk, stride_c, stride_o,
                         HIGH_FIRST: tl.constexpr, KT_PER: tl.constexpr,
                         WITH_SCALES: tl.constexpr):
    """q (N, KB = K/2) uint8, s (N, KS = K/16) uint8; codes (Np/8, Kp*4) and scales (Np/16, Kp)
    uint8, row strides stride_c / stride_o. One program: 128 rows x KT_PER 64-K tiles.
    WITH_SCALES False: codes only (16-bit group scales have their own layout)."""
    nb = tl.program_id(0).to(tl.int64)  # 64-bit rows: a weight may pass 2^31 bytes
    rows = nb * 128 + tl.arange(0, 128)
    row_ok = rows[:, None] < N
    out_c_rows = nb * 16 + tl.arange(0, 16)
    out_s_rows = nb * 8 + tl.arange(0, 8)
    for j in tl.static_range(KT_PER):
        kt = tl.program_id(1) * KT_PER + j
        # codes: [128, 32] bytes = (w 8, h 2, g1 2, g0 4) x (i 8, c 4)
        kb = kt * 32 + tl.arange(0, 32)
        q = tl.load(q_ptr + rows[:, None] * stride_qn + kb[None, :] * stride_qk,
                    mask=row_ok & (kb[None, :] < KB), other=0)
        if HIGH_FIRST:
            q = (q >> 4) | ((q & 0xF) << 4)
        q = tl.permute(q.reshape(8, 2, 2, 4, 8, 4), (0, 2, 3, 5, 4, 1))  # w, g1, g0, c, i, h
        q = q.reshape(16, 256)
        cols = kt * 256 + tl.arange(0, 256)
        tl.store(codes_ptr + out_c_rows[:, None] * stride_c + cols[None, :], q)
        if WITH_SCALES:
            # scales: [128, 4] = (w 8, h 2, g 8) x (kb 4) -> (w) x (g, kb, h)
            ks = kt * 4 + tl.arange(0, 4)
            s = tl.load(s_ptr + rows[:, None] * stride_sn + ks[None, :] * stride_sk,
                        mask=row_ok & (ks[None, :] < KS), other=0)
            s = tl.permute(s.reshape(8, 2, 8, 4), (0, 2, 3, 1)).reshape(8, 64)  # w, g, kb, h
            scols = kt * 64 + tl.arange(0, 64)
            tl.store(scales_ptr + out_s_rows[:, None] * stride_o + scols[None, :], s)


@triton.jit
def _group_scales_sm90_kernel(s_ptr, out_ptr, N, K, group_size, num_kt, stride_sn, stride_sk,
                              GK: tl.constexpr):
    """16-bit (N, K/group_size) group scales -> fp32, element ``((nb * num_kt + kt) * 64/GK + j)
    * 128 + r`` = scale of row ``128 nb + r`` at K column ``64 kt + GK j`` (0 past N or K).
    One program per (128-row block nb, 64-K tile kt)."""
    NG: tl.constexpr = 64 // GK
    nb = tl.program_id(0)
    kt = tl.program_id(1)
    j = tl.arange(0, NG)
    r = tl.arange(0, 128)
    rows = nb * 128 + r
    k0 = kt * 64 + j * GK
    ok = (rows[None, :] < N) & (k0[:, None] < K)
    v = tl.load(s_ptr + rows[None, :] * stride_sn + (k0 // group_size)[:, None] * stride_sk,
                mask=ok, other=0.0)
    tl.store(out_ptr + ((nb * num_kt + kt) * NG + j[:, None]) * 128 + r[None, :],
             v.to(tl.float32))


def group_scales_sm90_triton(scales: torch.Tensor, group_size: int, gk: int) -> torch.Tensor:
    """The fp32 1-D group-scale layout of ``fp4_gemm_sm90.prepack_grouped_sm90`` (bit for bit
    its torch twin ``prepack_group_scales_sm90``) in one pass: ``scales`` fp16/bf16
    ``(N, K/group_size)`` (any strides), ``gk`` = ``fp4_gemm_sm90.group_k(group_size)``."""
    if gk not in (32, 64) or group_size % gk:
        raise ValueError(f"gk: expected 32 or 64 dividing group_size {group_size}, got {gk}")
    N, K = scales.shape[0], scales.shape[1] * group_size
    num_nb, num_kt = cdiv(N, BM), cdiv(K, K_ALIGN) * K_ALIGN // BK
    out = torch.empty(num_nb * num_kt * BM * BK // gk, dtype=torch.float32, device=scales.device)
    if N:
        launch(_group_scales_sm90_kernel, (num_nb, num_kt),
            scales, out, N, K, group_size, num_kt, scales.stride(0), scales.stride(1), GK=gk,
            num_warps=1)
    return out


def _kt_per_program(num_kt: int) -> int:
    """64-K tiles per program. 1 (one 4.5 KB tile, 4 warps) was the fastest of kt_per {1, 2, 4,
    8} x warps {4, 8} on an H100 at 18432x3072 high_first (36.9 us vs 37.4-44.1 us; a same-run
    clone of the input bytes 30.2 us): bench/results/2026-11-26-prepack_sm90-h100.json. Small
    programs keep many CTAs per SM in flight; the unrolled loop of fatter ones did not help."""
    return 1


def prepack_sm90_triton(w_q: torch.Tensor, w_scales: torch.Tensor | None,
                        order: str = "low_first", *, kt_per_program: int | None = None,
                        num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(codes, scales)`` of ``prepack_weight_sm90`` (bit for bit), computed by one kernel.

    Args:
        w_q: uint8 ``(N, K/2)`` packed E2M1 codes, nibble order ``order`` (any strides).
        w_scales: uint8 or float8_e4m3fn ``(N, K/16)`` E4M3 scales (any strides), or ``None``
            for the codes alone (``scales`` is then ``None``).
        order: ``"low_first"`` (even K in the low nibble) or ``"high_first"``.
        kt_per_program: 64-K tiles per program (must divide Kp/64); default ``_kt_per_program``.
        num_warps: warps per program (config override, for the GPU sweep).
    Returns:
        codes uint8 ``(Np/128*16, Kp/64*256)`` and scales uint8 ``(Np/128*8, Kp/64*64)``, fresh
        contiguous tensors on ``w_q``'s device (Np = N rounded up to 128, Kp = K rounded up to 128).
    """
    if w_q.dtype != torch.uint8 or w_q.dim() != 2:
        raise ValueError(f"w_q: expected a 2-D uint8 tensor, got {w_q.dtype} {tuple(w_q.shape)}")
    N, K = w_q.shape[0], w_q.shape[1] * 2
    with_scales = w_scales is not None
    if with_scales:
        if w_scales.dtype == torch.float8_e4m3fn:
            w_scales = w_scales.view(torch.uint8)
        if w_scales.dtype != torch.uint8 or tuple(w_scales.shape) != (N, K // 16) or K % 16:
            raise ValueError(f"w_scales: expected uint8/float8_e4m3fn ({N}, {K // 16}) with "
                             f"K % 16 == 0, got {w_scales.dtype} {tuple(w_scales.shape)} "
                             f"(K = {K})")
        if w_scales.device != w_q.device:
            raise ValueError(f"w_scales: on {w_scales.device}, w_q on {w_q.device}")
    if order not in ("low_first", "high_first"):
        raise ValueError(f"order: expected 'low_first' or 'high_first', got {order!r}")
    num_nb, num_kt = cdiv(N, BM), cdiv(K, K_ALIGN) * K_ALIGN // BK
    kt_per = _kt_per_program(num_kt) if kt_per_program is None else kt_per_program
    if kt_per < 1 or num_kt % kt_per:
        raise ValueError(f"kt_per_program: {kt_per} does not divide the {num_kt} K tiles")
    codes = torch.empty((num_nb * 16, num_kt * 256), dtype=torch.uint8, device=w_q.device)
    scales = (torch.empty((num_nb * 8, num_kt * 64), dtype=torch.uint8, device=w_q.device)
              if with_scales else None)
    if N == 0:
        return codes, scales
    s_in, s_out = (w_scales, scales) if with_scales else (codes, codes)  # unused without scales
    launch(_prepack_sm90_kernel, (num_nb, num_kt // kt_per),
        w_q, s_in, codes, s_out, N, K // 2, K // 16, w_q.stride(0), w_q.stride(1),
        s_in.stride(0), s_in.stride(1), codes.stride(0), s_out.stride(0),
        HIGH_FIRST=order == "high_first", KT_PER=kt_per, WITH_SCALES=with_scales,
        num_warps=num_warps)
    return codes, scales
