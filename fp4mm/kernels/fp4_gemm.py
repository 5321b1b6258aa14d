"""Prefill GEMM for FP4 weights (plain ``@triton.jit``): ``out[M, N] = alpha * x @ dequant(w)^T``.

One kernel serves the three weight-side problems:

- NVFP4 weights (E4M3 byte scale per 16 along K): ``nvfp4_w4a16_mm`` and, after the activation
  pre-pass of ``fp4mm.kernels.dequant_nvfp4``, the W4A4 ``nvfp4_mm``;
- groupwise FP4 weights (fp16/bf16 scale per ``group_size`` along K): ``w4a16_mm``.

Design (see ``docs/perf-log.md`` for the measurements behind it):

- The kernel computes ``acc^T[n, m] = dequant(W)[n, :] . x[m, :]``: the dequantised weight tile is
  the **left** ``tl.dot`` operand, so on sm_90 Triton issues ``wgmma`` with A in registers and the
  decoded tile never goes back to shared memory. Tokens (M) are the N side of the MMA tile.
- E2M1 codes decode through E4M3: ``(code & 7) << 2 | (code & 8) << 4`` is the E4M3 byte of
  ``value * 2^-6`` (the E2M1 subnormal 0.5 lands on the E4M3 subnormal 2^-7), which converts to
  fp16 exactly (``cvt.rn.f16x2.e4m3x2`` on the GPU). NVFP4 multiplies by ``e4m3(scale) * 2^6`` in
  fp16: both factors and the product (at most 6 significant bits, in [2^-10, 2688]) are exact, and a
  NaN scale byte stays NaN. For bf16 activations the exact fp16 product is converted to bf16
  (exact as well).
- Groupwise weights (16-bit scale per ``group_size``) are **not** rounded to 16 bits: ``e2m1 *
  scale`` needs up to 2 + 11 significant bits (fp16 scale) and would be rounded (max abs error
  0.0156 on the revision-1 case, H100). Instead (``SCALE_GROUP_DOT``, ``group_size % 16 == 0``)
  each K tile is cut into ``SUB = gcd(group_size, BLOCK_K)``-wide chunks, which lie inside one
  group; the exact E2M1 values (fp16/bf16) are dotted with the chunk of x into a fresh fp32
  partial sum, and ``acc += partial * scale[n, group]`` in fp32, as the decode GEMV does. The
  dot's result is consumed in the same iteration, so each ``wgmma`` is retired (``wait 0``)
  before its A registers can be reused (no register-A hazard, see below). Groups that are not a
  multiple of the tensor-core k = 16 (2, 4, 6, 8, ...: only the challenge's tiny functional
  cases) take ``SCALE_GROUP_FMA``: ``e2m1 * scale`` in fp32 (exact: at most 13 bits) and an fp32
  ``tl.dot(..., input_precision="ieee")`` (CUDA-core FMAs, never TF32), exact up to summation
  order; slow, and chosen only for those groups.
- Register-A hazard (triton-lang/triton#9433): Triton's pipelined register-A ``wgmma`` (``wait
  1`` across iterations) lets ptxas overwrite A registers of an in-flight ``wgmma`` in some
  configs (found with ``tests/kernels/_sass_hazard.py`` on the SASS). ``choose_config`` returns
  only configs whose SASS that check passes (``tests/kernels/test_compile_sm90.py`` asserts it
  for every shipped config); see docs/perf-log.md.
- Accumulation is fp32; ``alpha`` is applied in fp32 in the epilogue, then one cast to the output
  dtype.

Kernels see plain contiguous tensors; validation lives in ``fp4mm.ops``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fp4mm.kernels.alpha import alpha_args, apply_alpha
from fp4mm.kernels.fp4_decode import e2m1_to_f16_x64, e4m3_to_f16_x64
from fp4mm.kernels.host import cdiv
from fp4mm.kernels.launch import launch

# Scale paths (constexpr SCALE_PATH):
SCALE_NVFP4 = 0  # uint8 E4M3 bytes, one per 16 along K, row-major (N, K/16): scale folded in fp16
SCALE_GROUP_DOT = 1  # 16-bit, group_size % 16 == 0: fp32 partial dot per chunk, then * scale
SCALE_GROUP_FMA = 2  # 16-bit, any other even group_size: fp32 products, fp32 (FMA) dot


# ----------------------------------------------------------------------------------------- kernel
@triton.jit
def _unpermute_bytes(wb, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Undo the prepacked byte order (see ``permute_weight_bytes``): in every 32-byte group,
    physical byte ``8c + i`` holds logical byte ``4i + c``. The permute is free in registers and
    lets each thread read its 8 bytes per row of a group with one wide shared-memory load."""
    w4 = wb.reshape(BLOCK_N, BLOCK_K // 64, 4, 8)
    return tl.permute(w4, (0, 1, 3, 2)).reshape(BLOCK_N, BLOCK_K // 2)


@triton.jit
def _nvfp4_scales(s_ptr, offs_n, n_ok, k0, K, stride_sn,
                  SCALE_WORDS: tl.constexpr, EVEN_K: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """E4M3 scale bytes of one tile, ``[BLOCK_N, BLOCK_K/16]`` uint8.

    SCALE_WORDS: ``s_ptr`` is the same row-major bytes viewed as int32 (4 scales = 64 K per word),
    so each thread issues one 4-byte load per row, which the pipeliner turns into cp.async.
    Otherwise one byte per scale (a synchronous load in the loop)."""
    if SCALE_WORDS:
        kw = k0 // 64 + tl.arange(0, BLOCK_K // 64)
        words = tl.load(s_ptr + offs_n[:, None] * stride_sn + kw[None, :], mask=n_ok[:, None],
                        other=0)
        shifts = tl.arange(0, 4) * 8
        sb = ((words[:, :, None] >> shifts[None, None, :]) & 0xFF).to(tl.uint8)
        sb = sb.reshape(BLOCK_N, BLOCK_K // 16)
    else:
        ks = k0 // 16 + tl.arange(0, BLOCK_K // 16)
        s_mask = n_ok[:, None] if EVEN_K else n_ok[:, None] & (ks[None, :] < K // 16)
        sb = tl.load(s_ptr + offs_n[:, None] * stride_sn + ks[None, :], mask=s_mask, other=0)
    return sb


@triton.jit
def _decode_codes(wb, HIGH_FIRST: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Packed bytes ``[ROWS, COLS/2]`` -> fp16 ``[ROWS, COLS]`` of ``e2m1 * 2^-6`` (exact)."""
    lo = wb & 0xF
    hi = wb >> 4
    if HIGH_FIRST:
        lo, hi = hi, lo
    # join puts the pair on a new last axis: element 2j from lo, 2j + 1 from hi.
    return tl.join(e2m1_to_f16_x64(lo), e2m1_to_f16_x64(hi)).reshape(ROWS, COLS)


@triton.jit
def _nvfp4_tile(wb, s_ptr, offs_n, k0, N, K, stride_sn,
                DOT_DTYPE: tl.constexpr, HIGH_FIRST: tl.constexpr, EVEN_K: tl.constexpr,
                SCALE_WORDS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Packed bytes ``[BLOCK_N, BLOCK_K/2]`` -> ``e2m1 * e4m3`` ``[BLOCK_N, BLOCK_K]`` of
    DOT_DTYPE (exact: at most 6 significant bits, in [2^-10, 2688])."""
    v = _decode_codes(wb, HIGH_FIRST, BLOCK_N, BLOCK_K)  # value * 2^-6
    sb = _nvfp4_scales(s_ptr, offs_n, offs_n < N, k0, K, stride_sn, SCALE_WORDS, EVEN_K,
                       BLOCK_N, BLOCK_K)
    s = e4m3_to_f16_x64(sb)
    w = (v.reshape(BLOCK_N, BLOCK_K // 16, 16) * s[:, :, None]).reshape(BLOCK_N, BLOCK_K)
    return w.to(DOT_DTYPE)


@triton.jit
def _group_fma_tile(wb, s_ptr, offs_n, k0, N, K, stride_sn,
                    GROUP: tl.constexpr, HIGH_FIRST: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Packed bytes -> fp32 ``e2m1 * scale`` ``[BLOCK_N, BLOCK_K]`` (exact: <= 13 significant
    bits), one (cached) scale load per element: any even group size."""
    v = _decode_codes(wb, HIGH_FIRST, BLOCK_N, BLOCK_K).to(tl.float32) * 64.0
    kk = k0 + tl.arange(0, BLOCK_K)
    s_mask = (offs_n < N)[:, None] & (kk[None, :] < K)
    s = tl.load(s_ptr + offs_n[:, None] * stride_sn + (kk // GROUP)[None, :], mask=s_mask,
                other=0)
    return v * s.to(tl.float32)


@triton.jit
def _fp4_gemm_kernel(
    x_ptr, w_ptr, s_ptr, out_ptr,
    M, N, K, alpha, alpha_ptr,
    stride_xm, stride_wn, stride_sn, stride_om,
    SCALE_PATH: tl.constexpr, GROUP: tl.constexpr, SUB: tl.constexpr, HIGH_FIRST: tl.constexpr,
    EVEN_K: tl.constexpr, SCALE_WORDS: tl.constexpr, W_PERM: tl.constexpr,
    SPLIT_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_N: tl.constexpr, NUM_STAGES: tl.constexpr, ALPHA_PTR: tl.constexpr = False,
):
    """``out[m, n] = alpha * sum_k x[m, k] * dequant(w)[n, k]``.

    x (M, K) fp16/bf16 row-major; w (N, K/2) uint8 packed E2M1; scales (N, K/GROUP) row-major
    (uint8 E4M3 bytes for SCALE_PATH 0, fp16/bf16 otherwise); out (M, N) row-major.
    SUB (SCALE_GROUP_DOT): the K width of one scaled partial dot, dividing GROUP and BLOCK_K.
    SPLIT_M (SCALE_GROUP_DOT): the token tile runs as two halves with their own accumulators, so
    a partial sum is half the size (a 128 x 256 tile's accumulator + partial would spill).
    Program ids walk weight tiles in groups of GROUP_N along N for L2 reuse of x.
    """
    tl.static_assert(BLOCK_K % 16 == 0)
    tl.static_assert(SCALE_PATH != 0 or GROUP == 16)
    tl.static_assert(SCALE_PATH != 1 or (SUB % 16 == 0 and GROUP % SUB == 0
                                         and BLOCK_K % SUB == 0))
    tl.static_assert(not SCALE_WORDS or (SCALE_PATH == 0 and BLOCK_K % 64 == 0 and EVEN_K))
    tl.static_assert(not W_PERM or (SCALE_PATH == 0 and BLOCK_K % 64 == 0 and EVEN_K))
    tl.static_assert(not SPLIT_M or SCALE_PATH == 1)
    DOT_DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    # the K width of one tl.dot: the whole tile, or one group chunk (SCALE_GROUP_DOT)
    KD: tl.constexpr = SUB if SCALE_PATH == 1 else BLOCK_K
    HM: tl.constexpr = BLOCK_M // 2 if SPLIT_M else BLOCK_M  # tokens per accumulator

    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    in_group = GROUP_N * num_pid_m
    first_n = (pid // in_group) * GROUP_N
    group_rows = tl.minimum(num_pid_n - first_n, GROUP_N)
    pid_n = first_n + (pid % in_group) % group_rows
    pid_m = (pid % in_group) // group_rows

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, HM)
    offs_kb = tl.arange(0, KD // 2)
    offs_k = tl.arange(0, KD)
    n_ok = offs_n < N
    m_ok = offs_m < M
    m_ok2 = offs_m + HM < M  # the second half (SPLIT_M)
    # 64-bit row offsets: x (M x K) and out (M x N) pass 2^31 elements at long prefills
    w_ptrs = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn + offs_kb[None, :]
    x_ptrs = x_ptr + offs_m.to(tl.int64)[None, :] * stride_xm + offs_k[:, None]  # x^T [KD, HM]

    acc = tl.zeros((BLOCK_N, HM), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, HM), dtype=tl.float32)  # second token half (SPLIT_M only)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=NUM_STAGES):
        for j in tl.static_range(BLOCK_K // KD):
            kj = k0 + j * KD
            if EVEN_K:
                wb = tl.load(w_ptrs + j * (KD // 2), mask=n_ok[:, None], other=0)
                xt = tl.load(x_ptrs + j * KD, mask=m_ok[None, :], other=0.0)
            else:
                wb = tl.load(w_ptrs + j * (KD // 2),
                             mask=n_ok[:, None] & (offs_kb[None, :] < (K - kj) // 2), other=0)
                xt = tl.load(x_ptrs + j * KD,
                             mask=m_ok[None, :] & (offs_k[:, None] < K - kj), other=0.0)
            if SCALE_PATH == 0:
                if W_PERM:
                    wb = _unpermute_bytes(wb, BLOCK_N, BLOCK_K)
                w = _nvfp4_tile(wb, s_ptr, offs_n, k0, N, K, stride_sn, DOT_DTYPE, HIGH_FIRST,
                                EVEN_K, SCALE_WORDS, BLOCK_N, BLOCK_K)
                acc = tl.dot(w, xt, acc)
            elif SCALE_PATH == 1:
                # exact E2M1 values; a chunk of KD = SUB columns lies inside one group
                v = (_decode_codes(wb, HIGH_FIRST, BLOCK_N, KD) * 64.0).to(DOT_DTYPE)
                s = tl.load(s_ptr + offs_n * stride_sn + kj // GROUP, mask=n_ok & (kj < K),
                            other=0)
                s = s.to(tl.float32)[:, None]
                acc += tl.dot(v, xt) * s
                if SPLIT_M:
                    x2 = x_ptrs + HM * stride_xm + j * KD
                    if EVEN_K:
                        xt2 = tl.load(x2, mask=m_ok2[None, :], other=0.0)
                    else:
                        xt2 = tl.load(x2, mask=m_ok2[None, :] & (offs_k[:, None] < K - kj),
                                      other=0.0)
                    acc2 += tl.dot(v, xt2) * s
            else:
                w = _group_fma_tile(wb, s_ptr, offs_n, k0, N, K, stride_sn, GROUP, HIGH_FIRST,
                                    BLOCK_N, BLOCK_K)
                acc = tl.dot(w, xt.to(tl.float32), acc, input_precision="ieee")
        w_ptrs += BLOCK_K // 2
        x_ptrs += BLOCK_K

    out_ptrs = out_ptr + offs_m.to(tl.int64)[None, :] * stride_om + offs_n[:, None]
    tl.store(out_ptrs, apply_alpha(acc, alpha, alpha_ptr, ALPHA_PTR).to(out_ptr.dtype.element_ty),
             mask=m_ok[None, :] & n_ok[:, None])
    if SPLIT_M:
        tl.store(out_ptrs + HM * stride_om,
                 apply_alpha(acc2, alpha, alpha_ptr, ALPHA_PTR).to(out_ptr.dtype.element_ty),
                 mask=m_ok2[None, :] & n_ok[:, None])


# --------------------------------------------------------------------------------------- launcher
@dataclass(frozen=True)
class GemmConfig:
    """Tile shape and schedule. BLOCK_N: weight rows per tile (the MMA M side); BLOCK_M: tokens
    per tile (the MMA N side); BLOCK_K: reduction step (multiple of 16)."""

    block_n: int = 128
    block_m: int = 128
    block_k: int = 64
    group_n: int = 8
    num_stages: int = 3
    num_warps: int = 8


def is_valid_config(cfg: GemmConfig) -> bool:
    """The one validity predicate (heuristics, benchmarks and tests all use it)."""
    pow2 = lambda v: v > 0 and v & (v - 1) == 0
    return (
        all(pow2(v) for v in (cfg.block_n, cfg.block_m, cfg.block_k, cfg.num_warps))
        and cfg.block_k >= 16
        and cfg.block_n >= 16
        and cfg.block_m >= 8
        and cfg.group_n >= 1
        and cfg.num_stages >= 1
    )


def choose_config(M: int, N: int, K: int, group_size: int | None = None, *,
                  prepacked: bool = False) -> GemmConfig:
    """Heuristic tile choice (see docs/perf-log.md, "fp4_gemm (Triton, prefill)").

    ``group_size=None``: NVFP4 weights (``prepacked``: the permuted byte layout); otherwise the
    groupwise paths. Every config returned here
    compiles for sm_90 with no register-A hazard (tests/kernels/test_compile_sm90.py checks the
    SASS of each): with the tile-wide register-A ``wgmma`` of the NVFP4 path, 3-5 pipeline stages
    left 24-59 instructions overwriting A registers of an in-flight ``wgmma`` at 128 x 128 and
    128 x 256 tiles on raw bytes, 2 stages none (H100: 0.42x instead of 0.55x cuBLAS bf16); the
    prepacked layout has none at 4 stages (0.63x); the groupwise dot path retires each ``wgmma``
    in its iteration."""
    if group_size is not None and group_size % 16 != 0:
        # SCALE_GROUP_FMA (fp32 CUDA-core dot): only tiny functional cases use such groups
        return GemmConfig(block_n=32, block_m=32, block_k=32, num_stages=2, num_warps=4)
    # Groupwise: one group chunk per K tile (the measured configs; several chunks per tile are
    # right too, see launch_fp4_gemm, but were not re-timed).
    one_chunk = (lambda bk: bk) if group_size is None else (lambda bk: math.gcd(group_size, bk))
    if M <= 16:
        return GemmConfig(block_n=64, block_m=16, block_k=one_chunk(128), num_stages=4,
                          num_warps=4)
    if M <= 64:  # 4 warps spilled 40-84 B (ptxas, sm_90); 8 warps none (not re-timed)
        return GemmConfig(block_n=128, block_m=64, block_k=one_chunk(128), num_stages=4,
                          num_warps=8)
    stages = 2 if group_size is None and not prepacked else 4
    if M <= 128:
        return GemmConfig(block_n=128, block_m=128, block_k=one_chunk(64), num_stages=stages,
                          num_warps=8)
    # H100, 2048 x 18432 x 3072 NVFP4 (docs/perf-log.md): 128x256x64 ran 0.57x cuBLAS bf16 on raw
    # weights (3 stages; 4 stages the same within noise) and 0.61x prepacked with 4 stages;
    # 128x128x64 0.41-0.44x, 256x128x64 0.35-0.40x, BLOCK_K 128 0.37-0.46x.
    if group_size is None:
        return GemmConfig(block_n=128, block_m=256, block_k=64, num_stages=stages, num_warps=8)
    # groupwise: accumulator + fp32 partial of a 128 x 256 tile; one group chunk per K step keeps
    # one partial live at a time (two chunks per step spill 456 B at BLOCK_K 64, group 32)
    block_k = 32 if group_size % 32 == 0 else 16
    return GemmConfig(block_n=128, block_m=256, block_k=block_k, num_stages=4, num_warps=8)


def _scale_path(nvfp4: bool, group_size: int) -> int:
    if nvfp4:
        return SCALE_NVFP4
    return SCALE_GROUP_DOT if group_size % 16 == 0 else SCALE_GROUP_FMA


def _sub_k(path: int, group_size: int, block_k: int) -> int:
    """K width of one scaled partial dot (SCALE_GROUP_DOT): a chunk inside one group."""
    return math.gcd(group_size, block_k) if path == SCALE_GROUP_DOT else block_k


def _split_m(path: int, block_m: int) -> bool:
    """Two token halves per tile (SCALE_GROUP_DOT with BLOCK_M >= 256): accumulator and
    partial sum of a 128 x 256 tile need 256 registers per thread and spill (ptxas)."""
    return path == SCALE_GROUP_DOT and block_m >= 256


def launch_fp4_gemm(x, w_q, scales, out, *, group_size: int, nvfp4: bool, alpha,
                    order: str, config: GemmConfig | None = None, w_permuted: bool = False,
                    scale_words: bool | None = None) -> None:
    """Run the kernel: ``out = alpha * x @ dequant(w_q, scales)^T``.

    Args:
        x: fp16/bf16 ``(M, K)`` contiguous activations (the dot dtype).
        w_q: uint8 ``(N, K/2)`` packed E2M1 in ``order``; with ``w_permuted`` the prepacked layout
            of ``fp4mm.ops.prepack`` (low-first, bytes permuted per 32-byte group).
        scales: ``(N, K/group_size)``: uint8 E4M3 bytes when ``nvfp4`` (group_size 16), else
            fp16/bf16.
        out: ``(M, N)`` contiguous fp16/bf16/fp32, written in full.
        alpha: a float or a one-element float32 tensor on the device (``fp4mm.kernels.alpha``).
        scale_words: read NVFP4 scales as int32 words (needs K % 64 == 0, a 4-byte aligned base
            and BLOCK_K % 64 == 0). ``None`` = with the prepacked layout only: on raw weights
            ptxas serialises the wgmma (C7515) and it ran 0.47x vs 0.57x cuBLAS (H100, perf-log).
    """
    M, K = x.shape
    N = w_q.shape[0]
    cfg = config or choose_config(M, N, K, None if nvfp4 else group_size)
    if not is_valid_config(cfg):
        raise ValueError(f"config: invalid {cfg}")
    even_k = K % cfg.block_k == 0
    words_ok = (nvfp4 and K % 64 == 0 and cfg.block_k % 64 == 0 and even_k
                and scales.data_ptr() % 4 == 0)
    words = (words_ok and w_permuted) if scale_words is None else (scale_words and words_ok)
    if w_permuted and not (even_k and cfg.block_k % 64 == 0):
        raise ValueError(f"config: the prepacked layout needs BLOCK_K % 64 == 0 dividing K = {K}, "
                         f"got {cfg}")
    s_arg = scales.view(torch.int32) if words else scales
    path = _scale_path(nvfp4, group_size)
    if _sub_k(path, group_size, cfg.block_k) == 16 and cfg.block_n < 64:
        # 16-wide group chunks on tiles of fewer than 64 weight rows (mma.sync rather than
        # wgmma on sm_90) are right in the interpreter but miscompiled for sm_90: wrong results
        # on an H100 for every such config tried (scripts/gpu_group16_probe.py,
        # bench/results/2026-11-26-group16-probe-h100.json); BLOCK_N >= 64 and 32-wide chunks
        # were right in every config.
        raise ValueError(f"config: BLOCK_N = {cfg.block_n} < 64 with 16-wide group chunks "
                         f"(group_size {group_size}, BLOCK_K {cfg.block_k}) miscompiles on "
                         f"sm_90; use BLOCK_N >= 64")
    grid = (cdiv(N, cfg.block_n) * cdiv(M, cfg.block_m),)
    alpha, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    launch(_fp4_gemm_kernel, grid,
        x, w_q, s_arg, out, M, N, K, alpha, alpha_ptr,
        x.stride(0), w_q.stride(0), s_arg.stride(0), out.stride(0),
        SCALE_PATH=path, GROUP=group_size, SUB=_sub_k(path, group_size, cfg.block_k),
        SPLIT_M=_split_m(path, cfg.block_m),
        HIGH_FIRST=(order == "high_first") and not w_permuted,
        EVEN_K=even_k, SCALE_WORDS=words, W_PERM=w_permuted,
        BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
        GROUP_N=cfg.group_n, NUM_STAGES=cfg.num_stages, ALPHA_PTR=alpha_on_device,
        num_warps=cfg.num_warps,
    )


def nvfp4_w4a16_mm_gemm(x, w_q, w_scales, alpha, order: str, out, *, prepacked=None,
                        config: GemmConfig | None = None) -> None:
    """NVFP4 weights, fp16/bf16 activations: ``out = alpha * x @ (e2m1(w_q) * e4m3(w_scales))^T``.

    ``prepacked`` (a ``PrepackedNVFP4Weight`` of these weights) switches to its permuted bytes when
    the tile config allows (BLOCK_K % 64 == 0, dividing K)."""
    cfg = config or choose_config(x.shape[0], w_q.shape[0], x.shape[1],
                                  prepacked=prepacked is not None)
    if prepacked is not None and cfg.block_k % 64 == 0 and x.shape[1] % cfg.block_k == 0:
        launch_fp4_gemm(x, prepacked.packed, w_scales, out, group_size=16, nvfp4=True,
                        alpha=alpha, order="low_first", config=cfg, w_permuted=True)
    else:  # raw bytes: the raw heuristic (its stage count is the hazard-free one)
        launch_fp4_gemm(x, w_q, w_scales, out, group_size=16, nvfp4=True, alpha=alpha,
                        order=order, config=config)


def w4a16_mm_gemm(x, w_q, scales, group_size: int, order: str, out, *,
                  config: GemmConfig | None = None) -> None:
    """Groupwise FP4 weights: ``out = x @ (e2m1(w_q) * scales)^T``."""
    launch_fp4_gemm(x, w_q, scales, out, group_size=group_size, nvfp4=False, alpha=1.0,
                    order=order, config=config)


def nvfp4_mm_gemm(x_q, x_scales, w_q, w_scales, alpha, order: str, out, *,
                  prepacked=None, config: GemmConfig | None = None) -> None:
    """W4A4: dequantise x to fp16 (exact), then the NVFP4-weight GEMM with ``alpha``."""
    from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4

    x = dequant_nvfp4(x_q, x_scales, order=order, dtype=torch.float16)
    nvfp4_w4a16_mm_gemm(x, w_q, w_scales, alpha, order, out, prepacked=prepacked, config=config)
