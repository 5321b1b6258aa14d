"""Decode GEMV for NVFP4 weights (or FP4 weights with 16-bit group scales) and 16-bit
activations at 2-32 tokens on Hopper, in Gluon, with the weights *and* x fed by TMA into a
shared-memory ring: ``out[M, N] = alpha * x @ W^T``.

Why a second Gluon GEMV (the register-ring ``fp4_gemv_sm90`` serves 16-bit x up to 3 tokens and
W4A4; the plain-Triton ``fp4_gemv`` is the interpreter-tested twin of both): at 9-32 tokens of
fp16/bf16 x, each K step of the register ring loads as many x bytes per thread as weight bytes, and
it runs one warp per CTA without split there (its best config, session 9), so too few loads stay in
flight. Here one elected thread copies each 256-K chunk of a CTA's weight rows (two 128-K steps of
codes, their E4M3 scales) and of x into a ring stage with one mbarrier; each warp reads its rows and
the shared x back from shared memory and runs the shipped kernel's decode and ``mma.sync`` steps on
it (``fp4_gemv_sm90._step``: same K permutation, same exact ``e2m1 * e4m3`` decode). No register
holds a load in flight, so the ring depth costs shared memory only. H100, N = 18432, K = 3072,
CUDA-graph medians (perf log, "Session 15"): M = 9-16 21.9-23.1 us against 26.5-28.1 for the
register ring; M = 24-32 30.3-32.0 us against 36.7-41.2 for the plain-Triton GEMV. At M = 1 it is no
faster than the register ring (17.0 vs 16.9 us), and for W4A4 at M = 16 slower (24.1 vs 23.1; the
ring has since dropped to 20.6), so it serves only this range. Session 27: at 9-16 tokens on wide
weights four warps per CTA share each x stage (a quarter of the x traffic from L2), 2-15% faster
than one warp. Session 28: the NVFP4 stages are read without shared-memory bank conflicts (below),
and one row tile per warp then wins: 16 x 18432 x 3072 (bf16 x) 19.75 us against 21.38, 32
tokens 23.17 against 30.38, and from 4 tokens it beats the register ring on most shapes.

Design, per CTA (``num_warps`` warps, each ROW_TILES x 16 weight rows; tokens padded to NT = 8,
16 or 32):
- **Boxes**: codes ``[rows, 128 B]``, scales ``[rows, 16 B]`` (a TMA box needs at least 16
  inner bytes, hence two 128-K steps per stage), x ``[NT, 4, 64]`` (x viewed as (M, K / 64, 64):
  each 128-byte row one token's 64 K). Rows past N and tokens past M are zero-filled by TMA;
  their outputs are never stored.
- **Bank-conflict-free reads** (NVFP4 weights, session 28). Codes and x land 128-byte swizzled
  (16-byte unit u of 128-byte row r at u ^ (r % 8)), and step s of quad lane c reads the
  chunk's 32-K unit 2 c + s (the same K permutation on both operands and the scales; the
  shared-memory views ``_codes_view``, ``_x_view``, ``_scales_view`` encode it). Then the eight
  lanes of each 16-byte load phase (two rows or tokens, four quad lanes) hit eight different
  bank groups. With plain layouts and unit 4 s + c, ncu counted 10.3 wavefronts per load
  instead of 4 (68% bank conflicts) at 16 tokens. The 16-bit group-scale form reads the same
  swizzled stages in the natural K order (its packed scales follow it): the swizzle alone
  spreads each 4-byte word load's eight rows over eight bank groups.
- **Ring:** STAGES stages. Stage ``t % STAGES`` holds chunk ``t``; once every warp has read it
  (a ``bar.sync``, then a proxy fence: the next TMA write must follow the generic reads) it is
  refilled with chunk ``t + STAGES``. The mbarrier phase of chunk ``t`` is ``(t // STAGES) & 1``.
- **Split-K** (grid axis 1): fp32 partials ``(splits, M, N)``, summed in a fixed order by
  ``fp4_gemv``'s reduce kernel (deterministic). Both use programmatic dependent launch, as in
  ``fp4_gemv_sm90``.
- **16-bit group scales** (``group_size``, session 27): the codes and x ride the ring as above;
  each warp runs the register ring's grouped step (each 32-group one MMA chain, its exact fp32
  sum times the scale), and loads its rows' packed scales from global memory a chunk ahead.
- **x boxes inside x** (group scales, session 29): a box that runs past x's M rows is
  zero-filled by TMA, slowly (7 us at 9 tokens of 18432 x 3072 with one-warp CTAs). Where a
  quarter of the token tile or more would, x comes as a power-of-two box plus one box per set
  bit of the rest (:func:`x_boxes`); the stage rows past them are never written, and their
  tokens' outputs are not stored.

Requirements (:func:`is_supported`; the ops use ``fp4_gemv_sm90`` or ``fp4_gemv`` otherwise):
Hopper, M <= 32, K % 256 == 0, contiguous operands with 16-byte aligned bases; group sizes
32, 64 or multiples of 128 (:func:`group_size_is_supported`). The ops send it NVFP4 weights at
M >= 4 (``fp4mm.ops.dispatch.GEMV_SM90_TMA_MIN_M``) and groups of 32 and 64 from 5 tokens, of
multiples of 128 from 1 (``fp4mm.ops.dispatch.tma_min_m_grouped``); W4A4 at 17-32 tokens on
weights of 2^25 elements or more, x dequantised to fp16 first
(``fp4mm.ops.dispatch.GEMV_W4A4_TMA_MIN_M``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from fp4mm.backend import is_hopper, sm_count
from fp4mm.kernels import fp4_gemv_sm90
from fp4mm.kernels.alpha import alpha_args
from fp4mm.kernels.fp4_gemv_sm90 import (
    _GL_DTYPE,
    _epilogue,
    _operand_layouts,
    _step,
    _token_tile,
)
from fp4mm.kernels.host import SM90_SMS, cdiv
from fp4mm.kernels.launch import launch

KCHUNK = 256  # K per ring stage: two 128-K steps (the scale box's 16-byte minimum)
_PLAIN8 = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
# Codes and x land 128-byte swizzled (x as [tokens, 4, 64] boxes: 128-byte rows of one token)
# and are read back through the bank-conflict-free views below
_W_SWIZZLED = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2)
_X_SWIZZLED = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=3)


@gluon.constexpr_function
def _row_bases(rows, first):
    return [[1 << r, 0] for r in range(first, rows.bit_length() - 1)]


# The views map a shared-memory offset (bit by bit, XOR-linear) to the [rows, K] index the
# register layouts read. Codes and x land 128-byte swizzled (16-byte unit u of a 128-byte row r
# at u ^ (r % 8)). NVFP4 weights (``interleaved``) read the 256-K chunk in *step order*: step s,
# quad lane c, in-lane index j at 16 s + 4 c + j words (codes) or 64 s + 16 c + j pairs (x), and
# step s of quad lane c holds the chunk's 32-K unit 2 c + s (the same K permutation on both
# operands and the scales; the plain layouts held unit 4 s + c). Then the eight lanes of each
# 16-byte load phase (two rows or tokens, four quad lanes) read eight different bank groups: the
# plain layouts had 10 wavefronts per load instead of 4 (ncu, session 28). The group-scale form
# keeps the natural K order (its packed scales follow it; each lane reads one 4-byte word of
# each 32-group): the swizzle alone spreads a word load's eight rows over eight bank groups.
@gluon.constexpr_function
def _codes_view(rows, interleaved=True):
    """int32 code words [rows, 32] of a [rows, 128 B] codes box, 128-byte swizzled."""
    if interleaved:
        return gl.SharedLinearLayout([[0, 1], [0, 2], [0, 16], [0, 4], [0, 8], [1, 16], [2, 4],
                                      [4, 8]] + _row_bases(rows, 3))
    return gl.SharedLinearLayout([[0, 1], [0, 2], [0, 4], [0, 8], [0, 16], [1, 4], [2, 8],
                                  [4, 16]] + _row_bases(rows, 3))


@gluon.constexpr_function
def _scales_view(rows):
    """int16 E4M3 scale pairs [rows, 8] of a [rows, 16 B] scales box (not swizzled)."""
    return gl.SharedLinearLayout([[0, 4], [0, 1], [0, 2]] + _row_bases(rows, 0))


@gluon.constexpr_function
def _x_view(tokens, interleaved=True):
    """int32 pairs of 16-bit x [tokens, 128] of a [tokens, 4, 64] x box, 128-byte swizzled (a
    128-byte row is 64 K of one token: the swizzle row is 4 token + K block)."""
    if interleaved:
        return gl.SharedLinearLayout([[0, 1], [0, 2], [0, 4], [0, 8], [0, 64], [0, 20], [0, 40],
                                      [1, 64]] + _row_bases(tokens, 1))
    return gl.SharedLinearLayout([[0, 1], [0, 2], [0, 4], [0, 8], [0, 16], [0, 36], [0, 72],
                                  [1, 16]] + _row_bases(tokens, 1))


@gluon.constexpr_function
def _both_steps(ll):
    """A [rows, n] register layout -> [rows, 2 n], the step (column bit n) a register bit: the
    group-scale form loads a chunk's two steps of x at once (its swizzled view cannot be sliced
    by step: the step bit is XOR-ed into the 16-byte unit)."""
    return gl.DistributedLinearLayout(ll.reg_bases + [[0, ll.shape[1]]], ll.lane_bases,
                                      ll.warp_bases, ll.block_bases,
                                      [ll.shape[0], 2 * ll.shape[1]])


@gluon.jit
def _issue(w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, w_bufs, s_bufs, x_bufs, ready, s,
           row0, chunk, live, GROUPED: gl.constexpr, X_ROWS: gl.constexpr):
    """Stage ``s`` <- chunk ``chunk`` (256 K) of the CTA's weight rows, their E4M3 scales (not
    for 16-bit group scales: the consumer loads those) and x: one box of NT token rows, or
    (``X_ROWS`` > 0, see ``x_boxes``) X_ROWS rows as a box of x_desc's XM rows (a power of two)
    and then boxes of XM / 2, XM / 4 and XM / 8 rows (xh_desc, xq_desc, xe_desc) for the set bits
    of X_ROWS - XM, so that no box runs far past x's M rows."""
    if X_ROWS == 0:
        xbytes: gl.constexpr = x_desc.block_type.nbytes
    else:
        xbytes: gl.constexpr = X_ROWS * (x_desc.block_type.nbytes // x_desc.block_type.shape[0])
    if GROUPED:
        nbytes: gl.constexpr = w_desc.block_type.nbytes + xbytes
    else:
        nbytes: gl.constexpr = w_desc.block_type.nbytes + s_desc.block_type.nbytes + xbytes
    mbarrier.expect(ready.index(s), nbytes, pred=live)
    tma.async_copy_global_to_shared(w_desc, [row0, chunk * 128], ready.index(s), w_bufs.index(s),
                                    pred=live)
    if not GROUPED:
        tma.async_copy_global_to_shared(s_desc, [row0, chunk * 16], ready.index(s),
                                        s_bufs.index(s), pred=live)
    xs = x_bufs.index(s)  # x viewed as (M, K / 64, 64)
    if X_ROWS == 0:
        tma.async_copy_global_to_shared(x_desc, [0, chunk * 4, 0], ready.index(s), xs, pred=live)
    else:
        XM: gl.constexpr = x_desc.block_type.shape[0]
        R: gl.constexpr = X_ROWS - XM
        tma.async_copy_global_to_shared(x_desc, [0, chunk * 4, 0], ready.index(s),
                                        xs.slice(0, XM, dim=0), pred=live)
        if (R & (XM // 2)) != 0:
            tma.async_copy_global_to_shared(xh_desc, [XM, chunk * 4, 0], ready.index(s),
                                            xs.slice(XM, XM // 2, dim=0), pred=live)
        O2: gl.constexpr = XM + (R & (XM // 2))
        if (R & (XM // 4)) != 0:
            tma.async_copy_global_to_shared(xq_desc, [O2, chunk * 4, 0], ready.index(s),
                                            xs.slice(O2, XM // 4, dim=0), pred=live)
        O3: gl.constexpr = O2 + (R & (XM // 4))
        if (R & (XM // 8)) != 0:
            tma.async_copy_global_to_shared(xe_desc, [O3, chunk * 4, 0], ready.index(s),
                                            xs.slice(O3, XM // 8, dim=0), pred=live)


@gluon.jit
def _group_scales(ws_ptr, s_offs, chunk, W_GROUP: gl.constexpr):
    """The packed 16-bit group scales of chunk ``chunk``'s two 128-K steps: one int32/int64
    word per row and step for groups of 64 and 32, one int16 per row and group from 128 on (a
    group spans W_GROUP / 128 steps, and an odd multiple of 128 can end between the two)."""
    if W_GROUP >= 128:
        first = chunk * 2 // (W_GROUP // 128)
        second = (chunk * 2 + 1) // (W_GROUP // 128)
    else:
        first = chunk * 2
        second = first + 1
    return gl.load(ws_ptr + s_offs + first), gl.load(ws_ptr + s_offs + second)


_PAD_LAYOUT = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])


@gluon.jit
def _hold(pad):
    """One 1 KB store into the padding buffer ``pad`` after the K loop: it keeps the buffer
    allocated (an unused one is removed) for the CTA's whole run."""
    pad.slice(0, 1, dim=0).store(gl.zeros([1, 1024], gl.int8, gl.BlockedLayout(
        [1, 8], [1, 32], [1, gl.num_warps()], [1, 0])))


@gluon.jit
def _fp4_gemv_tma_sm90_kernel(
    w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, ws_ptr, out_ptr, M, N, CHUNKS,
    CHUNKS_SPLIT, alpha, alpha_ptr, stride_om, stride_wsn,
    DTYPE: gl.constexpr, NT: gl.constexpr, HIGH_FIRST: gl.constexpr, PARTIAL: gl.constexpr,
    ROW_TILES: gl.constexpr, STAGES: gl.constexpr, PDL: gl.constexpr,
    ALPHA_PTR: gl.constexpr = False, W_GROUP: gl.constexpr = 0,
    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0, PAD_A: gl.constexpr = 0,
    PAD_B: gl.constexpr = 0, PAD_C: gl.constexpr = 0,
):
    """``out[m, n] = alpha * sum_k x[m, k] * W[n, k]`` over this program's K chunks.

    w_desc: uint8 codes (N, K/2), box [BN, 128]; s_desc: uint8 E4M3 scales (N, K/16), box
    [BN, 16] (None with W_GROUP); x_desc: fp16/bf16 x viewed as (M, K/64, 64), box [NT, 4, 64],
    or with X_ROWS > 0 box [XM, 4, 64] (XM a power of two, ``x_boxes``) and xh/xq/xe_desc boxes
    of XM / 2, 4, 8 rows (None where unused): the stage's first X_ROWS token rows are loaded,
    the rest of it is never written
    (those tokens' outputs are not stored). Grid (N / BN, splits), BN = 16
    ROW_TILES num_warps; CHUNKS = K / 256, CHUNKS_SPLIT per split (the last may be shorter).
    PARTIAL: write unscaled fp32 partials to ``out_ptr`` as (splits, M, N).
    W_GROUP > 0: 16-bit SDTYPE group scales per W_GROUP (32, 64 or a multiple of 128) instead of
    E4M3 ones; ``ws_ptr`` (row stride ``stride_wsn``) holds them as one int16/32/64 word per row
    and 128-K step (``fp4_gemv_sm90``'s grouped form, one MMA chain per group), loaded a chunk
    ahead by the consumers; ``s_desc`` is then None.
    PAD_A, PAD_B, PAD_C: KB of shared memory held and never read (powers of two or 0; see
    :func:`fair_share_pad`)."""
    GROUPED: gl.constexpr = W_GROUP > 0
    BN: gl.constexpr = 16 * ROW_TILES * gl.num_warps()
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0],
                                                  warps_per_cta=[gl.num_warps(), 1],
                                                  instr_shape=[16, 8])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    # group scales: each 32-group in one MMA pair (``_slot_to_phys`` span 2)
    SPAN: gl.constexpr = 2 if GROUPED else 0
    WL: gl.constexpr = _operand_layouts(gl.to_linear_layout(a_l, [BN, 128]), False, SPAN)
    XL: gl.constexpr = _operand_layouts(gl.to_linear_layout(b_l, [128, NT]), True, SPAN)
    W_WORDS: gl.constexpr = WL[0]
    W_SCALES: gl.constexpr = WL[1]
    X_PAIRS: gl.constexpr = XL[2]

    w_bufs = gl.allocate_shared_memory(gl.uint8, [STAGES, BN, 128], w_desc.layout)
    if GROUPED:
        s_bufs = w_bufs  # unused
    else:
        s_bufs = gl.allocate_shared_memory(gl.uint8, [STAGES, BN, 16], s_desc.layout)
    x_bufs = gl.allocate_shared_memory(x_desc.dtype, [STAGES, NT, 4, 64], x_desc.layout)
    W_VIEW: gl.constexpr = _codes_view(BN, not GROUPED)
    X_VIEW: gl.constexpr = _x_view(NT, not GROUPED)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    if PAD_A > 0:  # caps the CTAs an SM takes (fair_share_pad)
        pad_a = gl.allocate_shared_memory(gl.int8, [PAD_A, 1024], _PAD_LAYOUT)
    if PAD_B > 0:
        pad_b = gl.allocate_shared_memory(gl.int8, [PAD_B, 1024], _PAD_LAYOUT)
    if PAD_C > 0:
        pad_c = gl.allocate_shared_memory(gl.int8, [PAD_C, 1024], _PAD_LAYOUT)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
    fence_async_shared()

    if PDL:  # launched early behind the previous kernel: wait for it before any memory access
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    c_begin = pid_k * CHUNKS_SPLIT
    n_c = gl.minimum(c_begin + CHUNKS_SPLIT, CHUNKS) - c_begin
    row0 = pid_n * BN
    for t in gl.static_range(STAGES):
        _issue(w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, w_bufs, s_bufs, x_bufs, ready,
               t, row0, c_begin + t, t < n_c, GROUPED, X_ROWS)
    if GROUPED:  # rows past N clamped to the last row (their outputs are not stored)
        rs = gl.minimum(row0 + gl.arange(0, BN, layout=gl.SliceLayout(1, mma)), N - 1)
        s_offs = rs * stride_wsn
        gs0, gs1 = _group_scales(ws_ptr, s_offs, c_begin, W_GROUP)

    acc = gl.zeros([BN, NT], gl.float32, mma)
    for t in range(n_c):
        s = t % STAGES
        if GROUPED:  # this chunk's scales; the next chunk's load now (clamped into the matrix)
            sc0, sc1 = gs0, gs1
            gs0, gs1 = _group_scales(ws_ptr, s_offs, gl.minimum(c_begin + t + 1, CHUNKS - 1),
                                     W_GROUP)
        mbarrier.wait(ready.index(s), (t // STAGES) & 1)
        wv = w_bufs.index(s)._reinterpret(gl.int32, [BN, 32], W_VIEW)
        xv = x_bufs.index(s)._reinterpret(gl.int32, [NT, 128], X_VIEW)
        wd0 = wv.slice(0, 16, dim=1).load(W_WORDS)
        wd1 = wv.slice(16, 16, dim=1).load(W_WORDS)
        if GROUPED:
            xa0, xa1 = xv.load(_both_steps(X_PAIRS)).reshape([NT, 2, 64]).permute((0, 2, 1)).split()
            xa0 = gl.convert_layout(xa0, X_PAIRS, assert_trivial=True)
            xa1 = gl.convert_layout(xa1, X_PAIRS, assert_trivial=True)
        else:
            xa0 = xv.slice(0, 64, dim=1).load(X_PAIRS)
            xa1 = xv.slice(64, 64, dim=1).load(X_PAIRS)
        if not GROUPED:
            sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _scales_view(BN))
            sc0 = sv.slice(0, 4, dim=1).load(W_SCALES)
            sc1 = sv.slice(4, 4, dim=1).load(W_SCALES)
        gl.thread_barrier()  # every warp has read stage s: refill it
        fence_async_shared()
        _issue(w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, w_bufs, s_bufs, x_bufs, ready,
               s, row0, c_begin + t + STAGES, t + STAGES < n_c, GROUPED, X_ROWS)
        acc = _step(acc, wd0, sc0, xa0, xa0, False, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, W_WORDS, a_l, b_l, 128, W_GROUP)
        acc = _step(acc, wd1, sc1, xa1, xa1, False, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, W_WORDS, a_l, b_l, 128, W_GROUP)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
    if PAD_A > 0:
        _hold(pad_a)
    if PAD_B > 0:
        _hold(pad_b)
    if PAD_C > 0:
        _hold(pad_c)

    _epilogue(acc, out_ptr, row0, pid_k, M, N, alpha, alpha_ptr, stride_om, PARTIAL, PDL,
              ALPHA_PTR)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------
MAX_M = 32  # tokens per launch: the MMA N side, padded to 8, 16 or 32


@dataclass(frozen=True)
class GemvTMAConfig:
    """row_tiles: 16-row MMA tiles per warp (2 shares each x stage between two tiles); stages:
    ring depth (256-K chunks); split_k: K ranges (a deterministic reduce sums them); warps:
    warps per CTA, each with its own rows, all reading the CTA's one x stage."""

    row_tiles: int = 2
    stages: int = 3
    split_k: int = 2
    warps: int = 1


def config_is_valid(cfg: GemvTMAConfig) -> bool:
    return (cfg.row_tiles in (1, 2) and 2 <= cfg.stages <= 4 and cfg.split_k >= 1
            and cfg.warps in (1, 2, 4))


# One wave of CTAs for the NVFP4 rule: the SMs of an H100 SXM / H200 (SM90_SMS) times the CTAs
# that fit an SM's 228 KB of shared memory (each CTA also reserves 1 KB).
_SMEM_PER_SM = 228 * 1024


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def choose_config(M: int, N: int, K: int, group_size: int | None = None) -> GemvTMAConfig:
    """The heuristic, from the H100 sweeps (CUDA-graph medians). Re-checked on an H200 (session
    37, bench/results/2026-11-28-decode-bar-resweep-h200.json, 18432 x 3072, 3 rotating rounds):
    at 16 tokens the NVFP4 rule 17.77 us against the best swept config's 17.72, groups of 32
    20.00 against 19.27; at 4 tokens of groups of 32 this kernel's best config 16.87, the
    ring's rule (which the ops use there) 17.20. Nothing moved.
    - NVFP4 weights (session 28, after the swizzled reads; bench/results/2026-11-27-gemv-tma-
      swizzle-sweep-rt1-h100.json: 9 / 16 / 24 / 32 tokens on seven weight shapes, bf16 x, warps
      1/2/4 x stages 2/3 x split 1-4 with one row tile): four warps of one row tile (64 rows a
      CTA), 2 stages, K split 2 ways, or not split where two splits would not fit one wave. Within
      6% of the best swept config at 27 of the 28 points (8192 x 3072 at 32 tokens: 13.3 against
      11.6 us, single timings); 18432 x 3072 at 16 tokens 19.1 us (the session-27 rule 20.3).
      With the bank conflicts gone, one row tile (the x fragments read once per 16 rows instead
      of 32) beats two: shared-memory reads are cheap now, and the smaller CTAs fill the SMs.
    - NVFP4 weights whose split-K grid leaves the SMs' last wave mostly empty (session 38, H200,
      bench/results/2026-11-28-gemv-tma-split-rule-run2-h200.json, bf16 x, 4-32 tokens, 3
      rounds): the split of 1-5 with the fewest chunks on the busiest SM
      (:func:`busiest_sm_chunks`) where that is at least 15% fewer than the rule's. At all 44
      points where this changes the split it was faster, 1.06-1.42x: 5120 x 5120 split 3 (M=16
      13.02 -> 10.66 us in the first run; 1.22-1.32x), 6144 x 4096 and 10240 x 8192 split 4
      (1.11-1.16x), 5120 x 27648 split 3 (1.39-1.42x), 2048 x 2048 and 1024 x 4096 split 4
      (1.10-1.38x), 18432 x 3072 at 24-32 tokens split 4 instead of 1 (1.06-1.08x). The measure
      gains at most 12.5% at the shapes the rule was tuned on, where other splits measured up
      to 6% either way (bench/results/2026-11-28-gemv-tma-balanced-splits-h200.json), so those
      keep it.
    - NVFP4 weights whose rule grid holds at most one CTA an SM (session 41, H200: narrow
      weights, N <= 4224 rows at split 2, e.g. the models' down projections): such a grid
      counts 1.25 times its chunks (:func:`split_load`; one four-warp CTA cannot keep an SM
      streaming), and where the best of splits 1-5 is still such a grid, splits up to 8 of at
      least 2 chunks are weighed too. Split sweep at eight long-K shapes, 4-32 tokens
      (bench/results/2026-11-28-gemv-tma-long-k-part{0,1}-h200.json); old rule against new
      where they differ (...-split-rule-long-k-h200.json: 16 shapes, 96 points, bf16 x as the
      op launches it): 0.955-1.296x, median 1.12x; 4096 x 14336 split 2 -> 4 1.12-1.24x, 4096 x
      28672 1.22-1.30x, 3584 x 18944 1.13-1.24x, 3072 x 9216 split 2 -> 5 1.15-1.23x, 512 and
      1024 x 4096 split 4 -> 8 1.11-1.18x; 11 points slower, at most 4.5% (2560 x 2560 split
      3 -> 5 0.955-0.994x). W4A4 through the pre-pass route at 17-32 tokens 1.09-1.24x at all
      15 points (...-long-k-w4a4-h200.json); the W4A4 layer's 16-bit-x route 0.98-1.18x at 144
      points, median 1.06x (...-w4a4-layer-16bit-x-tma-rule-h200.json).
    - 16-bit group scales (``group_size``, session 28, after the swizzled reads;
      bench/results/2026-11-27-gemv-tma-swizzle-grouped-h100.json, group 32, fp16 x, warps
      1/2/4 x row tiles 1/2 x split 1-4, single timings, us): one row tile, 2 stages, split 2,
      one warp up to 16 tokens and two above. Swept: 16 x 18432 x 3072 w1/r1/k2 21.12 (best
      w2/r1/k2 20.29; two warps spill 12 B with bf16 x at 16 tokens), 16 x 8192 x 8192 w1/r1/k2
      21.13 (the best), 32 x 18432 x 3072 w2/r1/k2 25.12 (the best; one warp 34.1); the
      session-27 rule (two row tiles, split 3-4) took 29.3 / 32.0 / 34.1 before the swizzle.
      Session 38 (H200, bench/results/2026-11-28-gemv-tma-grouped-splits-h200.json and
      ...-split-rule-grouped-h200.json, fp16 x, 3 rounds): where two splits leave fewer CTAs than
      one wave (132 SMs x the CTAs an SM's shared memory takes: 10 at 16 tokens, 5 at 32), split
      up to 5 ways until a wave is in flight. Against split 2 at the 35 points this changes: 5120
      x 5120 split 4 1.14-1.27x, 5120 x 27648 1.34-1.45x, 1024 x 4096 split 5 1.38-1.48x, 2048 x
      2048 1.04-1.17x, 6144 x 4096 split 3 0.99-1.06x, 4096 x 4096 and 3072 x 3072 split 5
      0.96-1.15x (four points 1.5-4% slower, 3072 x 3072 at 16 tokens the most).
    - 16-bit group scales at up to 8 tokens (the 8-token tile; session 30,
      bench/results/2026-11-27-gemv-tma-grouped-small-sweep-h100.json: groups of 32 at 5 and 8
      tokens, eight weight shapes, fp16 and bf16 x, warps 1/2/4 x split 1-4, 3 rotating rounds;
      groups of 64 to 512 at 2-8 tokens were then measured with this rule): four warps on
      the widest weights (N >= 16384; 18432 and 28672 rows measured, 14336 wants one), split 3
      from K = 5120 (20 chunks), else one warp and split 2. Within 6% of the best swept config at
      all 32 points (mean 1.4% over it), where the 9-16-token rule above was up to 21% over
      (mean 6.4%): 5120 x 5120 M=5 10.17 against 12.30 us, 18432 x 3072 bf16 M=8 17.88 against
      19.95 (fp16 M=5 17.78 against 18.98)."""
    chunks = max(1, K // KCHUNK)
    if group_size is not None:
        if _token_tile(M) == 8:
            return GemvTMAConfig(row_tiles=1, stages=2, split_k=min(3 if chunks >= 20 else 2,
                                                                      chunks),
                                 warps=4 if N >= 16384 else 1)
        cfg = GemvTMAConfig(row_tiles=1, stages=2, split_k=2, warps=2 if M > 16 else 1)
        # at least a wave of CTAs (session 38): split up to 5 ways where two leave SMs short
        wave = _wave(cfg, _token_tile(M), grouped=True)
        split = max(2, min(5, wave // cdiv(N, 16 * cfg.warps)))
        return GemvTMAConfig(row_tiles=1, stages=2, split_k=min(split, chunks), warps=cfg.warps)
    cfg = GemvTMAConfig(row_tiles=1, stages=2, split_k=2, warps=4)
    rows = 16 * cfg.row_tiles * cfg.warps
    wave = _wave(cfg, _token_tile(min(max(M, 1), MAX_M)))
    if chunks < 2 or cdiv(N, rows) * 2 > wave:
        cfg = GemvTMAConfig(row_tiles=1, stages=2, split_k=1, warps=4)
    # a split whose grid fills the SMs much more evenly (session 38), a lone CTA an SM counted
    # as more chunks (session 41)
    rb = cdiv(N, rows)
    load = {k: split_load(rb, chunks, k) for k in range(1, min(5, chunks) + 1)}
    load[cfg.split_k] = split_load(rb, chunks, cfg.split_k)
    best = min(load, key=lambda k: (load[k], k))
    if grid_ctas(rb, chunks, best) <= SM90_SMS:  # still lone: up to LONE_MAX_SPLIT
        load |= {k: split_load(rb, chunks, k) for k in range(6, LONE_MAX_SPLIT + 1)
                 if cdiv(chunks, k) >= LONE_MIN_CHUNKS}
        best = min(load, key=lambda k: (load[k], k))
    if load[best] <= SPLIT_REBALANCE * load[cfg.split_k]:
        cfg = GemvTMAConfig(row_tiles=1, stages=2, split_k=best, warps=4)
    return cfg


# Leave the split rule for the most even split only where that cuts the busiest SM's chunks by
# 15% or more: the rule above was tuned on the H100 at shapes where the even split gains at
# most 12.5% in this measure and other splits measured up to 6% either way (session 38).
SPLIT_REBALANCE = 0.85
# Session 41: a grid of at most one CTA an SM counts LONE_CTA_PENALTY times its chunks
# (split_load), and where the best of splits 1-5 is still such a grid, splits up to
# LONE_MAX_SPLIT of at least LONE_MIN_CHUNKS chunks a CTA are weighed too.
LONE_CTA_PENALTY = 1.25
LONE_MAX_SPLIT = 8
LONE_MIN_CHUNKS = 2


def busiest_sm_chunks(row_blocks: int, chunks: int, split_k: int, sms: int = SM90_SMS) -> int:
    """256-K chunks the busiest SM streams when ``row_blocks`` row blocks are split ``split_k``
    ways along K (as the launcher splits: ``cdiv(chunks, split_k)`` chunks a CTA) and the CTAs
    spread evenly over ``sms`` SMs: the grid's quantisation, which decides the time where the
    last wave is mostly empty (5120 x 5120 at 4-32 tokens: 160 CTAs of split 2 on 132 SMs,
    11.98-14.82 us; split 3, 240 CTAs, 9.77-11.95; H200, session 38)."""
    return cdiv(grid_ctas(row_blocks, chunks, split_k), sms) * cdiv(chunks, split_k)


def grid_ctas(row_blocks: int, chunks: int, split_k: int) -> int:
    """CTAs of the launcher's grid: ``cdiv(chunks, split_k)`` chunks a CTA, as many CTAs a row
    block as that takes."""
    return row_blocks * cdiv(chunks, cdiv(chunks, split_k))


def split_load(row_blocks: int, chunks: int, split_k: int, sms: int = SM90_SMS) -> float:
    """The split rule's measure: :func:`busiest_sm_chunks`, times ``LONE_CTA_PENALTY`` where the
    grid holds at most one CTA an SM. One CTA (four warps) cannot keep an SM streaming: bf16 x,
    16 tokens, 4096 x 14336 split 2 (128 CTAs) 20.87 us, split 4 (256 CTAs, the same busiest
    SM's chunks) 17.74; 4096 x 11008 17.24 and 14.90 (H200, session 41)."""
    lone = grid_ctas(row_blocks, chunks, split_k) <= sms
    return busiest_sm_chunks(row_blocks, chunks, split_k, sms) * (LONE_CTA_PENALTY if lone else 1)


def x_boxes(M: int, nt: int, grouped: bool) -> tuple[int, int]:
    """(rows of the first x box, rows loaded in all: 0 for one box of ``nt`` rows). The
    group-scale form at M <= 3 nt / 4 loads M rows rounded up to even: a box of the largest
    power of two not above that count, then one box for each set bit of the rest (``_issue``).

    A TMA box that runs past x's M rows is zero-filled, and that is slow in proportion to the
    rows past the end: the one-warp group-scale CTAs (four times the x copies of the NVFP4 rule's
    four-warp ones) took 28.4 us at 9 tokens of 18432 x 3072 against 21.1 with x padded to 16
    rows, 24.5 against 21.1 at 12 (the NVFP4 rule: no difference; session 29,
    bench/results/2026-11-27-gemv-tma-x-padding-h100.json). Extra boxes cost too, so they are
    used only where a quarter of the tile or more would run past x: fp16 x, us (extra boxes /
    one box; bench/results/2026-11-27-gemv-tma-x-boxes-h100.json, 3 rotating rounds), 18432 x
    3072 M=9 19.72 / 27.95, M=11 20.30 / 25.96, M=13 21.63 / 22.80, M=14 21.71 / 22.70, M=20
    25.02 / 28.88, M=24 25.64 / 25.99, M=27 25.80 / 24.60, M=29 27.08 / 25.06; 8192 x 8192 M=9
    21.49 / 26.70, M=13 22.43 / 21.48, M=14 22.24 / 21.02, M=24 27.56 / 27.09.

    One token is one 2-row box (its second row past x, zero-filled): against the 8-row box,
    8192 x 8192 g128 17.24 / 21.59 us, 4096 x 4096 g32 7.36 / 10.86, and within 2% either way
    on 18432 x 3072 (session 31, bench/results/2026-11-27-w4a16-one-token-box-h100.json)."""
    rows = M + (M & 1)  # Gluon slices a 128-byte-swizzled stage in whole 1 KB atoms (2 rows)
    if not grouped or M > 3 * nt // 4:
        return nt, 0
    return 1 << (rows.bit_length() - 1), rows


def x_extra_boxes(xm: int, rows: int) -> tuple[int, int, int]:
    """The rows of the boxes after the first (xm / 2, xm / 4, xm / 8: ``_issue``'s xh, xq, xe
    descriptors), 0 where ``rows - xm`` lacks that bit (or ``rows`` is 0: one box)."""
    return tuple(xm >> j if rows and (rows - xm) & (xm >> j) else 0 for j in (1, 2, 3))


def is_supported(device, M: int, K: int, *tensors: torch.Tensor) -> bool:
    """True where this kernel applies: Hopper, 1 <= M <= MAX_M, K % 256 == 0, every operand
    contiguous with a 16-byte aligned base (TMA's requirement; rows are then aligned too)."""
    return (is_hopper(device) and 1 <= M <= MAX_M and K % KCHUNK == 0
            and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in tensors))


def group_size_is_supported(group_size: int) -> bool:
    """16-bit group scales this kernel takes: the register ring's one-chain-per-group sizes (32,
    64, multiples of 128), not 16 (which the ring serves only as MMA columns)."""
    return group_size != 16 and fp4_gemv_sm90.group_size_is_supported(group_size)


def _ring_bytes(cfg: GemvTMAConfig, nt: int, grouped: bool = False) -> int:
    """Shared memory of the ring: codes, E4M3 scales (not with 16-bit group scales, which the
    consumers load) and an ``nt``-token x box a stage."""
    return cfg.stages * (16 * cfg.row_tiles * cfg.warps * (128 + (0 if grouped else 16))
                         + nt * KCHUNK * 2)


def _wave(cfg: GemvTMAConfig, nt: int, grouped: bool = False) -> int:
    """CTAs resident at once: the SMs times the CTAs an SM's shared memory holds (each CTA also
    reserves 1 KB)."""
    return SM90_SMS * (_SMEM_PER_SM // (_ring_bytes(cfg, nt, grouped) + 1024))


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def fair_share_pad(cfg: GemvTMAConfig, nt: int, ctas: int, sms: int,
                   smem_per_sm: int = _SMEM_PER_SM) -> tuple[int, int, int]:
    """KB of shared memory for each CTA (E4M3 weight scales) to hold beyond its ring, as up to
    three powers of two, so that an SM fits no more than ``ceil(ctas / sms)`` of the launch's
    CTAs; ``(0, 0, 0)`` where the ring alone caps it there (or no such sum fits).

    Why: behind a kernel that lets it launch at its start (PDL), a CTA does not start on an SM
    where that kernel still runs, so the first ones pile onto the SMs it left free, up to the
    ring's own cap (6 a SM at 16 tokens), while others get none: behind the W4A4 x pre-pass 128
    CTAs of 4096 x 14336 ran on 23 SMs, 63.5 us against 23.2 capped. H100, CUDA-graph medians
    over 4 weight copies, 3 rounds (bench/results/2026-11-28-fair-share-probe-h100.json): bf16
    x back to back (the reduce before each call launches it early) 8192 x 8192 M=32 27.45 ->
    22.88 us, 18432 x 3072 M=16 19.68 -> 19.08, within 0.12 us at the other six points. Then
    through the public op, shipped against unpadded (...-fair-share-h100.json, bf16 x, 4-32
    tokens on three shapes): 8192 x 8192 M=32 23.72 / 28.82, 18432 x 3072 M=16 18.89 / 19.54,
    the other ten points from 0.28 slower to 0.23 faster. Measured for E4M3 (NVFP4) weight
    scales only; the group-scale form is not padded."""
    own = _ring_bytes(cfg, nt) + 64  # and the stages' barriers
    fair = cdiv(ctas, sms)
    if fair >= smem_per_sm // (own + 1024):  # (1 KB a CTA is reserved by the system)
        return 0, 0, 0
    room = (smem_per_sm // fair - 1024 - own) // 1024
    pad = []
    while room > 0 and len(pad) < 3:
        pad.append(1 << (room.bit_length() - 1))
        room -= pad[-1]
    per_cta = own + 1024 * (sum(pad) + 1)
    if smem_per_sm // per_cta != fair:
        return 0, 0, 0
    return tuple(pad + [0] * (3 - len(pad)))


def gemv_tma_sm90(x: torch.Tensor, w_q: torch.Tensor, w_scales: torch.Tensor, alpha,
                  order: str, out: torch.Tensor, *, config: GemvTMAConfig | None = None,
                  group_size: int | None = None, fair_share: bool = True) -> None:
    """``out = alpha * x @ W^T`` (written in place) for NVFP4 or groupwise FP4 weights and 16-bit
    x.

    Args:
        x: fp16/bf16 ``(M, K)`` activations (the MMA runs in x's dtype).
        w_q: uint8 ``(N, K/2)`` codes in ``order``; w_scales: uint8 / float8_e4m3fn ``(N, K/16)``,
            or with ``group_size`` (:func:`group_size_is_supported`) fp16/bf16
            ``(N, K/group_size)`` group scales.
        alpha: fp32 factor applied in the epilogue: a float or a one-element float32 device
            tensor (``fp4mm.kernels.alpha``).
        out: ``(M, N)`` fp16/bf16/fp32 with unit column stride.
        fair_share: with E4M3 weight scales and split K (the launches that use PDL), cap the
            CTAs an SM takes at its share of the grid (:func:`fair_share_pad`); False where the
            kernel before lets this one launch only after its stores (nothing piles up there,
            and the padding measured 0-0.44 us slower behind the W4A4 pre-pass).
    The caller checks :func:`is_supported`; shapes and dtypes are validated by ``fp4mm.ops``.
    """
    M, K = x.shape
    N = w_q.shape[0]
    cfg = config or choose_config(M, N, K, group_size)
    if not config_is_valid(cfg):
        raise ValueError(f"config: invalid {cfg}")
    nt = _token_tile(M)
    bn = 16 * cfg.row_tiles * cfg.warps
    w_desc = TensorDescriptor.from_tensor(w_q, [bn, 128], _W_SWIZZLED)
    if group_size is not None:
        if not group_size_is_supported(group_size):
            raise ValueError(f"group_size: expected 32, 64 or a multiple of 128, got "
                             f"{group_size}")
        ws = fp4_gemv_sm90.packed_group_scales(w_scales, group_size)
        # an unused descriptor goes as None (a constexpr): Triton encodes every descriptor
        # argument again at each launch, a few microseconds of host time each
        s_desc, sdtype = None, _GL_DTYPE[w_scales.dtype]
    else:
        if w_scales.dtype == torch.float8_e4m3fn:
            w_scales = w_scales.view(torch.uint8)
        ws, sdtype = w_scales, gl.float16
        s_desc = TensorDescriptor.from_tensor(w_scales, [bn, 16], _PLAIN8)
    xm, xr = x_boxes(M, nt, group_size is not None)
    xv = x.view(M, K // 64, 64)
    x_desc = TensorDescriptor.from_tensor(xv, [xm, 4, 64], _X_SWIZZLED)
    xh_desc, xq_desc, xe_desc = (  # None where unused
        TensorDescriptor.from_tensor(xv, [rows, 4, 64], _X_SWIZZLED) if rows else None
        for rows in x_extra_boxes(xm, xr))
    chunks = K // KCHUNK
    per = cdiv(chunks, max(1, min(cfg.split_k, chunks)))
    split = cdiv(chunks, per)
    partial = split > 1
    dst = (torch.empty((split, M, N), dtype=torch.float32, device=out.device) if partial
           else out)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    pad = (fair_share_pad(cfg, nt, cdiv(N, bn) * split, sm_count(out.device))
           if partial and fair_share and group_size is None else (0, 0, 0))
    launch(_fp4_gemv_tma_sm90_kernel, (cdiv(N, bn), split),
        w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, ws, dst, M, N, chunks, per, a, alpha_ptr,
        N if partial else out.stride(0), ws.stride(0),
        DTYPE=_GL_DTYPE[x.dtype], NT=nt, HIGH_FIRST=order == "high_first", PARTIAL=partial,
        ROW_TILES=cfg.row_tiles, STAGES=cfg.stages, PDL=partial,
        ALPHA_PTR=alpha_on_device and not partial, W_GROUP=group_size or 0, SDTYPE=sdtype,
        X_ROWS=xr, PAD_A=pad[0], PAD_B=pad[1], PAD_C=pad[2],
        launch_pdl=partial, num_warps=cfg.warps)
    if partial:
        from fp4mm.kernels.fp4_gemv import reduce_partials

        reduce_partials(dst, out, alpha, pdl=True)
