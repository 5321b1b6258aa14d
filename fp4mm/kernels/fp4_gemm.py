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
- Groupwise weights multiply the exact E2M1 value by the 16-bit scale in the dot dtype when the
  scale has that dtype (one rounding, as any 16-bit dequantiser), otherwise in fp32 then round.
- Accumulation is fp32; ``alpha`` is applied in fp32 in the epilogue, then one cast to the output
  dtype.

Kernels see plain contiguous tensors; validation lives in ``fp4mm.ops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Scale paths (constexpr SCALE_PATH):
SCALE_NVFP4 = 0  # uint8 E4M3 bytes, one per 16 along K, row-major (N, K/16)
SCALE_GROUP_BLOCK = 1  # 16-bit, group_size a power of two dividing BLOCK_K: broadcast in registers
SCALE_GROUP_ROW = 2  # 16-bit, BLOCK_K divides group_size: one scale per row per K tile
SCALE_GROUP_GATHER = 3  # 16-bit, any other even group_size: one (cached) load per element


# ----------------------------------------------------------------------------------------- kernel
@triton.jit
def _e2m1_to_f16(codes):
    """uint8 E2M1 codes (0..15) -> fp16 ``value * 2^-6``, exactly (via the E4M3 byte)."""
    e4m3 = ((codes & 7) << 2) | ((codes & 8) << 4)
    return e4m3.to(tl.float8e4nv, bitcast=True).to(tl.float16)


@triton.jit
def _e4m3_to_f16_times_64(sb):
    """uint8 E4M3 bytes -> fp16 ``scale * 2^6`` (exact; max 448 * 64 = 28672). The NaN bytes
    0x7F/0xFF are mapped to NaN explicitly: the hardware conversion does so, Triton's CPU
    interpreter does not (it decodes 0x7F as 480)."""
    s = sb.to(tl.float8e4nv, bitcast=True).to(tl.float16) * 64.0
    return tl.where((sb & 0x7F) == 0x7F, float("nan"), s)


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
def _dequant_tile(wb, s_ptr, offs_n, k0, N, K, stride_sn,
                  DOT_DTYPE: tl.constexpr, SCALE_PATH: tl.constexpr, GROUP: tl.constexpr,
                  HIGH_FIRST: tl.constexpr, EVEN_K: tl.constexpr, SCALE_WORDS: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Packed bytes ``[BLOCK_N, BLOCK_K/2]`` -> dequantised ``[BLOCK_N, BLOCK_K]`` of DOT_DTYPE."""
    lo = wb & 0xF
    hi = wb >> 4
    if HIGH_FIRST:
        lo, hi = hi, lo
    # join puts the pair on a new last axis: element 2j from lo, 2j + 1 from hi.
    v = tl.join(_e2m1_to_f16(lo), _e2m1_to_f16(hi)).reshape(BLOCK_N, BLOCK_K)  # value * 2^-6
    n_ok = offs_n < N
    if SCALE_PATH == 0:
        sb = _nvfp4_scales(s_ptr, offs_n, n_ok, k0, K, stride_sn, SCALE_WORDS, EVEN_K,
                           BLOCK_N, BLOCK_K)
        s = _e4m3_to_f16_times_64(sb)
        w = (v.reshape(BLOCK_N, BLOCK_K // 16, 16) * s[:, :, None]).reshape(BLOCK_N, BLOCK_K)
        w = w.to(DOT_DTYPE)
    else:
        S_DTYPE: tl.constexpr = s_ptr.dtype.element_ty
        MUL_DTYPE: tl.constexpr = DOT_DTYPE if S_DTYPE == DOT_DTYPE else tl.float32
        v = (v * 64.0).to(MUL_DTYPE)  # exact E2M1 value
        if SCALE_PATH == 1:
            ks = k0 // GROUP + tl.arange(0, BLOCK_K // GROUP)
            s_mask = n_ok[:, None] if EVEN_K else n_ok[:, None] & (ks[None, :] < K // GROUP)
            s = tl.load(s_ptr + offs_n[:, None] * stride_sn + ks[None, :], mask=s_mask, other=0)
            s = s.to(MUL_DTYPE)
            w = (v.reshape(BLOCK_N, BLOCK_K // GROUP, GROUP) * s[:, :, None])
            w = w.reshape(BLOCK_N, BLOCK_K).to(DOT_DTYPE)
        elif SCALE_PATH == 2:
            s = tl.load(s_ptr + offs_n * stride_sn + k0 // GROUP, mask=n_ok, other=0)
            w = (v * s.to(MUL_DTYPE)[:, None]).to(DOT_DTYPE)
        else:
            kk = k0 + tl.arange(0, BLOCK_K)
            s_mask = n_ok[:, None] & (kk[None, :] < K)
            s = tl.load(s_ptr + offs_n[:, None] * stride_sn + (kk // GROUP)[None, :],
                        mask=s_mask, other=0)
            w = (v * s.to(MUL_DTYPE)).to(DOT_DTYPE)
    return w


@triton.jit
def _fp4_gemm_kernel(
    x_ptr, w_ptr, s_ptr, out_ptr,
    M, N, K, alpha,
    stride_xm, stride_wn, stride_sn, stride_om,
    SCALE_PATH: tl.constexpr, GROUP: tl.constexpr, HIGH_FIRST: tl.constexpr,
    EVEN_K: tl.constexpr, SCALE_WORDS: tl.constexpr, W_PERM: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_N: tl.constexpr, NUM_STAGES: tl.constexpr,
):
    """``out[m, n] = alpha * sum_k x[m, k] * dequant(w)[n, k]``.

    x (M, K) fp16/bf16 row-major; w (N, K/2) uint8 packed E2M1; scales (N, K/GROUP) row-major
    (uint8 E4M3 bytes for SCALE_PATH 0, fp16/bf16 otherwise); out (M, N) row-major.
    Program ids walk weight tiles in groups of GROUP_N along N for L2 reuse of x.
    """
    tl.static_assert(BLOCK_K % 16 == 0)
    tl.static_assert(SCALE_PATH != 0 or GROUP == 16)
    tl.static_assert(SCALE_PATH != 1 or BLOCK_K % GROUP == 0)
    tl.static_assert(not SCALE_WORDS or (SCALE_PATH == 0 and BLOCK_K % 64 == 0 and EVEN_K))
    tl.static_assert(not W_PERM or (BLOCK_K % 64 == 0 and EVEN_K))
    DOT_DTYPE: tl.constexpr = x_ptr.dtype.element_ty

    pid = tl.program_id(0)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    in_group = GROUP_N * num_pid_m
    first_n = (pid // in_group) * GROUP_N
    group_rows = tl.minimum(num_pid_n - first_n, GROUP_N)
    pid_n = first_n + (pid % in_group) % group_rows
    pid_m = (pid % in_group) // group_rows

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_kb = tl.arange(0, BLOCK_K // 2)
    offs_k = tl.arange(0, BLOCK_K)
    n_ok = offs_n < N
    m_ok = offs_m < M
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_kb[None, :]
    x_ptrs = x_ptr + offs_m[None, :] * stride_xm + offs_k[:, None]  # x^T tile [BLOCK_K, BLOCK_M]

    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for k0 in tl.range(0, K, BLOCK_K, num_stages=NUM_STAGES):
        if EVEN_K:
            wb = tl.load(w_ptrs, mask=n_ok[:, None], other=0)
            xt = tl.load(x_ptrs, mask=m_ok[None, :], other=0.0)
        else:
            wb = tl.load(w_ptrs, mask=n_ok[:, None] & (offs_kb[None, :] < (K - k0) // 2), other=0)
            xt = tl.load(x_ptrs, mask=m_ok[None, :] & (offs_k[:, None] < K - k0), other=0.0)
        if W_PERM:
            wb = _unpermute_bytes(wb, BLOCK_N, BLOCK_K)
        w = _dequant_tile(wb, s_ptr, offs_n, k0, N, K, stride_sn, DOT_DTYPE, SCALE_PATH, GROUP,
                          HIGH_FIRST, EVEN_K, SCALE_WORDS, BLOCK_N, BLOCK_K)
        acc = tl.dot(w, xt, acc)
        w_ptrs += BLOCK_K // 2
        x_ptrs += BLOCK_K

    acc = acc * alpha
    out_ptrs = out_ptr + offs_m[None, :] * stride_om + offs_n[:, None]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[None, :] & n_ok[:, None])


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


def choose_config(M: int, N: int, K: int) -> GemmConfig:
    """Heuristic tile choice (see docs/perf-log.md, "fp4_gemm (Triton, prefill)")."""
    if M <= 16:
        return GemmConfig(block_n=64, block_m=16, block_k=128, num_stages=4, num_warps=4)
    if M <= 64:
        return GemmConfig(block_n=128, block_m=64, block_k=128, num_stages=4, num_warps=4)
    if M <= 128:
        return GemmConfig(block_n=128, block_m=128, block_k=64, num_stages=4, num_warps=8)
    # H100, 2048 x 18432 x 3072 (docs/perf-log.md): 128x256x64 ran 0.57x cuBLAS bf16 on raw
    # weights (3 stages; 4 stages the same within noise) and 0.61x prepacked with 4 stages;
    # 128x128x64 0.41-0.44x, 256x128x64 0.35-0.40x, BLOCK_K 128 0.37-0.46x.
    return GemmConfig(block_n=128, block_m=256, block_k=64, num_stages=4, num_warps=8)


def _scale_path(nvfp4: bool, group_size: int, block_k: int) -> int:
    if nvfp4:
        return SCALE_NVFP4
    if group_size <= block_k and block_k % group_size == 0:
        return SCALE_GROUP_BLOCK
    if group_size % block_k == 0:
        return SCALE_GROUP_ROW
    return SCALE_GROUP_GATHER


def launch_fp4_gemm(x, w_q, scales, out, *, group_size: int, nvfp4: bool, alpha: float,
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
        scale_words: read NVFP4 scales as int32 words (needs K % 64 == 0, a 4-byte aligned base
            and BLOCK_K % 64 == 0). ``None`` = with the prepacked layout only: on raw weights
            ptxas serialises the wgmma (C7515) and it ran 0.47x vs 0.57x cuBLAS (H100, perf-log).
    """
    M, K = x.shape
    N = w_q.shape[0]
    cfg = config or choose_config(M, N, K)
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
    path = _scale_path(nvfp4, group_size, cfg.block_k)
    grid = (triton.cdiv(N, cfg.block_n) * triton.cdiv(M, cfg.block_m),)
    _fp4_gemm_kernel[grid](
        x, w_q, s_arg, out, M, N, K, float(alpha),
        x.stride(0), w_q.stride(0), s_arg.stride(0), out.stride(0),
        SCALE_PATH=path, GROUP=group_size,
        HIGH_FIRST=(order == "high_first") and not w_permuted,
        EVEN_K=even_k, SCALE_WORDS=words, W_PERM=w_permuted,
        BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
        GROUP_N=cfg.group_n, NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps,
    )


def nvfp4_w4a16_mm_gemm(x, w_q, w_scales, alpha: float, order: str, out, *, prepacked=None,
                        config: GemmConfig | None = None) -> None:
    """NVFP4 weights, fp16/bf16 activations: ``out = alpha * x @ (e2m1(w_q) * e4m3(w_scales))^T``.

    ``prepacked`` (a ``PrepackedNVFP4Weight`` of these weights) switches to its permuted bytes when
    the tile config allows (BLOCK_K % 64 == 0, dividing K)."""
    cfg = config or choose_config(x.shape[0], w_q.shape[0], x.shape[1])
    if prepacked is not None and cfg.block_k % 64 == 0 and x.shape[1] % cfg.block_k == 0:
        launch_fp4_gemm(x, prepacked.packed, w_scales, out, group_size=16, nvfp4=True,
                        alpha=alpha, order="low_first", config=cfg, w_permuted=True)
    else:
        launch_fp4_gemm(x, w_q, w_scales, out, group_size=16, nvfp4=True, alpha=alpha,
                        order=order, config=cfg)


def w4a16_mm_gemm(x, w_q, scales, group_size: int, order: str, out, *,
                  config: GemmConfig | None = None) -> None:
    """Groupwise FP4 weights: ``out = x @ (e2m1(w_q) * scales)^T``."""
    launch_fp4_gemm(x, w_q, scales, out, group_size=group_size, nvfp4=False, alpha=1.0,
                    order=order, config=config)


def nvfp4_mm_gemm(x_q, x_scales, w_q, w_scales, alpha: float, order: str, out, *,
                  prepacked=None, config: GemmConfig | None = None) -> None:
    """W4A4: dequantise x to fp16 (exact), then the NVFP4-weight GEMM with ``alpha``."""
    from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4

    x = dequant_nvfp4(x_q, x_scales, order=order, dtype=torch.float16)
    nvfp4_w4a16_mm_gemm(x, w_q, w_scales, alpha, order, out, prepacked=prepacked, config=config)
