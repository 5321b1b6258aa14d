"""Decode (small-M) GEMV for FP4 weights (plain ``@triton.jit``):
``out[M, N] = alpha * x @ dequant(w)^T``.

One kernel serves the three problems of ``fp4mm.ops`` for M = 1 to ~64:

- ``nvfp4_mm`` (W4A4): x is NVFP4 too and is dequantised *inside* the kernel (it is tiny: each
  program decodes the x slab of its K range), so a call is a single launch;
- ``nvfp4_w4a16_mm``: fp16/bf16 x, NVFP4 weights (E4M3 byte scale per 16 along K);
- ``w4a16_mm``: fp16/bf16 x, groupwise FP4 weights (fp16/bf16 scale per ``group_size`` along K).

Decode is memory-bound: the time is the time to stream the packed weights and their scales once.
Each program owns ``BLOCK_N`` weight rows and a K range (all of K unless split-K), and streams it in
``[BLOCK_N, BLOCK_K / 2]`` byte tiles; thousands of programs keep enough loads in flight.
Two compute paths (constexpr ``USE_DOT``):

- FMA (CUDA cores, for M <= ~4): codes decode to fp32, ``sum_k q * x`` per 16-block (or group) is a
  register reduction, then one multiply by the block scale; everything is fp32 and exact up to
  summation order.
- DOT (tensor cores, larger M): the dequantised weight tile is the *left* ``tl.dot`` operand and
  the tokens, padded to ``BLOCK_M >= 16``, the right one (swap-AB: ``acc^T = W x^T``).
  NVFP4 weights: ``e2m1 * e4m3`` is exact in fp16/bf16. Groupwise weights: ``q * s`` with a 16-bit
  scale is *not* exact in 16 bits, so the code is split into two powers of two, ``q = q_a + q_b``
  (``q_a`` = code with its mantissa bit cleared), and ``W = q_a * s + q_b * s`` runs as two dots
  whose terms are exact (whenever ``4 * |s|`` and ``|s| / 2`` stay in the normal range of the dot
  dtype).

Split-K (``SPLIT_K > 1``) writes fp32 partial sums to a ``(SPLIT_K, M, N)`` workspace and a second
tiny kernel adds them **in a fixed order** (deterministic; no atomics anywhere).

E2M1 codes decode through E4M3 (as in ``fp4_gemm``): ``(c & 7) << 2 | (c & 8) << 4`` is the E4M3
byte of ``value * 2^-6`` (exact; one hardware ``cvt`` per pair on the GPU). NaN scale bytes (0x7F,
0xFF) and NaN 16-bit scales propagate to every output that reads them, as in the oracle.

Kernels see plain contiguous tensors; validation lives in ``fp4mm.ops``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


# ----------------------------------------------------------------------------------------- kernel
@triton.jit
def _e2m1_x64(codes):
    """uint8 E2M1 codes (0..15) -> fp16 ``value * 2^-6``, exactly (via the E4M3 byte)."""
    e4m3 = ((codes & 7) << 2) | ((codes & 8) << 4)
    return e4m3.to(tl.float8e4nv, bitcast=True).to(tl.float16)


@triton.jit
def _unpack(b, HIGH_FIRST: tl.constexpr, ROWS: tl.constexpr, NSB: tl.constexpr,
            SUB: tl.constexpr):
    """Packed bytes ``[ROWS, NSB * SUB / 2]`` -> fp16 ``value * 2^-6`` ``[ROWS, NSB, SUB]`` in
    natural K order (element 2j from the first nibble of byte j)."""
    lo = b & 0xF
    hi = b >> 4
    if HIGH_FIRST:
        lo, hi = hi, lo
    return tl.join(_e2m1_x64(lo), _e2m1_x64(hi)).reshape(ROWS, NSB, SUB)


@triton.jit
def _fp4_gemv_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, out_ptr,
    M, N, K, K_SPLIT, alpha,
    stride_xm, stride_xsm, stride_wn, stride_wsn, stride_om,
    X_FP4: tl.constexpr, W_NVFP4: tl.constexpr, GROUP: tl.constexpr, HIGH_FIRST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr, SPLIT_K: tl.constexpr, EVEN_K: tl.constexpr,
):
    """``out[m, n] = alpha * sum_k x[m, k] * dequant(w)[n, k]`` over this program's K range.

    x: X_FP4 -> uint8 (M, K/2) packed E2M1 + xs uint8 (M, K/16) E4M3; else fp16/bf16 (M, K).
    w: uint8 (N, K/2) packed E2M1; ws: W_NVFP4 -> uint8 (N, K/16) E4M3, else fp16/bf16
    (N, K/GROUP). out: (M, N) of the output dtype, or, when SPLIT_K > 1, an fp32 workspace
    (SPLIT_K, M, N) of unscaled partial sums. Grid: (M tiles, N tiles, SPLIT_K), M fastest so
    programs that share a weight slab run together. K_SPLIT: K per split, a multiple of BLOCK_K.
    """
    SUB: tl.constexpr = 16 if GROUP % 16 == 0 else (8 if GROUP % 8 == 0 else
                                                    (4 if GROUP % 4 == 0 else 2))
    NSB: tl.constexpr = BLOCK_K // SUB
    tl.static_assert(BLOCK_K % 16 == 0)
    tl.static_assert(not W_NVFP4 or GROUP == 16)
    if X_FP4:
        tl.static_assert(W_NVFP4)
        X_DTYPE: tl.constexpr = tl.float16
    else:
        X_DTYPE: tl.constexpr = x_ptr.dtype.element_ty

    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    k_begin = pid_k * K_SPLIT
    k_end = tl.minimum(k_begin + K_SPLIT, K)

    # K offsets of one tile: byte j of a row holds elements 2j, 2j + 1; sub-block i (SUB elements,
    # one scale) covers elements [i * SUB, (i + 1) * SUB).
    kb = tl.arange(0, BLOCK_K // 2)
    ksb = tl.arange(0, NSB) * SUB
    k_el = tl.arange(0, BLOCK_K)
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (k_begin // 2 + kb)[None, :]
    if X_FP4:
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_begin // 2 + kb)[None, :]
    else:
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k_begin + k_el)[None, :]

    if USE_DOT:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        # ---- weights: codes and per-sub-block scales
        if EVEN_K:
            wb = tl.load(w_ptrs, mask=n_ok[:, None], other=0)
        else:
            wb = tl.load(w_ptrs, mask=n_ok[:, None] & (kb[None, :] < (k_end - k0) // 2), other=0)
        s_idx = (k0 + ksb) // GROUP
        s_mask = n_ok[:, None] if EVEN_K else n_ok[:, None] & ((k0 + ksb)[None, :] < k_end)
        sw = tl.load(ws_ptr + offs_n[:, None] * stride_wsn + s_idx[None, :], mask=s_mask, other=0)
        if W_NVFP4:
            sw = sw.to(tl.float8e4nv, bitcast=True).to(tl.float16) * 64.0  # e4m3 * 2^6, exact
        v = _unpack(wb, HIGH_FIRST, BLOCK_N, NSB, SUB)  # fp16 q * 2^-6, [BLOCK_N, NSB, SUB]

        # ---- activations: [BLOCK_M, BLOCK_K] of X_DTYPE (exact dequantisation for NVFP4 x)
        if EVEN_K:
            xv = tl.load(x_ptrs, mask=m_ok[:, None], other=0)
        elif X_FP4:
            xv = tl.load(x_ptrs, mask=m_ok[:, None] & (kb[None, :] < (k_end - k0) // 2), other=0)
        else:
            xv = tl.load(x_ptrs, mask=m_ok[:, None] & (k_el[None, :] < k_end - k0), other=0.0)
        if X_FP4:
            sx_mask = m_ok[:, None] if EVEN_K else m_ok[:, None] & ((k0 + ksb)[None, :] < k_end)
            sx = tl.load(xs_ptr + offs_m[:, None] * stride_xsm + ((k0 + ksb) // 16)[None, :],
                         mask=sx_mask, other=0)
            sx = sx.to(tl.float8e4nv, bitcast=True).to(tl.float16) * 64.0
            xq = _unpack(xv, HIGH_FIRST, BLOCK_M, NSB, SUB)
            xv = (xq * sx[:, :, None]).reshape(BLOCK_M, BLOCK_K)  # q * s, exact in fp16

        if USE_DOT:
            xt = tl.trans(xv.to(X_DTYPE))  # [BLOCK_K, BLOCK_M]
            if W_NVFP4:
                w = (v * sw[:, :, None]).reshape(BLOCK_N, BLOCK_K).to(X_DTYPE)  # exact
                acc = tl.dot(w, xt, acc)
            else:
                # q = q_a + q_b, both powers of two (or 0): each q_* * s is exact in 16 bits.
                v = v * 64.0
                va = _unpack(wb & 0xEE, HIGH_FIRST, BLOCK_N, NSB, SUB) * 64.0
                vb = v - va
                S_DTYPE: tl.constexpr = ws_ptr.dtype.element_ty
                if S_DTYPE == X_DTYPE:
                    s3 = sw[:, :, None]
                    wa = va.to(X_DTYPE) * s3
                    wb_ = vb.to(X_DTYPE) * s3
                else:
                    s3 = sw.to(tl.float32)[:, :, None]
                    wa = (va.to(tl.float32) * s3).to(X_DTYPE)
                    wb_ = (vb.to(tl.float32) * s3).to(X_DTYPE)
                acc = tl.dot(wa.reshape(BLOCK_N, BLOCK_K), xt, acc)
                acc = tl.dot(wb_.reshape(BLOCK_N, BLOCK_K), xt, acc)
        else:
            # [BLOCK_M, BLOCK_N, NSB, SUB] products, register reduction over SUB, then the scale.
            x4 = xv.to(tl.float32).reshape(BLOCK_M, 1, NSB, SUB)
            part = tl.sum(v.to(tl.float32)[None, :, :, :] * x4, axis=3)  # [BLOCK_M, BLOCK_N, NSB]
            if W_NVFP4:
                s = sw.to(tl.float32)
            else:
                s = sw.to(tl.float32) * 64.0
            acc += tl.sum(part * s[None, :, :], axis=2)
        w_ptrs += BLOCK_K // 2
        x_ptrs += BLOCK_K // 2 if X_FP4 else BLOCK_K

    if USE_DOT:
        acc = tl.trans(acc)  # [BLOCK_M, BLOCK_N]
    out_mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(out_ptrs, (acc * alpha).to(out_ptr.dtype.element_ty), mask=out_mask)
    else:
        out_ptrs = out_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :]
        tl.store(out_ptrs, acc, mask=out_mask)


@triton.jit
def _splitk_reduce_kernel(part_ptr, out_ptr, M, N, alpha, stride_om,
                          SPLIT_K: tl.constexpr, BLOCK: tl.constexpr):
    """``out[m, n] = alpha * sum_s part[s, m, n]``, summed in the order s = 0, 1, ... ."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < M * N
    acc = tl.load(part_ptr + offs, mask=ok, other=0.0)
    for s in tl.static_range(1, SPLIT_K):
        acc += tl.load(part_ptr + s * M * N + offs, mask=ok, other=0.0)
    m = offs // N
    n = offs % N
    tl.store(out_ptr + m * stride_om + n, (acc * alpha).to(out_ptr.dtype.element_ty), mask=ok)


# --------------------------------------------------------------------------------------- launcher
@dataclass(frozen=True)
class GemvConfig:
    """block_m: tokens per program (FMA: 1..4; DOT: >= 16, the MMA N side); block_n: weight rows
    per program; block_k: K per step (multiple of 16); split_k: K ranges (deterministic reduce
    pass when > 1); use_dot: tensor cores instead of CUDA-core FMAs."""

    block_m: int = 1
    block_n: int = 16
    block_k: int = 512
    split_k: int = 1
    use_dot: bool = False
    num_warps: int = 4
    num_stages: int = 1


def is_valid_config(cfg: GemvConfig) -> bool:
    """The one validity predicate (heuristics, benchmarks and tests all use it)."""
    pow2 = lambda v: isinstance(v, int) and v > 0 and v & (v - 1) == 0  # noqa: E731
    ok = (all(pow2(v) for v in (cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps))
          and cfg.block_k >= 16 and cfg.split_k >= 1 and cfg.num_stages >= 1)
    if cfg.use_dot:
        return ok and cfg.block_m >= 16 and cfg.block_n >= 16
    return ok and cfg.block_m <= 8


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132  # an H100 SXM, for the interpreter


# The largest M served by the CUDA-core FMA path; above it the tensor-core path (measured: see
# docs/perf-log.md, "fp4_gemv (decode)").
FMA_MAX_M = 2


def choose_config(M: int, N: int, K: int, device: torch.device | None = None) -> GemvConfig:
    """Heuristic config (see docs/perf-log.md, "fp4_gemv (decode)"): FMA for tiny M, else tensor
    cores; split K only when the N x M tiles alone leave the SMs short of programs."""
    device = device or torch.device("cpu")
    if M <= FMA_MAX_M:
        cfg = GemvConfig(block_m=_next_pow2(M), block_n=16, block_k=512, use_dot=False)
    else:
        cfg = GemvConfig(block_m=min(64, max(16, _next_pow2(M))), block_n=64, block_k=128,
                         use_dot=True)
    block_k = min(cfg.block_k, max(16, _next_pow2(K)))
    tiles = triton.cdiv(N, cfg.block_n) * triton.cdiv(M, cfg.block_m)
    target = 4 * _num_sms(device)
    split = 1
    if tiles < target:
        split = max(1, min(triton.cdiv(target, tiles), K // block_k, 16))
    return GemvConfig(block_m=cfg.block_m, block_n=cfg.block_n, block_k=block_k, split_k=split,
                      use_dot=cfg.use_dot, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _launch(x, x_scales, w_q, w_scales, out, *, x_fp4: bool, w_nvfp4: bool, group_size: int,
            alpha: float, order: str, config: GemvConfig | None) -> None:
    M = x.shape[0]
    N = w_q.shape[0]
    K = w_q.shape[1] * 2
    cfg = config or choose_config(M, N, K, out.device)
    if not is_valid_config(cfg):
        raise ValueError(f"config: invalid {cfg}")
    # Each split covers a whole number of K steps; drop empty trailing splits.
    k_split = triton.cdiv(triton.cdiv(K, cfg.split_k), cfg.block_k) * cfg.block_k
    split = triton.cdiv(K, k_split)
    even_k = K % cfg.block_k == 0
    if split > 1:
        dest = torch.empty((split, M, N), dtype=torch.float32, device=out.device)
    else:
        dest = out
    xs = x_scales if x_fp4 else x  # unused pointer when x is 16-bit
    grid = (triton.cdiv(M, cfg.block_m), triton.cdiv(N, cfg.block_n), split)
    _fp4_gemv_kernel[grid](
        x, xs, w_q, w_scales, dest,
        M, N, K, k_split, float(alpha),
        x.stride(0), xs.stride(0), w_q.stride(0), w_scales.stride(0), out.stride(0),
        X_FP4=x_fp4, W_NVFP4=w_nvfp4, GROUP=group_size, HIGH_FIRST=order == "high_first",
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        USE_DOT=cfg.use_dot, SPLIT_K=split, EVEN_K=even_k,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if split > 1:
        block = 1024
        _splitk_reduce_kernel[(triton.cdiv(M * N, block),)](
            dest, out, M, N, float(alpha), out.stride(0), SPLIT_K=split, BLOCK=block,
            num_warps=4)


def nvfp4_mm_gemv(x_q, x_scales, w_q, w_scales, alpha: float, order: str, out, *,
                  config: GemvConfig | None = None) -> None:
    """W4A4: ``out = alpha * dequant(x) @ dequant(w)^T``; x dequantised inside the kernel.

    Args:
        x_q: uint8 ``(M, K/2)`` packed E2M1; x_scales: uint8 ``(M, K/16)`` E4M3 bytes.
        w_q: uint8 ``(N, K/2)``; w_scales: uint8 ``(N, K/16)``. Nibble order ``order`` for both.
        out: ``(M, N)`` fp16/bf16/fp32, contiguous, written in full.
    """
    _launch(x_q, x_scales, w_q, w_scales, out, x_fp4=True, w_nvfp4=True, group_size=16,
            alpha=alpha, order=order, config=config)


def nvfp4_w4a16_mm_gemv(x, w_q, w_scales, alpha: float, order: str, out, *,
                        config: GemvConfig | None = None) -> None:
    """NVFP4 weights, fp16/bf16 x: ``out = alpha * x @ (e2m1(w_q) * e4m3(w_scales))^T``.

    Args:
        x: fp16/bf16 ``(M, K)``; w_q: uint8 ``(N, K/2)``; w_scales: uint8 ``(N, K/16)`` E4M3.
        alpha: ``1 / w_global_scale``. out: ``(M, N)`` of x.dtype (or fp32), contiguous.
    """
    _launch(x, None, w_q, w_scales, out, x_fp4=False, w_nvfp4=True, group_size=16,
            alpha=alpha, order=order, config=config)


def w4a16_mm_gemv(x, w_q, scales, group_size: int, order: str, out, *,
                  config: GemvConfig | None = None) -> None:
    """Groupwise FP4 weights: ``out = x @ (e2m1(w_q) * scales)^T``.

    Args:
        x: fp16/bf16 ``(M, K)``; w_q: uint8 ``(N, K/2)``; scales: fp16/bf16
        ``(N, K/group_size)``; group_size: an even divisor of K. out: ``(M, N)``, contiguous.
    """
    _launch(x, None, w_q, scales, out, x_fp4=False, w_nvfp4=False, group_size=group_size,
            alpha=1.0, order=order, config=config)
