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

Split-K (``split_k > 1``) writes fp32 partial sums to a ``(splits, M, N)`` workspace and a second
tiny kernel adds them **in a fixed order** (deterministic; no atomics anywhere).

E2M1 codes decode through E4M3 (as in ``fp4_gemm``): ``(c & 7) << 2 | (c & 8) << 4`` is the E4M3
byte of ``value * 2^-6`` (exact; one hardware ``cvt`` per pair on the GPU). NaN scale bytes (0x7F,
0xFF) and NaN 16-bit scales propagate to every output that reads them, as in the oracle.

Kernels see plain contiguous tensors; validation lives in ``fp4mm.ops``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fp4mm.kernels.alpha import alpha_args, apply_alpha
from fp4mm.kernels.fp4_decode import (
    E2M1_STORE_HALVES,
    E2M1_WORD_PTX,
    e2m1_to_f16_x64,
    e4m3_to_f16_x64,
)
from fp4mm.kernels.host import cdiv, next_power_of_2
from fp4mm.kernels.launch import launch
from fp4mm.kernels.pdl import pdl_epilogue, pdl_prologue

# ----------------------------------------------------------------------------------------- kernel
# One word per asm instance (pack=1), so the result does not depend on how Triton spreads the
# tile over threads; the PTX is shared with the Gluon decode kernel (fp4_decode.E2M1_WORD_PTX).
_DECODE_ASM = (E2M1_WORD_PTX.replace("IN", "$8").replace("OUTPUT", "")
               .replace("STORE", E2M1_STORE_HALVES))
_DECODE_ASM_LOW = tl.constexpr(_DECODE_ASM.replace("FIRST", "lo").replace("SECOND", "hi"))
_DECODE_ASM_HIGH = tl.constexpr(_DECODE_ASM.replace("FIRST", "hi").replace("SECOND", "lo"))


@triton.jit
def _join8(o0, o1, o2, o3, o4, o5, o6, o7):
    """Eight tensors -> one with a new last axis of 8, element i from o_i."""
    return tl.join(tl.join(tl.join(o0, o4), tl.join(o2, o6)),
                   tl.join(tl.join(o1, o5), tl.join(o3, o7)))


@triton.jit
def _dequant(wd, s, HIGH_FIRST: tl.constexpr, USE_ASM: tl.constexpr, ROWS: tl.constexpr,
             COLS: tl.constexpr):
    """int32 words ``[ROWS, COLS / 8]`` of packed codes (8 per word, little-endian bytes) and an
    fp16 factor ``s`` ``[ROWS, COLS / 16]`` (one per 16 elements) -> fp16 ``e2m1 * 2^-6 * s``
    ``[ROWS, COLS]`` in natural K order. Exact whenever the product is representable (always for
    ``s = e4m3 * 2^6``, and for ``s = 1``)."""
    if USE_ASM == 1:
        if HIGH_FIRST:
            o = tl.inline_asm_elementwise(
                _DECODE_ASM_HIGH, "=h,=h,=h,=h,=h,=h,=h,=h,r", [wd],
                dtype=(tl.float16,) * 8, is_pure=True, pack=1)
        else:
            o = tl.inline_asm_elementwise(
                _DECODE_ASM_LOW, "=h,=h,=h,=h,=h,=h,=h,=h,r", [wd],
                dtype=(tl.float16,) * 8, is_pure=True, pack=1)
        v = _join8(o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7])  # [ROWS, COLS / 8, 8]
    else:
        b = _join8(wd & 0xF, (wd >> 4) & 0xF, (wd >> 8) & 0xF, (wd >> 12) & 0xF,
                   (wd >> 16) & 0xF, (wd >> 20) & 0xF, (wd >> 24) & 0xF, (wd >> 28) & 0xF)
        if HIGH_FIRST:  # swap the two nibbles of each byte: element 2j is the high nibble
            b = b.reshape(ROWS, COLS // 8, 4, 2)
            lo, hi = tl.split(b)
            b = tl.join(hi, lo)
        v = e2m1_to_f16_x64(b.to(tl.uint8))
    v = v.reshape(ROWS, COLS // 16, 16) * s[:, :, None]
    return v.reshape(ROWS, COLS)


@triton.jit
def _load_w(w_ptr, ws_ptr, offs_n, n_ok, k0, k_end, stride_wn, stride_wsn,
            W_NVFP4: tl.constexpr, GROUP: tl.constexpr, SUB: tl.constexpr,
            ROW_SCALE: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """Issue the weight loads of the K step at ``k0`` (masked off when ``k0 >= k_end``): words
    ``[BLOCK_N, BLOCK_K / 8]`` (16-byte vectors per thread: rows are contiguous along K) and the
    scales of the step. Nothing is decoded here, so the caller can keep several steps in flight."""
    k0 = tl.multiple_of(k0, BLOCK_K)
    kw = tl.arange(0, BLOCK_K // 8)  # word j of a row holds elements 8j .. 8j + 7
    k16 = tl.arange(0, BLOCK_K // 16)  # 16-block index within the step
    live = k0 < k_end
    w_ptrs = w_ptr + offs_n[:, None] * stride_wn + (k0 // 8 + kw)[None, :]
    # the words are read once: evict-first keeps the scale and x lines, re-read across steps,
    # cached (H100, perf-log session 25: 1-3% here, bit-identical)
    if EVEN_K:
        wb = tl.load(w_ptrs, mask=n_ok[:, None] & live, other=0, eviction_policy="evict_first")
    else:
        wb = tl.load(w_ptrs, mask=n_ok[:, None] & (kw[None, :] < (k_end - k0) // 8), other=0,
                     eviction_policy="evict_first")
    if W_NVFP4:
        s_ptrs = ws_ptr + offs_n[:, None] * stride_wsn + (k0 // 16 + k16)[None, :]
        if EVEN_K:
            sw = tl.load(s_ptrs, mask=n_ok[:, None] & live, other=0)
        else:
            sw = tl.load(s_ptrs, mask=n_ok[:, None] & (k16[None, :] < (k_end - k0) // 16),
                         other=0)
    elif ROW_SCALE:
        sw = tl.load(ws_ptr + offs_n * stride_wsn + k0 // GROUP, mask=n_ok & live, other=0)
    else:
        ksb = tl.arange(0, BLOCK_K // SUB) * SUB  # first element of each sub-block
        s_ptrs = ws_ptr + offs_n[:, None] * stride_wsn + ((k0 + ksb) // GROUP)[None, :]
        sw = tl.load(s_ptrs, mask=n_ok[:, None] & ((k0 + ksb)[None, :] < k_end), other=0)
    return wb, sw


@triton.jit
def _load_x(x_ptr, xs_ptr, offs_m, m_ok, k0, k_end, stride_xm, stride_xsm,
            X_FP4: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr):
    """The activations of the K step at ``k0``: fp16/bf16 ``[BLOCK_M, BLOCK_K]``, or (X_FP4) words
    ``[BLOCK_M, BLOCK_K / 8]`` and E4M3 scale bytes ``[BLOCK_M, BLOCK_K / 16]`` (the second return
    value is a dummy otherwise). x is tiny and L2-resident."""
    k0 = tl.multiple_of(k0, BLOCK_K)
    if X_FP4:
        kw = tl.arange(0, BLOCK_K // 8)
        k16 = tl.arange(0, BLOCK_K // 16)
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k0 // 8 + kw)[None, :]
        xs_ptrs = xs_ptr + offs_m[:, None] * stride_xsm + (k0 // 16 + k16)[None, :]
        if EVEN_K:
            xb = tl.load(x_ptrs, mask=m_ok[:, None], other=0)
            sx = tl.load(xs_ptrs, mask=m_ok[:, None], other=0)
        else:
            xb = tl.load(x_ptrs, mask=m_ok[:, None] & (kw[None, :] < (k_end - k0) // 8),
                         other=0)
            sx = tl.load(xs_ptrs, mask=m_ok[:, None] & (k16[None, :] < (k_end - k0) // 16),
                         other=0)
    else:
        k_el = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + offs_m[:, None] * stride_xm + (k0 + k_el)[None, :]
        if EVEN_K:
            xb = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
        else:
            xb = tl.load(x_ptrs, mask=m_ok[:, None] & (k_el[None, :] < k_end - k0), other=0.0)
        sx = xb
    return xb, sx


@triton.jit
def _fp4_gemv_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, out_ptr,
    M, N, K, K_SPLIT, alpha, alpha_ptr,
    stride_xm, stride_xsm, stride_wn, stride_wsn, stride_om,
    X_FP4: tl.constexpr, W_NVFP4: tl.constexpr, GROUP: tl.constexpr, HIGH_FIRST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_DOT: tl.constexpr, USE_ASM: tl.constexpr, PARTIAL: tl.constexpr, EVEN_K: tl.constexpr,
    PREFETCH: tl.constexpr, ALPHA_PTR: tl.constexpr = False,
):
    """``out[m, n] = alpha * sum_k x[m, k] * dequant(w)[n, k]`` over this program's K range.

    x: X_FP4 -> int32 (M, K/8) words of packed E2M1 (the uint8 (M, K/2) bytes viewed as int32)
    + xs uint8 (M, K/16) E4M3; else fp16/bf16 (M, K). Strides in elements of each tensor.
    w: int32 (N, K/8) words of packed E2M1 (K % 16 == 0); ws: W_NVFP4 -> uint8 (N, K/16) E4M3,
    else fp16/bf16 (N, K/GROUP). out: (M, N) of the output dtype, or, when PARTIAL, an fp32
    workspace (splits, M, N) of unscaled partial sums. Grid: (M tiles, N tiles, splits), M fastest
    so programs that share a weight slab run together. K_SPLIT: K per split, a multiple of BLOCK_K.
    Groupwise weights on the DOT path need GROUP % BLOCK_K == 0 or take the pow2-split path.
    PREFETCH (0..3): the weight loads of step k + PREFETCH are issued before step k is decoded (a
    register ring; without it each program waits a full memory latency per step).
    """
    # Sub-block: the elements that share one scale inside a K step.
    SUB: tl.constexpr = 16 if GROUP % 16 == 0 else (8 if GROUP % 8 == 0 else
                                                    (4 if GROUP % 4 == 0 else 2))
    NSB: tl.constexpr = BLOCK_K // SUB
    ROW_SCALE: tl.constexpr = (not W_NVFP4) and USE_DOT and GROUP % BLOCK_K == 0
    tl.static_assert(BLOCK_K % 16 == 0)
    tl.static_assert(not W_NVFP4 or GROUP == 16)
    tl.static_assert(PREFETCH >= 0 and PREFETCH <= 3)
    if X_FP4:
        tl.static_assert(W_NVFP4)
        X_DTYPE: tl.constexpr = tl.float16
    else:
        X_DTYPE: tl.constexpr = x_ptr.dtype.element_ty
    # The asm decoder makes fp16; bf16 dots convert (exact for NVFP4 and raw codes).
    ASM: tl.constexpr = USE_ASM if (X_DTYPE == tl.float16 or W_NVFP4 or ROW_SCALE
                                    or not USE_DOT) else 0

    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    k_begin = tl.multiple_of(pid_k * K_SPLIT, BLOCK_K)
    k_end = tl.minimum(k_begin + K_SPLIT, K)

    if USE_DOT:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)  # reduced after the loop
    # Weight loads run PREFETCH steps ahead of the decode (a register ring: buffer 0 is decoded,
    # buffers 1.. are in flight). A load past k_end is fully masked and moves no bytes.
    wb, sw = _load_w(w_ptr, ws_ptr, offs_n, n_ok, k_begin, k_end, stride_wn, stride_wsn,
                     W_NVFP4, GROUP, SUB, ROW_SCALE, BLOCK_K, EVEN_K)
    if PREFETCH >= 2:
        wb1, sw1 = _load_w(w_ptr, ws_ptr, offs_n, n_ok, k_begin + BLOCK_K, k_end, stride_wn,
                           stride_wsn, W_NVFP4, GROUP, SUB, ROW_SCALE, BLOCK_K, EVEN_K)
    if PREFETCH >= 3:
        wb2, sw2 = _load_w(w_ptr, ws_ptr, offs_n, n_ok, k_begin + 2 * BLOCK_K, k_end, stride_wn,
                           stride_wsn, W_NVFP4, GROUP, SUB, ROW_SCALE, BLOCK_K, EVEN_K)
    for k0 in range(k_begin, k_end, BLOCK_K):
        if PREFETCH >= 1:  # the step PREFETCH ahead goes in flight before this one decodes
            wb_n, sw_n = _load_w(w_ptr, ws_ptr, offs_n, n_ok, k0 + PREFETCH * BLOCK_K, k_end,
                                 stride_wn, stride_wsn, W_NVFP4, GROUP, SUB, ROW_SCALE, BLOCK_K,
                                 EVEN_K)
        xb, sx = _load_x(x_ptr, xs_ptr, offs_m, m_ok, k0, k_end, stride_xm, stride_xsm,
                         X_FP4, BLOCK_K, EVEN_K)
        # ---- activations: [BLOCK_M, BLOCK_K] (NVFP4 x dequantised exactly to fp16)
        if X_FP4:
            xv = _dequant(xb, e4m3_to_f16_x64(sx), HIGH_FIRST, USE_ASM, BLOCK_M, BLOCK_K)
        else:
            xv = xb
        if W_NVFP4:
            # exact in fp16
            w = _dequant(wb, e4m3_to_f16_x64(sw), HIGH_FIRST, ASM, BLOCK_N, BLOCK_K)
            if USE_DOT:
                acc = tl.dot(w.to(X_DTYPE), tl.trans(xv.to(X_DTYPE)), acc)
            else:
                acc += w.to(tl.float32)[None, :, :] * xv.to(tl.float32)[:, None, :]
        elif ROW_SCALE:
            # One group per row per K step: exact dot of the codes, then the fp32 group scale.
            ones = tl.full((BLOCK_N, BLOCK_K // 16), 1.0, tl.float16)
            q = _dequant(wb, ones, HIGH_FIRST, ASM, BLOCK_N, BLOCK_K)  # q * 2^-6, exact
            part = tl.dot(q.to(X_DTYPE), tl.trans(xv), out_dtype=tl.float32)
            acc += part * (sw.to(tl.float32) * 64.0)[:, None]
        elif USE_DOT:
            # q = q_a + q_b, both powers of two (or 0): each q_* * s is exact in 16 bits.
            S_DTYPE: tl.constexpr = ws_ptr.dtype.element_ty
            ones = tl.full((BLOCK_N, BLOCK_K // 16), 1.0, tl.float16)
            v = _dequant(wb, ones, HIGH_FIRST, ASM, BLOCK_N, BLOCK_K)
            v = v.reshape(BLOCK_N, NSB, SUB) * 64.0
            va = _dequant(wb & -286331154, ones, HIGH_FIRST, ASM, BLOCK_N, BLOCK_K)  # 0xEEEEEEEE
            va = va.reshape(BLOCK_N, NSB, SUB) * 64.0
            vb = v - va
            if S_DTYPE == X_DTYPE:
                s3 = sw[:, :, None]
                wa = va.to(X_DTYPE) * s3
                wb_ = vb.to(X_DTYPE) * s3
            else:
                s3 = sw.to(tl.float32)[:, :, None]
                wa = (va.to(tl.float32) * s3).to(X_DTYPE)
                wb_ = (vb.to(tl.float32) * s3).to(X_DTYPE)
            xt = tl.trans(xv)
            acc = tl.dot(wa.reshape(BLOCK_N, BLOCK_K), xt, acc)
            acc = tl.dot(wb_.reshape(BLOCK_N, BLOCK_K), xt, acc)
        else:
            # (x * s) * q is exact in fp32 (11 + 11 + 2 significant bits).
            ones = tl.full((BLOCK_N, BLOCK_K // 16), 1.0, tl.float16)
            q = _dequant(wb, ones, HIGH_FIRST, ASM, BLOCK_N, BLOCK_K)  # q * 2^-6, exact
            s_el = tl.broadcast_to((sw.to(tl.float32) * 64.0)[:, :, None],
                                   [BLOCK_N, NSB, SUB]).reshape(BLOCK_N, BLOCK_K)
            xs = xv.to(tl.float32)[:, None, :] * s_el[None, :, :]
            acc += q.to(tl.float32)[None, :, :] * xs
        if PREFETCH == 0:
            wb, sw = _load_w(w_ptr, ws_ptr, offs_n, n_ok, k0 + BLOCK_K, k_end, stride_wn,
                             stride_wsn, W_NVFP4, GROUP, SUB, ROW_SCALE, BLOCK_K, EVEN_K)
        elif PREFETCH == 1:
            wb, sw = wb_n, sw_n
        elif PREFETCH == 2:
            wb, sw, wb1, sw1 = wb1, sw1, wb_n, sw_n
        else:
            wb, sw, wb1, sw1, wb2, sw2 = wb1, sw1, wb2, sw2, wb_n, sw_n

    if USE_DOT:
        res = tl.trans(acc)  # [BLOCK_M, BLOCK_N]
    else:
        res = tl.sum(acc, axis=2)
    out_mask = m_ok[:, None] & n_ok[None, :]
    if not PARTIAL:
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(out_ptrs, apply_alpha(res, alpha, alpha_ptr, ALPHA_PTR).to(
            out_ptr.dtype.element_ty), mask=out_mask)
    else:
        out_ptrs = out_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :]
        tl.store(out_ptrs, res, mask=out_mask)


@triton.jit
def _splitk_reduce_kernel(part_ptr, out_ptr, M, N, alpha, alpha_ptr, stride_om,
                          SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False,
                          ALPHA_PTR: tl.constexpr = False, PDL_LATE: tl.constexpr = False):
    """``out[m, n] = alpha * sum_s part[s, m, n]``, summed in the order s = 0, 1, ... .
    PDL (GPU only, launched with ``launch_pdl``): wait for the previous kernel before any
    memory access, then let the next one launch (with PDL_LATE only after the stores)."""
    pdl_prologue(PDL, PDL_LATE)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < M * N
    acc = tl.load(part_ptr + offs, mask=ok, other=0.0)
    for s in tl.static_range(1, SPLIT_K):
        acc += tl.load(part_ptr + s * M * N + offs, mask=ok, other=0.0)
    m = offs // N
    n = offs % N
    tl.store(out_ptr + m * stride_om + n,
             apply_alpha(acc, alpha, alpha_ptr, ALPHA_PTR).to(out_ptr.dtype.element_ty), mask=ok)
    pdl_epilogue(PDL, PDL_LATE)


# --------------------------------------------------------------------------------------- launcher
def reduce_partials(part: torch.Tensor, out: torch.Tensor, alpha, *,
                    pdl: bool = False, pdl_late: bool = False) -> None:
    """``out = alpha * part.sum(0)`` for fp32 split-K partials ``(splits, M, N)``, in split
    order (deterministic); the reduce of this GEMV and of both Gluon GEMVs. ``pdl``: launched
    with programmatic dependent launch (it waits for the previous kernel itself) and letting the
    next kernel launch at its start, or with ``pdl_late`` only after its stores. ``alpha``: a
    float or a one-element float32 device tensor (``fp4mm.kernels.alpha``)."""
    splits, M, N = part.shape
    alpha, alpha_ptr, alpha_on_device = alpha_args(alpha, part)
    block = 1024
    pdl_args = ({"PDL": True, "launch_pdl": True, "PDL_LATE": pdl_late} if pdl
                else {})  # the interpreter has no PDL
    launch(_splitk_reduce_kernel, (cdiv(M * N, block),),
        part, out, M, N, alpha, alpha_ptr, out.stride(0), SPLIT_K=splits, BLOCK=block,
        ALPHA_PTR=alpha_on_device, num_warps=4, **pdl_args)


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
    use_asm: bool = True
    num_warps: int = 4
    num_stages: int = 1
    prefetch: int = 2


def is_valid_config(cfg: GemvConfig) -> bool:
    """The one validity predicate (heuristics, benchmarks and tests all use it)."""
    pow2 = lambda v: isinstance(v, int) and v > 0 and v & (v - 1) == 0  # noqa: E731
    ok = (all(pow2(v) for v in (cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps))
          and cfg.block_k >= 16 and cfg.split_k >= 1 and cfg.num_stages >= 1
          and cfg.prefetch in (0, 1, 2, 3))
    if cfg.use_dot:
        return ok and cfg.block_m >= 16 and cfg.block_n >= 16
    return ok and cfg.block_m <= 8


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# Heuristic configs. v3: bench/results/decode-h100-2026-11-26.json; v2 (this code):
# bench/results/decode-v2-h100-2026-11-26.json (+ -sweep1.json), NVIDIA H100 80GB HBM3, CUDA-graph
# medians, 4 rotating weight copies, N=18432, K=3072; see docs/perf-log.md, "fp4_gemv (decode)".
# - M = 1: the FMA path beats every tensor-core config (nvfp4_w4a16: 23.2 us vs 27.6-65 us);
#   W4A4 prefers 8 rows x 512 per step on 2 warps (24.5 vs 28.6 us for 16 x 256 on 4 warps: less
#   x decode per weight byte); groupwise with group >= 64 stays on tensor cores (24.3 us).
# - M >= 2: tensor cores, block_n 64, block_k 128, split-K to ~1152 programs, 1 step prefetched
#   (0: +3%, 2-3: +5-10%: registers cost resident programs). Longer rows per step (block_k
#   256-1024, block_n 16-32, mma.sync) were 1.3-2.3x slower; split 1 +20-25%.
# - M > 16: split-K to ~528 programs (M=64: split 2).
FMA_MAX_M = 1  # the largest M served by the CUDA-core FMA path
_FMA_PROGRAMS = 1024  # split K when N / 16 leaves fewer (N=8192: split 4, 45 vs 49 us)
_DOT_PROGRAMS = (1152, 528)  # split-K target for M <= 16 and for larger M
_FMA_PREFETCH = 2  # steps in flight ahead of the decode (v2 sweep: 23.2 vs 27.4 us without)
_DOT_PREFETCH = 1  # (v2 sweep: 1 step 2-5% faster than 0; 2-3 steps slower; 0 for block_k < 128)


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def choose_config(M: int, N: int, K: int, *, group_size: int = 16, nvfp4: bool = True,
                  x_fp4: bool = False, device: torch.device | None = None) -> GemvConfig:
    """Heuristic config (measured, see above): FMA for M = 1, else tensor cores with tokens padded
    to 16..64; groupwise weights step one group at a time (exact fp32 group scale); split K until
    enough programs are in flight. ``x_fp4``: the activations are NVFP4 too (W4A4)."""
    del device  # one table for sm_90; kept for per-architecture tables
    if M <= FMA_MAX_M and (nvfp4 or group_size < 64):
        if x_fp4:
            cfg = GemvConfig(block_m=next_power_of_2(M), block_n=8, block_k=512, num_warps=2)
        else:
            cfg = GemvConfig(block_m=next_power_of_2(M), block_n=16, block_k=256)
        target = _FMA_PROGRAMS
    else:
        cfg = GemvConfig(block_m=min(64, max(16, next_power_of_2(M))), block_n=64, block_k=128,
                         use_dot=True)
        target = _DOT_PROGRAMS[0] if M <= 16 else _DOT_PROGRAMS[1]
    block_k = min(cfg.block_k, max(16, next_power_of_2(K)))
    if cfg.use_dot and not nvfp4 and group_size % 16 == 0:
        block_k = min(block_k, group_size & -group_size)  # a power of two dividing the group
    tiles = cdiv(N, cfg.block_n) * cdiv(M, cfg.block_m)
    split = 1
    if tiles < target:
        split = max(1, min(cdiv(target, tiles), K // block_k, 16))
    prefetch = _FMA_PREFETCH if not cfg.use_dot else (_DOT_PREFETCH if block_k >= 128 else 0)
    return dataclasses.replace(cfg, block_k=block_k, split_k=split, prefetch=prefetch)


def _words(q: torch.Tensor) -> torch.Tensor:
    """Packed bytes ``(R, K/2)`` (K % 16 == 0) viewed as int32 words ``(R, K/8)``."""
    if q.data_ptr() % 4 != 0:
        q = q.clone()
    return q.view(torch.int32)


def _pad_k(x, w_q, w_scales, group_size: int):
    """Zero-pad a groupwise problem to K % 16 == 0 (tiny K only: the challenge's K = 4 case)."""
    K = w_q.shape[1] * 2
    pad = -K % 16
    x = torch.nn.functional.pad(x, (0, pad))
    w_q = torch.nn.functional.pad(w_q, (0, pad // 2))
    w_scales = torch.nn.functional.pad(w_scales, (0, -(-(K + pad) // group_size) - K // group_size))
    return x.contiguous(), w_q.contiguous(), w_scales.contiguous()


def _launch(x, x_scales, w_q, w_scales, out, *, x_fp4: bool, w_nvfp4: bool, group_size: int,
            alpha, order: str, config: GemvConfig | None) -> None:
    M = x.shape[0]
    N = w_q.shape[0]
    if (w_q.shape[1] * 2) % 16 != 0:
        x, w_q, w_scales = _pad_k(x, w_q, w_scales, group_size)
    K = w_q.shape[1] * 2
    cfg = config or choose_config(M, N, K, group_size=group_size, nvfp4=w_nvfp4, x_fp4=x_fp4,
                                  device=out.device)
    if not is_valid_config(cfg):
        raise ValueError(f"config: invalid {cfg}")
    # Each split covers a whole number of K steps; drop empty trailing splits.
    k_split = cdiv(cdiv(K, cfg.split_k), cfg.block_k) * cfg.block_k
    split = cdiv(K, k_split)
    even_k = K % cfg.block_k == 0
    if split > 1:
        dest = torch.empty((split, M, N), dtype=torch.float32, device=out.device)
    else:
        dest = out
    w = _words(w_q)
    if x_fp4:
        x = _words(x)
    xs = x_scales if x_fp4 else x  # unused pointer when x is 16-bit
    grid = (cdiv(M, cfg.block_m), cdiv(N, cfg.block_n), split)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    launch(_fp4_gemv_kernel, grid,
        x, xs, w, w_scales, dest,
        M, N, K, k_split, a, alpha_ptr,
        x.stride(0), xs.stride(0), w.stride(0), w_scales.stride(0), out.stride(0),
        X_FP4=x_fp4, W_NVFP4=w_nvfp4, GROUP=group_size, HIGH_FIRST=order == "high_first",
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        USE_DOT=cfg.use_dot, USE_ASM=1 if cfg.use_asm and not _interpreting() else 0,
        PARTIAL=split > 1, EVEN_K=even_k, PREFETCH=cfg.prefetch,
        ALPHA_PTR=alpha_on_device and split == 1,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if split > 1:
        reduce_partials(dest, out, alpha)


def nvfp4_mm_gemv(x_q, x_scales, w_q, w_scales, alpha, order: str, out, *,
                  config: GemvConfig | None = None) -> None:
    """W4A4: ``out = alpha * dequant(x) @ dequant(w)^T``; x dequantised inside the kernel.

    Args:
        x_q: uint8 ``(M, K/2)`` packed E2M1; x_scales: uint8 ``(M, K/16)`` E4M3 bytes.
        w_q: uint8 ``(N, K/2)``; w_scales: uint8 ``(N, K/16)``. Nibble order ``order`` for both.
        out: ``(M, N)`` fp16/bf16/fp32, contiguous, written in full.
    """
    _launch(x_q, x_scales, w_q, w_scales, out, x_fp4=True, w_nvfp4=True, group_size=16,
            alpha=alpha, order=order, config=config)


def nvfp4_w4a16_mm_gemv(x, w_q, w_scales, alpha, order: str, out, *,
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
