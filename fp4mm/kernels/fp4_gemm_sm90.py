"""Warp-specialised NVFP4 GEMM for Hopper (sm_90a), written in Gluon (triton.experimental.gluon).

Computes ``out[M, N] = alpha * x[M, K] @ dequant(w)[N, K]^T`` with NVFP4 weights (E2M1 codes, one
E4M3 scale per 16 along K) and either NVFP4 activations (W4A4: dequantised to fp16 by a light
pre-pass, ``fp4mm.kernels.dequant_nvfp4``) or fp16/bf16 activations (W4A16).

Design (../shared/notes/gluon-hopper.md section 5), per CTA tile of 128 weight rows x BN tokens:

- swap-AB: ``y^T = W x^T``. The dequantised weight tile is the *register* A operand of
  ``warpgroup_mma`` (m64nBNk16); the activations are the shared-memory B operand (TMA, K-major).
- 1 producer warp (TMA only, 24 registers) + 2 consumer warpgroups (default partition, 8 warps,
  each warpgroup owns 64 of the 128 weight rows).
- A ring of STAGES shared-memory stages (W codes, W scales, x tile) guarded by ready/empty
  mbarriers. Persistent grid: each CTA walks tiles ``pid, pid + G, ...`` so the producer prefetches
  the next tile's first stages while the consumers run the epilogue.
- Even/odd fragment schedule: ``wgmma(a_even); wait(1)`` retires the previous (odd) tile before
  its A registers are rewritten. Never overwrite the A registers of an in-flight wgmma (checked on
  every shipped config with the SASS hazard checker, tests/kernels/_sass_hazard.py).

Host prepack (``prepack_weight_sm90``) lays out codes and scales *in the consumer's register
order*, so each consumer thread reads its 16 code bytes with one 16-byte ``ld.shared`` and its 8
scale bytes with one 8-byte ``ld.shared``, and every reshape/permute/convert back to the wgmma
operand layout is free (``assert_trivial=True``). Per (128-row block nb, 64-K tile kt):

- codes: 4096 bytes ``[warp w (8)][lane (32)][reg r (16)]`` with lane = 4 g + c, holding packed
  byte ``kbyte = c + 4 (r >> 1)`` of row ``16 w + 8 (r & 1) + g`` (low nibble = even K);
  stored as rows ``nb*16 + 2 w + lane // 16``, columns ``kt*256 + (lane % 16) * 16 + r``;
- scales: 512 bytes ``[w (8)][g (8)][j (8)]`` holding the scale of row ``16 w + 8 (j & 1) + g`` and
  K-block ``j >> 1``; stored as rows ``nb*8 + w``, columns ``kt*64 + 8 g + j``.

Rows are padded to a multiple of 128 and K to a multiple of 128 (an even number of 64-K tiles),
with zero codes and zero scales (0 x anything = 0, NaN-free).

Exactness: E2M1 x E4M3 products are exact in fp16 and bf16; only the fp32 summation order differs
from ``fp4mm.reference``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.language.extra.cuda import gdc_wait

from fp4mm.backend import is_hopper, sm_count
from fp4mm.kernels.alpha import alpha_args, apply_alpha
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4
from fp4mm.kernels.fp4_decode import as_16bit_pairs
from fp4mm.kernels.host import cdiv, next_power_of_2
from fp4mm.kernels.launch import launch
from fp4mm.kernels.prepack_sm90 import group_scales_sm90_triton, prepack_sm90_triton

BM = 128  # weight rows per CTA (2 consumer warpgroups x 64)
BK = 64  # K per stage
K_ALIGN = 2 * BK  # the even/odd schedule consumes K tiles in pairs
_BM = gl.constexpr(BM)
_BK = gl.constexpr(BK)
SMEM_LIMIT = 232448  # bytes of dynamic shared memory per CTA on sm_90
_GL_DTYPE = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16, torch.float32: gl.float32}
_ELEM_BYTES = {torch.float16: 2, torch.bfloat16: 2, torch.float32: 4}
_PLAIN8 = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
_GROUP_SCALE_LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SM90Config:
    """BN: tokens per CTA tile (wgmma N: 16..256, power of 2); STAGES: ring depth;
    PERSISTENT: grid = min(work units, SMs) with a unit loop, else one CTA per unit;
    SPLIT: K-slices per tile of the last, partial wave (1 = no split-K; see :func:`schedule`)."""

    BN: int = 256
    STAGES: int = 4
    PERSISTENT: bool = True
    SPLIT: int = 1

    def smem_bytes(self, out_dtype: torch.dtype = torch.float16) -> int:
        out_bytes = _ELEM_BYTES[out_dtype]
        stage = BM * BK // 2 + BM * BK // 16 + self.BN * BK * 2
        return self.STAGES * stage + self.BN * BM * out_bytes + 2 * self.STAGES * 8 + 64


def config_is_valid(config: SM90Config, out_dtype: torch.dtype = torch.float16,
                    grouped: bool = False) -> bool:
    """The one validity predicate (heuristic, tests and benchmark use it). ``grouped`` (16-bit
    group scales): BN <= 128, since the fp32 partial doubles the accumulator registers (BN 256
    spills 1176 bytes)."""
    return (
        config.BN in ((16, 32, 64, 128) if grouped else (16, 32, 64, 128, 256))
        and 2 <= config.STAGES <= 8
        and 1 <= config.SPLIT <= 16
        and config.smem_bytes(out_dtype) <= SMEM_LIMIT
    )


class Schedule(NamedTuple):
    """The work decomposition of one launch (what the kernel's ``_unit`` decodes).

    Tiles ``t = pid_n * num_m_tiles + pid_m`` (128 weight rows x BN tokens). Tiles
    ``0 .. num_full-1`` are whole units (write ``out`` directly); each later tile is cut into
    ``split`` K-slices of ``k_per_split`` (even) 64-K tiles, the last slice shorter, whose fp32
    partials go to a workspace and are summed in slice order by ``_splitk_reduce_kernel``."""

    num_tiles: int
    num_units: int
    num_full: int
    split: int
    k_per_split: int
    k_tiles: int


def schedule(M: int, N: int, K: int, config: SM90Config, sms: int) -> Schedule:
    """Split-K for the last wave only: the ``(T // sms) * sms`` tiles of whole waves stay whole;
    the ``T % sms`` tiles of the last, partial wave are split (all tiles when ``T < sms``), so
    that the split costs workspace traffic only where SMs would otherwise idle."""
    num_tiles = cdiv(M, config.BN) * cdiv(N, BM)
    k_tiles = cdiv(K, K_ALIGN) * 2
    kps = cdiv(k_tiles, config.SPLIT)
    kps += kps % 2  # the even/odd schedule consumes K tiles in pairs
    split = cdiv(k_tiles, kps)
    num_full = (num_tiles // sms) * sms
    if split == 1 or num_full == num_tiles:
        return Schedule(num_tiles, num_tiles, num_tiles, 1, k_tiles, k_tiles)
    return Schedule(num_tiles, num_full + (num_tiles - num_full) * split, num_full, split, kps,
                    k_tiles)


# Cost model, calibrated on an H100 80GB HBM3 (docs/perf-log.md, Gluon run 2): one 128 x BN x 64
# step of a CTA while every SM is busy takes 0.162 + 0.002125 * BN us (dequant + MMA;
# 128 x 256 tiles: 33.9 us per K = 3072 tile at 2048x18432x3072, 128 x 128: 20.8 us).
_US_STEP_FIXED, _US_STEP_PER_TOKEN = 0.162, 0.002125
_US_PER_UNIT = 0.5  # epilogue / pipeline refill not hidden behind the next unit
_US_REDUCE_LAUNCH = 2.0
# fp32 partials written + read back (mostly in L2), output written: fitted to run 4 (split 2 at
# 2048x3072x3072 and 1024x18432x3072 beat the unsplit tiles under graph replay)
_REDUCE_BYTES_PER_US = 6.0e6
# Small token tiles (BN <= SMALL_BN: chosen for M <= SMALL_BN, see choose_config) stream the
# weights: a step costs about the same whatever BN is, so BN 128's constants above
# (compute-bound) do not carry over.
# Least-squares fit (relative error) to the 78 configs of the smallest tile per M, 6 stages,
# split 1-12, M = 1-64 at 18432x3072, 3072x3072 and 8192x8192 (session 13,
# bench/results/2026-11-26-gemm_sm90-small-m-sweep-h100.json; median error 3%, and the split it
# picks is within 3.4% of the best measured at every shape).
SMALL_BN = 64
_STREAM_US_STEP_FIXED, _STREAM_US_STEP_PER_TOKEN = 0.273, 0.0012
_STREAM_US_PER_UNIT = 0.89
_STREAM_US_REDUCE_LAUNCH = 2.14
_STREAM_REDUCE_BYTES_PER_US = 2.36e6


def predict_us(M: int, N: int, K: int, config: SM90Config, sms: int,
               out_dtype: torch.dtype = torch.float16) -> float:
    """Modelled GEMM time (us) of ``config``: the busiest CTA's steps + the split-K reduce, with
    the streaming constants for BN <= SMALL_BN and the compute-bound ones above."""
    sc = schedule(M, N, K, config, sms)
    if config.BN <= SMALL_BN:
        step = _STREAM_US_STEP_FIXED + _STREAM_US_STEP_PER_TOKEN * config.BN
        per_unit, launch, rate = (_STREAM_US_PER_UNIT, _STREAM_US_REDUCE_LAUNCH,
                                  _STREAM_REDUCE_BYTES_PER_US)
    else:
        step = _US_STEP_FIXED + _US_STEP_PER_TOKEN * config.BN
        per_unit, launch, rate = _US_PER_UNIT, _US_REDUCE_LAUNCH, _REDUCE_BYTES_PER_US
    waves = cdiv(sc.num_tiles, sms) if sc.split == 1 else sc.num_full // sms
    extra = cdiv(sc.num_units - sc.num_full, sms)  # split units per busiest CTA
    t = (waves * sc.k_tiles + extra * sc.k_per_split) * step + (waves + extra) * per_unit
    if sc.split > 1:
        split_tiles = sc.num_tiles - sc.num_full
        nbytes = split_tiles * BM * config.BN * (8 * sc.split + _ELEM_BYTES[out_dtype])
        t += launch + nbytes / rate
    return t


@functools.lru_cache(maxsize=1024)
def choose_config(M: int, N: int, K: int, out_dtype: torch.dtype = torch.float16,
                  sms: int = 132, grouped: bool = False) -> SM90Config:
    """The one heuristic: the config of least :func:`predict_us` (GPU time). Measured on an H100
    80GB HBM3 (docs/perf-log.md, "fp4_gemm_sm90 (Gluon)", runs 2-4; ratios to cuBLAS bf16 under
    CUDA-graph replay, W4A4 incl. the activation dequant, run 4):

    - M > 128: 128 x 256 tiles, 4 stages, persistent. 2048x18432x3072: 1.092x (run 2: 3 stages
      1.009x, one-CTA-per-tile grid 0.94x, 128 x 128 tiles 0.81x); 4096x3072x3072 0.898x.
    - 64 < M <= 128: 128 x 128 tiles, 6 stages, persistent (run 2: BN 64 0.87x at
      128x18432x3072). Session 13 took two 64-token tiles (split 2) where the 128-token grid
      fills at most a quarter of the SMs; once the reduce pass issued its slices' loads
      together (session 14), BN 128 split 4 beat that at every such shape measured (W4A4 calls:
      128x3072x3072 14.8 vs 15.5 us, 96x3072 14.7 vs 15.3, 128x4096x4096 17.9 vs 18.6;
      bench/results/2026-11-27-gemm_sm90-short-grid-h100.json).
    - M <= SMALL_BN (decode sizes, session 13): the smallest token tile that holds M (16, 32,
      64), 6 stages, and the streaming constants of :func:`predict_us`. BN 128 there cost
      1.4-1.9x: 1x18432x3072 40.4 -> 23.7 us, 32x18432x3072 40.6 -> 25.6, 64x18432x3072
      39.1 -> 28.6-29.6, 1x3072x3072 14.7 -> 9.4 (GEMM alone, fp16 x).
    - Split-K of the last partial wave (:func:`schedule`), where the model says it pays:
      128x3072x3072 split 4: 0.624x (unsplit 0.432x); 128x18432x3072 split 6: 1.261x (0.992x);
      1024x18432x3072 split 2: 1.032x (0.994x); 2048x3072x3072 BN 256 split 2: 0.812x (BN 128
      0.771x, BN 256 0.764x); 1024x3072x3072 stays unsplit (0.723x; split 2: 0.511x).
    Eager (do_bench) timings of small shapes were host-bound in run 4 (158 us of Python per W4A4
    call, 194 us with the reduce launch), so they cannot rank configs; graph replay can.
    Fewer stages where the epilogue tile (fp32 out) leaves no room.
    """
    cands = []
    if M <= SMALL_BN:  # the smallest token tile that holds M: the steps stream the weights
        shapes = ((max(16, next_power_of_2(M)), 6),)
    elif grouped:  # BN 256 spills; 4 stages timed at or below 6 and 8 (perf-log, session 10)
        shapes = ((128, 4),)
    elif M <= 128:  # one 128-token tile; a short grid splits K (the reduce pass sums it)
        shapes = ((128, 6),)
    else:
        shapes = ((256, 4), (128, 6))
    for bn, stages in shapes:
        st = next((s for s in range(stages, 1, -1)
                   if config_is_valid(SM90Config(BN=bn, STAGES=s), out_dtype)), 2)
        # the factors timed on the H100 (run 4); 8 for the streaming tiles of NVFP4 weights,
        # since the reduce issues its slices' loads together (session 14 split sweep:
        # 1x18432x3072 23.3 -> 22.5 us, 32x18432 23.8 -> 23.1, but 64x18432 25.7 -> 26.1;
        # group scales not measured)
        splits = (1, 2, 4, 6, 8) if bn <= SMALL_BN and not grouped else (1, 2, 4, 6)
        for split in splits:
            cfg = SM90Config(BN=bn, STAGES=st, SPLIT=split)
            if schedule(M, N, K, cfg, sms).split == split or split == 1:
                cands.append((predict_us(M, N, K, cfg, sms, out_dtype), cfg))
    return min(cands, key=lambda c: c[0])[1]  # first minimum: the larger BN, the smaller split


def shipped_configs() -> list[SM90Config]:
    """Every kernel specialisation :func:`choose_config` can return (SPLIT is a runtime argument,
    so configs differing only in SPLIT share one compiled kernel; the compile-only test covers
    these)."""
    ms = (1, 16, 32, 64, 128, 256, 1024, 2048, 4096)
    return sorted({choose_config(m, n, k, ot) for m in ms for n in (3072, 18432)
                   for k in (3072, 16384)  # long K with a short grid: split-K
                   for ot in (torch.float16, torch.bfloat16, torch.float32)},
                  key=lambda c: (c.BN, c.STAGES, c.PERSISTENT, c.SPLIT))


def is_supported(device) -> bool:
    """True for a CUDA device of compute capability 9.x (Hopper: wgmma, TMA, setmaxnreg)."""
    return is_hopper(device)


# ----------------------------------------------------------------------------------------------
# Layout helpers (compile time)
# ----------------------------------------------------------------------------------------------
@gluon.constexpr_function
def _split_k_layout(ll):
    """The [BM, BK] register-A layout with K split into [BK/16, 8, 2] (scale block, pair, k & 1)."""
    f = lambda b: [b[0], b[1] // 16, (b[1] % 16) // 2, b[1] % 2]  # noqa: E731
    return gl.DistributedLinearLayout(
        [f(b) for b in ll.reg_bases], [f(b) for b in ll.lane_bases],
        [f(b) for b in ll.warp_bases], [], [ll.shape[0], ll.shape[1] // 16, 8, 2])


# Thread-ordered code tile [16, 256] uint8: 16 contiguous bytes per thread (see module docstring).
_W_LOAD_LAYOUT = gl.constexpr(gl.DistributedLinearLayout(
    reg_bases=[[0, 1], [0, 2], [0, 4], [0, 8]],
    lane_bases=[[0, 16], [0, 32], [0, 64], [0, 128], [1, 0]],
    warp_bases=[[2, 0], [4, 0], [8, 0]], block_bases=[], shape=[16, 256]))
# Thread-ordered scale tile [8, 64] uint8: 8 contiguous bytes per thread (its rows' 8 scales),
# shared by the 4 lanes of a row.
_S_LOAD_LAYOUT = gl.constexpr(gl.DistributedLinearLayout(
    reg_bases=[[0, 1], [0, 2], [0, 4]],
    lane_bases=[[0, 0], [0, 0], [0, 8], [0, 16], [0, 32]],
    warp_bases=[[1, 0], [2, 0], [4, 0]], block_bases=[], shape=[8, 64]))


@gluon.jit
def _decode_halves(w_smem, DTYPE: gl.constexpr, A_LAYOUT: gl.constexpr, P_LAYOUT: gl.constexpr):
    """One stage's codes as two [128, 32] register-A operands (K 0-31, K 32-63): K within a
    tile is a register bit of the A layout, so the split moves no data."""
    a = gl.convert_layout(_decode_codes(w_smem, DTYPE, P_LAYOUT), A_LAYOUT, assert_trivial=True)
    lo, hi = a.reshape([_BM, 2, 32]).permute((0, 2, 1)).split()
    return (gl.convert_layout(lo, A_LAYOUT, assert_trivial=True),
            gl.convert_layout(hi, A_LAYOUT, assert_trivial=True))


@gluon.jit
def _decode_codes(w_smem, DTYPE: gl.constexpr, P_LAYOUT: gl.constexpr):
    """One stage's 128 x 64 E2M1 codes as exact DTYPE values (unscaled), [128 rows, 64]."""
    # codes: [16, 256] thread-ordered -> [w, g, c, i, h] -> [w, h, g, i, c] -> [128 rows, 32 bytes]
    p = w_smem.load(_W_LOAD_LAYOUT)
    p = p.reshape([8, 8, 4, 8, 2]).permute((0, 4, 1, 3, 2)).reshape([_BM, _BK // 2])
    p = gl.convert_layout(p, P_LAYOUT, assert_trivial=True)
    return gl.fp4_to_fp(p, DTYPE, 1)


# Four E4M3 scale bytes ($4, one b32) -> four (s, s) pairs ($0..$3): one prmt per two scales
# doubles the bytes, one cvt per pair converts them (fp16; bf16 through exact fp32).
_SCALE_PAIRS_F16 = gl.constexpr("""
{
.reg .b32 a, b;
.reg .b16 l, h;
prmt.b32 a, $4, 0, 0x1100;
prmt.b32 b, $4, 0, 0x3322;
mov.b32 {l, h}, a;
cvt.rn.f16x2.e4m3x2 $0, l;
cvt.rn.f16x2.e4m3x2 $1, h;
mov.b32 {l, h}, b;
cvt.rn.f16x2.e4m3x2 $2, l;
cvt.rn.f16x2.e4m3x2 $3, h;
}
""")
_SCALE_PAIRS_BF16 = gl.constexpr("""
{
.reg .b32 a, b;
.reg .b16 l, h, s0, s1, s2, s3;
.reg .f32 f;
mov.b32 {l, h}, $4;
cvt.rn.f16x2.e4m3x2 a, l;
cvt.rn.f16x2.e4m3x2 b, h;
mov.b32 {s0, s1}, a;
mov.b32 {s2, s3}, b;
cvt.f32.f16 f, s0;
cvt.rn.bf16x2.f32 $0, f, f;
cvt.f32.f16 f, s1;
cvt.rn.bf16x2.f32 $1, f, f;
cvt.f32.f16 f, s2;
cvt.rn.bf16x2.f32 $2, f, f;
cvt.f32.f16 f, s3;
cvt.rn.bf16x2.f32 $3, f, f;
}
""")
@gluon.jit
def _scale_pairs(s, DTYPE: gl.constexpr):
    """uint8 E4M3 scales [R, C] -> DTYPE [R, C, 2], each scale twice, so that a scale pair lines
    up with a (k, k+1) value pair: one 16-bit multiply per pair, no repacking (the scales are
    stored once; Triton's own conversion of a doubled byte tensor cost ~20 instructions a
    tile)."""
    p = gl.inline_asm_elementwise(_SCALE_PAIRS_BF16 if DTYPE == gl.bfloat16 else _SCALE_PAIRS_F16,
                                  "=r,=r,=r,=r,r", [s], dtype=gl.int32, is_pure=True, pack=4)
    return as_16bit_pairs(p, DTYPE)


@gluon.jit
def _dequant_tile(w_smem, s_smem, DTYPE: gl.constexpr, A_LAYOUT: gl.constexpr,
                  P_LAYOUT: gl.constexpr, L4: gl.constexpr):
    """One stage's 128 x 64 weight tile, dequantised into the register-A layout of wgmma."""
    w = _decode_codes(w_smem, DTYPE, P_LAYOUT)
    # scales: [8, 64] -> [w, g, kb, h] -> [w, h, g, kb] -> [128 rows, 4 K-blocks]
    s = s_smem.load(_S_LOAD_LAYOUT)
    s = s.reshape([8, 8, _BK // 16, 2]).permute((0, 3, 1, 2)).reshape([_BM, _BK // 16])
    s = _scale_pairs(s, DTYPE)
    s = gl.convert_layout(s, gl.SliceLayout(2, L4), assert_trivial=True)
    w4 = gl.convert_layout(w.reshape([_BM, _BK // 16, 8, 2]), L4, assert_trivial=True)
    w4 = w4 * gl.expand_dims(s, 2)
    return gl.convert_layout(w4.reshape([_BM, _BK]), A_LAYOUT, assert_trivial=True)


# ----------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------
@gluon.jit
def _unit(u, num_full, split, k_per_split, k_tiles, num_m_tiles):
    """Work unit ``u`` -> (token tile pid_m, weight-row tile pid_n, first K tile, end K tile,
    workspace slot, tile t); tile ``t = pid_n * num_m_tiles + pid_m``.

    Units ``0 .. num_full-1`` are whole tiles (slot -1: store the tile). Unit ``num_full + v`` is
    K-slice ``v % split`` of tile ``num_full + v // split``; its fp32 partial goes to workspace
    slot ``v``, for the reduce kernel, or (``fixup``: two slices, slots ``v`` and ``v ^ 1``) to
    be summed in this kernel (:func:`_sum_pair`)."""
    t = u
    k0 = u * 0
    k1 = k_tiles
    slot = u * 0 - 1
    if u >= num_full:
        v = u - num_full
        t = num_full + v // split
        k0 = (v % split) * k_per_split
        k1 = gl.minimum(k0 + k_per_split, k_tiles)
        slot = v
    return t % num_m_tiles, t // num_m_tiles, k0, k1, slot, t


@gluon.jit
def _producer(w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty, num_units, num_full,
              split, k_per_split, num_m_tiles, k_tiles, BN: gl.constexpr,
              STAGES: gl.constexpr, GK: gl.constexpr):
    nbytes: gl.constexpr = (w_desc.block_type.nbytes + s_desc.block_type.nbytes
                            + x_desc.block_type.nbytes)
    it = 0
    for u in range(gl.program_id(0), num_units, gl.num_programs(0)):
        pid_m, pid_n, k0, k1, _slot, _t = _unit(u, num_full, split, k_per_split, k_tiles,
                                                num_m_tiles)
        for kt in range(k0, k1):
            s = it % STAGES
            mbarrier.wait(empty.index(s), ((it // STAGES) & 1) ^ 1)
            fence_async_shared()  # consumers read the stage through the generic proxy
            mbarrier.expect(ready.index(s), nbytes)
            tma.async_copy_global_to_shared(w_desc, [pid_n * 16, kt * 256], ready.index(s),
                                            w_bufs.index(s))
            if GK == 0:  # E4M3 scales, thread-ordered [8, 64] bytes per tile
                tma.async_copy_global_to_shared(s_desc, [pid_n * 8, kt * 64], ready.index(s),
                                                s_bufs.index(s))
            else:  # fp32 group scales, [64 / GK groups][128 rows] contiguous per tile
                s_off = (pid_n * k_tiles + kt) * (_BM * _BK // GK)
                tma.async_copy_global_to_shared(s_desc, [s_off], ready.index(s), s_bufs.index(s))
            tma.async_copy_global_to_shared(x_desc, [pid_m * BN, kt * _BK], ready.index(s),
                                            x_bufs.index(s))
            it += 1


@gluon.jit
def _consumer(y_desc, ws_ptr, flags_ptr, w_bufs, s_bufs, x_bufs, y_smem, ready, empty, alpha,
              alpha_ptr, num_units, num_full, split, k_per_split, num_m_tiles, k_tiles, fixup,
              BN: gl.constexpr, STAGES: gl.constexpr, DTYPE: gl.constexpr,
              ALPHA_PTR: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[8, 1],
                                                  instr_shape=[16, BN, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=1)
    l4: gl.constexpr = _split_k_layout(gl.to_linear_layout(a_layout, [_BM, _BK]))
    it = 0
    for u in range(gl.program_id(0), num_units, gl.num_programs(0)):
        pid_m, pid_n, k0, k1, slot, t = _unit(u, num_full, split, k_per_split, k_tiles,
                                              num_m_tiles)
        acc = gl.zeros([_BM, BN], gl.float32, mma)
        for j in range(k0, k1, 2):  # every unit has an even number of K tiles
            # even tile: its A registers were last read by the wgmma retired two waits ago
            s0 = it % STAGES
            mbarrier.wait(ready.index(s0), (it // STAGES) & 1)
            a_e = _dequant_tile(w_bufs.index(s0), s_bufs.index(s0), DTYPE, a_layout, p_layout, l4)
            acc = warpgroup_mma(a_e, x_bufs.index(s0).permute((1, 0)), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))  # retires the odd tile
            mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES), pred=j > k0)
            it += 1
            # odd tile
            s1 = it % STAGES
            mbarrier.wait(ready.index(s1), (it // STAGES) & 1)
            a_o = _dequant_tile(w_bufs.index(s1), s_bufs.index(s1), DTYPE, a_layout, p_layout, l4)
            acc = warpgroup_mma(a_o, x_bufs.index(s1).permute((1, 0)), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))  # retires the even tile
            mbarrier.arrive(empty.index(s0))
            it += 1
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES))
        # one tile-store site (a second, as in _store_unit, spills 256 B at BN 256)
        last = slot < 0  # a whole tile
        if fixup:
            if slot >= 0:  # one of a pair of K-slices, summed here
                last, acc = _sum_pair(acc, ws_ptr, flags_ptr, slot, t, BN, mma)
        elif slot >= 0:  # a K-slice for the reduce kernel
            gl.store(ws_ptr + slot * (_BM * BN) + _slot_offsets(BN, mma), acc)
        if last:
            _store_tile(acc, y_desc, y_smem, alpha, alpha_ptr, pid_m, pid_n, BN, ALPHA_PTR)
    tma.store_wait(0)


@gluon.jit
def _store_unit(acc, y_desc, ws_ptr, y_smem, alpha, alpha_ptr, slot, pid_m, pid_n,
                BN: gl.constexpr, MMA: gl.constexpr, ALPHA_PTR: gl.constexpr):
    """A finished unit's fp32 accumulator [128 weight rows, BN tokens] (see :func:`_unit`):
    a K-slice's raw partial to workspace slot ``slot`` for the reduce kernel, or a whole tile
    (``slot`` < 0) to ``y[pid_m*BN : +BN, pid_n*BM : +BM] = (alpha*acc)^T``."""
    if slot >= 0:
        gl.store(ws_ptr + slot * (_BM * BN) + _slot_offsets(BN, MMA), acc)
    else:
        _store_tile(acc, y_desc, y_smem, alpha, alpha_ptr, pid_m, pid_n, BN, ALPHA_PTR)


@gluon.jit
def _sum_pair(acc, ws_ptr, flags_ptr, slot, t, BN: gl.constexpr, MMA: gl.constexpr):
    """One of the two K-slices of tile ``t`` (workspace slots ``slot`` and ``slot ^ 1``), summed
    in the GEMM. A ticket on ``flags[t]`` says which slice finished first. The first stores its
    partial and adds 1 more (release). The second waits for that, adds the partial (a sum of two
    is the same in either order: deterministic) and resets the counter for the next launch.
    Returns (whether this CTA stores the tile, the accumulator). The second only ever waits for
    a CTA that has taken its ticket, so is running and past its K loop: nothing depends on which
    CTAs are resident (MPS, other streams' kernels)."""
    # the partial travels in thread order (each thread's 4-value groups as 16-byte vectors, a
    # warp's as 512 contiguous bytes): half the row-major layout's 8-byte store instructions
    a4 = _thread_order(acc, BN)
    L4: gl.constexpr = a4.type.layout
    offs = _thread_order_offsets(BN, L4)
    # the first's ticket takes the count 0 -> 1; its release add and the second's ticket take it
    # to 3 in either order
    second = gl.atomic_add(flags_ptr + t, 1, sem="relaxed", scope="gpu") > 0
    if second:
        while gl.atomic_add(flags_ptr + t, 0, sem="acquire", scope="gpu") < 3:
            pass
        gl.thread_barrier()  # the acquire above orders every thread's loads below
        a4 += gl.load(ws_ptr + (slot ^ 1) * (_BM * BN) + offs, cache_modifier=".cg")
        gl.thread_barrier()  # every thread has read the partial: reset the counter
        gl.atomic_xchg(flags_ptr + t, 0, sem="relaxed", scope="gpu")
    else:
        gl.store(ws_ptr + slot * (_BM * BN) + offs, a4)
        gl.thread_barrier()  # every thread's partial is written (the release is cumulative)
        gl.atomic_add(flags_ptr + t, 1, sem="release", scope="gpu")
    return second, _row_order(a4, BN, MMA)


@gluon.jit
def _thread_order(acc, BN: gl.constexpr):
    """The [128, BN] accumulator (row 16 w + 8 h + g, column 8 j + 2 q + e held by warp w, lane
    4 g + q, register 4 j + 2 h + e) as [BN / 8 (j), 8 (w), 32 (lane), 4 (2 h + e)]: a view with
    no data movement whose last axis is each thread's four consecutive registers."""
    a = acc.reshape([8, 2, 8, BN // 8, 4, 2])  # w, h, g, j, q, e
    return a.permute((3, 0, 2, 4, 1, 5)).reshape([BN // 8, 8, 32, 4])


@gluon.jit
def _row_order(a4, BN: gl.constexpr, MMA: gl.constexpr):
    """Inverse of :func:`_thread_order`, back in the accumulator's layout."""
    a = a4.reshape([BN // 8, 8, 8, 4, 2, 2])  # j, w, g, q, h, e
    a = a.permute((1, 4, 2, 0, 3, 5)).reshape([_BM, BN])
    return gl.convert_layout(a, MMA, assert_trivial=True)


@gluon.jit
def _thread_order_offsets(BN: gl.constexpr, L4: gl.constexpr):
    """Row-major offsets of a [BN / 8, 8, 32, 4] thread-ordered slot, in layout L4."""
    l3: gl.constexpr = gl.SliceLayout(3, L4)
    l2: gl.constexpr = gl.SliceLayout(2, l3)
    i0 = gl.arange(0, BN // 8, layout=gl.SliceLayout(1, l2))
    i1 = gl.arange(0, 8, layout=gl.SliceLayout(0, l2))
    i2 = gl.arange(0, 32, layout=gl.SliceLayout(0, gl.SliceLayout(1, l3)))
    i3 = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, L4))))
    o = gl.expand_dims(gl.expand_dims(i0, 1) * 8 + gl.expand_dims(i1, 0), 2) * 32
    o = gl.expand_dims(o + gl.expand_dims(gl.expand_dims(i2, 0), 1), 3) * 4
    return o + gl.expand_dims(gl.expand_dims(gl.expand_dims(i3, 0), 1), 2)


@gluon.jit
def _slot_offsets(BN: gl.constexpr, MMA: gl.constexpr):
    """Offsets of a [128, BN] fp32 workspace slot, row-major, in the accumulator's layout."""
    rows = gl.arange(0, _BM, layout=gl.SliceLayout(1, MMA))
    cols = gl.arange(0, BN, layout=gl.SliceLayout(0, MMA))
    return gl.expand_dims(rows, 1) * BN + gl.expand_dims(cols, 0)


@gluon.jit
def _store_tile(acc, y_desc, y_smem, alpha, alpha_ptr, pid_m, pid_n, BN: gl.constexpr,
                ALPHA_PTR: gl.constexpr):
    """``y[pid_m*BN : +BN, pid_n*BM : +BM] = (alpha*acc)^T`` through shared memory and TMA
    (``alpha`` times ``*alpha_ptr`` when ALPHA_PTR: ``fp4mm.kernels.alpha``)."""
    if ALPHA_PTR:
        alpha = alpha * gl.load(alpha_ptr)
    tma.store_wait(0)  # the previous tile's store has finished reading y_smem
    gl.thread_barrier()
    y_smem.permute((1, 0)).store((acc * alpha).to(y_desc.dtype))
    fence_async_shared()
    tma.async_copy_shared_to_global(y_desc, [pid_m * BN, pid_n * _BM], y_smem)


@gluon.jit
def _after(p, acc):
    """``p``, read only once ``acc`` is computed: a register move that also takes ``acc`` as
    input, so the FMAs into ``acc`` that read ``p`` are ordered before the MMA that reuses
    ``p``'s registers as its accumulator. Without it LLVM may sink those FMAs below that MMA,
    and ptxas then serialises every wgmma (C7514: reads of an in-flight accumulator)."""
    return gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r,r", [p, acc], dtype=gl.float32,
                                     is_pure=True, pack=1)


@gluon.jit
def _consumer_grouped(y_desc, ws_ptr, w_bufs, s_bufs, x_bufs, y_smem, ready, empty, alpha,
                      alpha_ptr, num_units, num_full, split, k_per_split, num_m_tiles, k_tiles,
                      BN: gl.constexpr, STAGES: gl.constexpr, DTYPE: gl.constexpr,
                      GK: gl.constexpr, ALPHA_PTR: gl.constexpr):
    """16-bit group scales (``w4a16_mm``), exact for any scale: each GK-wide K group is an MMA
    of the unscaled E2M1 values (exact in 16 bits) into a fresh fp32 partial, which is retired
    one group later and added to the accumulator times the group's fp32 scale of its weight row.
    Two partials alternate (``p_a``: even groups, ``p_b``: odd), so one group's FMAs overlap the
    next group's MMA; a stage is released once the last MMA reading it has retired."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[8, 1],
                                                  instr_shape=[16, BN, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=1)
    row: gl.constexpr = gl.SliceLayout(1, mma)
    it = 0
    for u in range(gl.program_id(0), num_units, gl.num_programs(0)):
        pid_m, pid_n, k0, k1, slot, t = _unit(u, num_full, split, k_per_split, k_tiles,
                                              num_m_tiles)
        acc = gl.zeros([_BM, BN], gl.float32, mma)
        p_a = gl.zeros([_BM, BN], gl.float32, mma)
        p_b = gl.zeros([_BM, BN], gl.float32, mma)
        if GK == 32:  # two groups per 64-K tile, two tiles (even, odd) per iteration
            for _j in range(k0, k1, 2):
                st = it % STAGES
                mbarrier.wait(ready.index(st), (it // STAGES) & 1)
                e_lo, e_hi = _decode_halves(w_bufs.index(st), DTYPE, a_layout, p_layout)
                xs = x_bufs.index(st)
                ss = s_bufs.index(st)
                p_a = warpgroup_mma(e_lo, xs.slice(0, 32, dim=1).permute((1, 0)), p_a,
                                    use_acc=False, is_async=True)
                p_b = warpgroup_mma(e_hi, xs.slice(32, 32, dim=1).permute((1, 0)), p_b,
                                    use_acc=False, is_async=True)
                s_lo = ss.slice(0, _BM).load(row)
                s_hi = ss.slice(_BM, _BM).load(row)
                p_a, p_b, e_lo = warpgroup_mma_wait(num_outstanding=1, deps=(p_a, p_b, e_lo))
                acc += p_a * gl.expand_dims(s_lo, 1)
                p_a = _after(p_a, acc)
                st_o = (it + 1) % STAGES
                mbarrier.wait(ready.index(st_o), ((it + 1) // STAGES) & 1)
                o_lo, o_hi = _decode_halves(w_bufs.index(st_o), DTYPE, a_layout, p_layout)
                xo = x_bufs.index(st_o)
                so = s_bufs.index(st_o)
                p_a = warpgroup_mma(o_lo, xo.slice(0, 32, dim=1).permute((1, 0)), p_a,
                                    use_acc=False, is_async=True)
                p_b, p_a, e_hi = warpgroup_mma_wait(num_outstanding=1, deps=(p_b, p_a, e_hi))
                acc += p_b * gl.expand_dims(s_hi, 1)
                p_b = _after(p_b, acc)
                mbarrier.arrive(empty.index(st))
                p_b = warpgroup_mma(o_hi, xo.slice(32, 32, dim=1).permute((1, 0)), p_b,
                                    use_acc=False, is_async=True)
                s_lo = so.slice(0, _BM).load(row)
                s_hi = so.slice(_BM, _BM).load(row)
                p_a, p_b, o_lo = warpgroup_mma_wait(num_outstanding=1, deps=(p_a, p_b, o_lo))
                acc += p_a * gl.expand_dims(s_lo, 1)
                p_b, o_hi = warpgroup_mma_wait(num_outstanding=0, deps=(p_b, o_hi))
                acc += p_b * gl.expand_dims(s_hi, 1)
                mbarrier.arrive(empty.index(st_o))
                it += 2
        else:  # GK == 64: one group per tile, two tiles (even, odd) per iteration
            for _j in range(k0, k1, 2):
                st = it % STAGES
                mbarrier.wait(ready.index(st), (it // STAGES) & 1)
                a_e = gl.convert_layout(_decode_codes(w_bufs.index(st), DTYPE, p_layout),
                                        a_layout, assert_trivial=True)
                p_a = warpgroup_mma(a_e, x_bufs.index(st).permute((1, 0)), p_a, use_acc=False,
                                    is_async=True)
                s_e = s_bufs.index(st).load(row)
                st_o = (it + 1) % STAGES
                mbarrier.wait(ready.index(st_o), ((it + 1) // STAGES) & 1)
                a_o = gl.convert_layout(_decode_codes(w_bufs.index(st_o), DTYPE, p_layout),
                                        a_layout, assert_trivial=True)
                p_b = warpgroup_mma(a_o, x_bufs.index(st_o).permute((1, 0)), p_b, use_acc=False,
                                    is_async=True)
                p_a, p_b, a_e = warpgroup_mma_wait(num_outstanding=1, deps=(p_a, p_b, a_e))
                acc += p_a * gl.expand_dims(s_e, 1)
                mbarrier.arrive(empty.index(st))
                s_o = s_bufs.index(st_o).load(row)
                p_b, a_o = warpgroup_mma_wait(num_outstanding=0, deps=(p_b, a_o))
                acc += p_b * gl.expand_dims(s_o, 1)
                mbarrier.arrive(empty.index(st_o))
                it += 2
        _store_unit(acc, y_desc, ws_ptr, y_smem, alpha, alpha_ptr, slot, pid_m, pid_n, BN, mma,
                    ALPHA_PTR)
    tma.store_wait(0)


@gluon.jit
def _fp4_gemm_sm90_kernel(w_desc, s_desc, x_desc, y_desc, ws_ptr, flags_ptr, alpha, alpha_ptr,
                          num_units, num_full, split, k_per_split, num_m_tiles, k_tiles, fixup,
                          BN: gl.constexpr,
                          STAGES: gl.constexpr, DTYPE: gl.constexpr, GK: gl.constexpr,
                          PDL: gl.constexpr, ALPHA_PTR: gl.constexpr = False):
    """GK = 0: NVFP4 weights (E4M3 scales per 16, thread-ordered); GK = 32 or 64: 16-bit group
    scales, stored as fp32 ``[K / GK, rows]`` (see :func:`prepack_grouped_sm90`)."""
    gl.static_assert(gl.num_warps() == 8, "two consumer warpgroups: launch with num_warps=8")
    gl.static_assert(GK == 0 or GK == 32 or GK == _BK, "GK: 0 (NVFP4), 32 or 64")
    if PDL:  # launched early behind the previous kernel (e.g. the x dequant): wait for it first
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    w_bufs = gl.allocate_shared_memory(gl.uint8, [STAGES, 16, 256], w_desc.layout)
    s_bufs = gl.allocate_shared_memory(s_desc.dtype, [STAGES] + s_desc.block_type.shape,
                                       s_desc.layout)
    x_bufs = gl.allocate_shared_memory(DTYPE, [STAGES, BN, _BK], x_desc.layout)
    y_smem = gl.allocate_shared_memory(y_desc.dtype, [BN, _BM], y_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    fence_async_shared()
    if GK == 0:
        gl.warp_specialize(
            [(_consumer, (y_desc, ws_ptr, flags_ptr, w_bufs, s_bufs, x_bufs, y_smem, ready, empty,
                          alpha, alpha_ptr, num_units, num_full, split, k_per_split, num_m_tiles,
                          k_tiles, fixup, BN, STAGES, DTYPE, ALPHA_PTR)),
             (_producer, (w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty,
                          num_units, num_full, split, k_per_split, num_m_tiles, k_tiles, BN,
                          STAGES, GK))],
            [1], [24])
    else:
        gl.warp_specialize(
            [(_consumer_grouped, (y_desc, ws_ptr, w_bufs, s_bufs, x_bufs, y_smem, ready,
                                  empty, alpha, alpha_ptr, num_units, num_full, split,
                                  k_per_split, num_m_tiles, k_tiles, BN, STAGES, DTYPE, GK,
                                  ALPHA_PTR)),
             (_producer, (w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty,
                          num_units, num_full, split, k_per_split, num_m_tiles, k_tiles, BN,
                          STAGES, GK))],
            [1], [24])
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))


# ----------------------------------------------------------------------------------------------
# Host prepack
# ----------------------------------------------------------------------------------------------
class PackedWeightSM90(NamedTuple):
    """Weights re-laid out for ``fp4_gemm_sm90`` (see the module docstring).

    ``codes`` uint8 ``(Np/128*16, Kp/64*256)`` with Np = N rounded up to 128 and Kp = K rounded
    up to 128; ``N``, ``K`` the logical sizes; ``w_desc``/``s_desc`` the TMA descriptors of
    ``codes`` and ``scales`` (made once, at prepack). ``scales`` depends on ``group_k``:

    - 0 (NVFP4): uint8 E4M3 ``(Np/128*8, Kp/64*64)``, thread-ordered (module docstring);
    - 32 or 64 (16-bit group scales, :func:`prepack_grouped_sm90`): fp32, 1-D, the scale of row
      ``128 nb + r`` over K columns ``[GK j, GK (j + 1))`` at ``(nb * Kp/GK + j) * 128 + r``, so
      one 64-K tile's ``64/GK x 128`` scales are contiguous (one 1-D TMA box)."""

    codes: torch.Tensor
    scales: torch.Tensor
    N: int
    K: int
    w_desc: TensorDescriptor
    s_desc: TensorDescriptor
    group_k: int = 0


def prepack_sm90_torch(w_q: torch.Tensor, w_scales: torch.Tensor | None,
                       order: str = "low_first") -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(codes, scales)`` of :class:`PackedWeightSM90` (NVFP4) in plain torch: the twin of
    ``fp4mm.kernels.prepack_sm90.prepack_sm90_triton`` (bit for bit), used on the CPU.
    ``w_scales=None``: the codes alone (``scales`` is ``None``)."""
    N, K = w_q.shape[0], w_q.shape[1] * 2
    Np, Kp = cdiv(N, BM) * BM, cdiv(K, K_ALIGN) * K_ALIGN
    q = torch.zeros((Np, Kp // 2), dtype=torch.uint8, device=w_q.device)
    q[:N, :K // 2] = w_q
    if order == "high_first":
        q = (q >> 4) | (q << 4)
    nb, kt = Np // BM, Kp // BK
    # codes: row = 16 w + 8 h + g, kbyte = 4 i + c  ->  [nb, w, lane // 16, kt, lane % 16, 2 i + h]
    q = q.view(nb, 8, 2, 8, kt, 8, 4)  # nb, w, h, g, kt, i, c
    q = q.permute(0, 1, 3, 6, 4, 5, 2)  # nb, w, g, c, kt, i, h   (r = 2 i + h)
    q = q.reshape(nb, 8, 2, 16, kt, 16)  # nb, w, lane // 16, lane % 16, kt, r
    codes = q.permute(0, 1, 2, 4, 3, 5).reshape(nb * 16, kt * 256).contiguous()
    if w_scales is None:
        return codes, None
    # scales: row = 16 w + 8 h + g, col = 4 kt + kb  ->  [nb, w, kt, g, kb, h]
    sc = torch.zeros((Np, Kp // 16), dtype=torch.uint8, device=w_q.device)
    sc[:N, :K // 16] = w_scales
    sc = sc.view(nb, 8, 2, 8, kt, 4)  # nb, w, h, g, kt, kb
    return codes, sc.permute(0, 1, 4, 3, 5, 2).reshape(nb * 8, kt * 64).contiguous()


def prepack_weight_sm90(w_q: torch.Tensor, w_scales: torch.Tensor,
                        order: str = "low_first") -> PackedWeightSM90:
    """Re-lay NVFP4 weights (uint8 ``(N, K/2)`` codes in ``order``, uint8 or float8_e4m3fn
    ``(N, K/16)`` scales, row-major) in the consumer's register order. Works on any device: one
    Triton pass on CUDA (36.9 us at 18432 x 3072 on an H100, against 295 us for the torch twin)."""
    if w_scales.dtype == torch.float8_e4m3fn:
        w_scales = w_scales.view(torch.uint8)
    N, K = w_q.shape[0], w_q.shape[1] * 2
    prepack = prepack_sm90_triton if w_q.is_cuda else prepack_sm90_torch
    codes, scales = prepack(w_q, w_scales, order)
    return packed_weight_sm90(codes, scales, N, K)


def packed_shapes(N: int, K: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shapes of the NVFP4 ``(codes, scales)`` of :class:`PackedWeightSM90` for an N x K weight."""
    nb, kt = cdiv(N, BM), cdiv(K, K_ALIGN) * K_ALIGN // BK
    return (nb * 16, kt * 256), (nb * 8, kt * 64)


def check_packed_sm90(codes: torch.Tensor, scales: torch.Tensor, N: int, K: int) -> None:
    """Raise ``ValueError`` unless ``codes`` and ``scales`` are the NVFP4 prepacked layout of an
    N x K weight (:func:`packed_shapes`, uint8, contiguous, one device)."""
    want_codes, want_scales = packed_shapes(N, K)
    for name, t, shape in (("w_sm90_codes", codes, want_codes),
                           ("w_sm90_scales", scales, want_scales)):
        if t.dtype != torch.uint8 or tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous uint8 tensor of shape {shape} (the "
                             f"prepacked layout of a {N} x {K} weight), got {t.dtype} "
                             f"{tuple(t.shape)}{'' if t.is_contiguous() else ', not contiguous'}")
    if codes.device != scales.device:
        raise ValueError(f"expected w_sm90_codes and w_sm90_scales on one device, got "
                         f"{codes.device} and {scales.device}")


def packed_weight_sm90(codes: torch.Tensor, scales: torch.Tensor, N: int,
                       K: int) -> PackedWeightSM90:
    """The :class:`PackedWeightSM90` of NVFP4 ``codes`` and ``scales`` that
    :func:`prepack_weight_sm90` made for an N x K weight, with its TMA descriptors (host-side
    objects, about 14 us of Python). Lets the prepacked layout travel as plain tensors (the
    ``fp4mm::`` custom ops, ``NVFP4Linear``'s buffers)."""
    check_packed_sm90(codes, scales, N, K)
    return PackedWeightSM90(codes, scales, N, K,
                            TensorDescriptor.from_tensor(codes, [16, 256], _PLAIN8),
                            TensorDescriptor.from_tensor(scales, [8, 64], _PLAIN8))


def group_k(group_size: int) -> int:
    """K width of one scaled MMA group for 16-bit group scales: 32 for groups of 32, 64 for any
    multiple of 64 (a 64-K tile then lies inside one group), 0 where the kernel has no path."""
    if group_size == 32:
        return 32
    return BK if group_size > 0 and group_size % BK == 0 else 0


def prepack_group_scales_sm90(scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """16-bit ``(N, K/group_size)`` group scales -> the fp32 1-D layout of
    :class:`PackedWeightSM90` (``group_k(group_size)`` wide groups; padding rows and K are 0),
    in plain torch: the twin of ``prepack_sm90.group_scales_sm90_triton`` (used on the CPU)."""
    gk = group_k(group_size)
    N, K = scales.shape[0], scales.shape[1] * group_size
    Np, Kp = cdiv(N, BM) * BM, cdiv(K, K_ALIGN) * K_ALIGN
    s = torch.zeros((Np, Kp // gk), dtype=torch.float32, device=scales.device)
    s[:N, :K // gk] = scales.float().repeat_interleave(group_size // gk, dim=1)
    return s.view(Np // BM, BM, Kp // gk).transpose(1, 2).reshape(-1).contiguous()


def prepack_grouped_sm90(w_q: torch.Tensor, scales: torch.Tensor, group_size: int,
                         order: str = "low_first") -> PackedWeightSM90:
    """Re-lay FP4 weights with 16-bit group scales (``w4a16_mm``: uint8 ``(N, K/2)`` codes in
    ``order``, fp16/bf16 ``(N, K/group_size)`` scales) for the Gluon kernel: codes in the
    consumer's register order (as for NVFP4), scales as fp32 per ``group_k`` columns (exact).
    ``group_size``: 32 or a multiple of 64 (:func:`group_k`)."""
    gk = group_k(group_size)
    if gk == 0:
        raise ValueError(f"group_size: the Gluon GEMM takes 32 or a multiple of 64, got "
                         f"{group_size}")
    N, K = w_q.shape[0], w_q.shape[1] * 2
    if w_q.is_cuda:
        codes, _ = prepack_sm90_triton(w_q, None, order)
        s = group_scales_sm90_triton(scales, group_size, gk)
    else:
        codes, _ = prepack_sm90_torch(w_q, None, order)
        s = prepack_group_scales_sm90(scales, group_size)
    return PackedWeightSM90(codes, s, N, K,
                            TensorDescriptor.from_tensor(codes, [16, 256], _PLAIN8),
                            TensorDescriptor(s, [s.numel()], [1], [BM * BK // gk],
                                             _GROUP_SCALE_LAYOUT),
                            gk)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _no_flags(device) -> torch.Tensor:
    """The kernel's flags argument when the split-K slices are not summed in the kernel."""
    return torch.zeros(1, dtype=torch.int32, device=device)


@functools.lru_cache(maxsize=64)
def _nvmma_layout(rows: int, cols: int, dtype: torch.dtype):
    return gl.NVMMASharedLayout.get_default_for([rows, cols], _GL_DTYPE[dtype])


def make_descriptors(packed: PackedWeightSM90, x: torch.Tensor, out: torch.Tensor,
                     config: SM90Config):
    """TMA descriptors for the four operands (the weights' are made once, at prepack)."""
    x_desc = TensorDescriptor(x, list(x.shape), list(x.stride()), [config.BN, BK],
                              _nvmma_layout(config.BN, BK, x.dtype))
    y_desc = TensorDescriptor(out, list(out.shape), list(out.stride()), [config.BN, BM],
                              _nvmma_layout(config.BN, BM, out.dtype))
    return packed.w_desc, packed.s_desc, x_desc, y_desc


@triton.jit
def _splitk_reduce_kernel(ws_ptr, out_ptr, alpha, alpha_ptr, M, N, stride_om, num_full,
                          num_m_tiles, SPLIT: tl.constexpr, BN: tl.constexpr, RB: tl.constexpr,
                          PDL: tl.constexpr, ALPHA_PTR: tl.constexpr = False):
    """out[tokens, rows] of split tile ``num_full + program_id(0)``, rows ``RB * program_id(1)``
    on = alpha * sum of its ``SPLIT`` fp32 partials (workspace ``[slot, 128 rows, BN tokens]``),
    in slice order (deterministic). Each program reads SPLIT contiguous [RB, BN] blocks, all
    issued before the first add (SPLIT is unrolled): a runtime loop over slices left each
    program waiting on one load at a time. PDL: launched early behind the GEMM, so wait for it
    before any memory access."""
    if PDL:
        gdc_wait()
    j = tl.program_id(0)
    t = num_full + j
    pid_m = t % num_m_tiles
    pid_n = t // num_m_tiles
    rows = tl.program_id(1) * RB + tl.arange(0, RB)
    toks = tl.arange(0, BN)
    ptrs = ws_ptr + j * SPLIT * (128 * BN) + rows[:, None] * BN + toks[None, :]
    acc = tl.load(ptrs)
    for s in tl.static_range(1, SPLIT):
        acc += tl.load(ptrs + s * (128 * BN))
    m = (pid_m * BN + toks).to(tl.int64)
    n = pid_n * 128 + rows
    mask = (m[None, :] < M) & (n[:, None] < N)
    tl.store(out_ptr + m[None, :] * stride_om + n[:, None],
             apply_alpha(acc, alpha, alpha_ptr, ALPHA_PTR).to(out_ptr.dtype.element_ty), mask=mask)


REDUCE_ROWS = 16  # rows per reduce program: 8 programs per split tile


def splitk_reduce(ws: torch.Tensor, out: torch.Tensor, alpha, sc: Schedule,
                  bn: int, pdl: bool = False) -> None:
    """Second pass of split-K: ``ws`` fp32 ``(split_units, 128, bn)``; writes the split tiles of
    ``out`` ``(M, N)`` (row stride ``out.stride(0)``, unit column stride). ``alpha``: a float or
    a one-element float32 device tensor (``fp4mm.kernels.alpha``)."""
    grid = (sc.num_tiles - sc.num_full, 128 // REDUCE_ROWS)
    M, N = out.shape
    alpha, alpha_ptr, alpha_on_device = alpha_args(alpha, ws)
    launch(_splitk_reduce_kernel, grid, ws, out, alpha, alpha_ptr, M, N, out.stride(0), sc.num_full,
           cdiv(M, bn), SPLIT=sc.split, BN=bn, RB=REDUCE_ROWS,
           PDL=pdl, ALPHA_PTR=alpha_on_device, launch_pdl=pdl,
           num_warps=4)


def _schedule(M: int, packed: PackedWeightSM90, config: SM90Config, sms: int) -> Schedule:
    """The launch's schedule over the packed (padded) weight."""
    return schedule(M, packed.codes.shape[0] // 16 * BM, packed.codes.shape[1] // 256 * BK,
                    config, sms)


def fixup_in_kernel(sc: Schedule) -> bool:
    """Whether the split-K slices are summed inside the GEMM (no reduce launch): for tiles cut
    in exactly two slices (:func:`_sum_pair`; nobody waits for a CTA that has not started, so
    any grid and residency will do). With 4 or 6 slices, one CTA per tile reading the others'
    partials one after another took longer than the reduce launch (H100, graph-timed W4A4
    calls: split 2 1024x18432x3072 161.2 -> 152.4 us, 2048x3072x3072 63.7 -> 63.1; split 6
    128x18432x3072 36.1 -> 38.4; split 4 128x3072x3072 15.5 -> 17.2; docs/perf-log.md, v7)."""
    return sc.split == 2


def gemm_sm90_dense_x(x: torch.Tensor, packed: PackedWeightSM90, alpha, out: torch.Tensor,
                      *, config: SM90Config | None = None,
                      flags: torch.Tensor | None = None) -> None:
    """``out[M, N] = alpha * x @ dequant(w)^T``; x fp16/bf16 ``(M, K)`` contiguous, out
    fp16/bf16/fp32 ``(M, N)`` contiguous with N % 8 == 0 (16-byte TMA rows). With split-K
    (``config.SPLIT > 1`` and a partial last wave) the fp32 K-slice partials of the last wave's
    tiles are summed deterministically: inside the GEMM when ``flags`` is given (int32, one
    zeroed counter per tile, e.g. zeroed by the kernel launched before: see
    :func:`fp4_gemm_sm90`) and :func:`fixup_in_kernel` allows (pairs: a sum of two is the same
    in either order), else by a second launch (in slice order)."""
    M, K = x.shape
    N = packed.N
    sms = sm_count(x.device)
    if config is None:
        config = choose_config(M, N, K, out.dtype, sms, grouped=packed.group_k > 0)
    elif not config_is_valid(config, out.dtype, grouped=packed.group_k > 0):
        raise ValueError(f"config: {config} is not valid for out dtype {out.dtype}")
    w_desc, s_desc, x_desc, y_desc = make_descriptors(packed, x, out, config)
    sc = _schedule(M, packed, config, sms)
    split_units = sc.num_units - sc.num_full
    fixup = flags is not None and fixup_in_kernel(sc)
    if fixup and flags.numel() < sc.num_tiles:
        raise ValueError(f"flags: need {sc.num_tiles} counters, got {flags.numel()}")
    ws = torch.empty((max(split_units, 1), BM, config.BN), dtype=torch.float32, device=x.device)
    grid = min(sc.num_units, sms) if config.PERSISTENT else sc.num_units
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, ws)
    launch(_fp4_gemm_sm90_kernel, (grid,),
        w_desc, s_desc, x_desc, y_desc, ws, flags if fixup else _no_flags(x.device),
        a, alpha_ptr, sc.num_units, sc.num_full, sc.split, sc.k_per_split,
        cdiv(M, config.BN), sc.k_tiles, int(fixup),
        BN=config.BN, STAGES=config.STAGES, DTYPE=_GL_DTYPE[x.dtype], GK=packed.group_k,
        PDL=True, ALPHA_PTR=alpha_on_device, launch_pdl=True, num_warps=8)
    if split_units and not fixup:
        splitk_reduce(ws, out, alpha, sc, config.BN, pdl=True)


def fp4_gemm_sm90(x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor,
                  w_scales: torch.Tensor, alpha, order: str, out: torch.Tensor, *,
                  prepacked: PackedWeightSM90 | None = None,
                  config: SM90Config | None = None) -> None:
    """W4A4: ``out = alpha * dequant(x) @ dequant(w)^T`` (writes ``out`` in place).

    Args:
        x_q: uint8 ``(M, K/2)`` packed E2M1 activations; x_scales uint8 ``(M, K/16)`` E4M3.
        w_q: uint8 ``(N, K/2)``; w_scales uint8 ``(N, K/16)`` (ignored when ``prepacked`` given).
        alpha: fp32 global factor applied in the epilogue: a float or a one-element float32
            device tensor (``fp4mm.kernels.alpha``).
        order: ``"low_first"`` or ``"high_first"`` nibble order of both packed operands.
        out: contiguous ``(M, N)`` fp16/bf16/fp32 CUDA tensor.
        prepacked: ``prepack_weight_sm90(w_q, w_scales, order)``, reused across calls.
        config: an ``SM90Config`` overriding the heuristic.
    """
    if prepacked is None:
        prepacked = prepack_weight_sm90(w_q, w_scales, order)
    M, sms = x_q.shape[0], sm_count(x_q.device)
    if config is None:
        config = choose_config(M, prepacked.N, prepacked.K, out.dtype, sms)
    sc = _schedule(M, prepacked, config, sms)
    # split-K counters, zeroed by the x pre-pass: a memset node between the two PDL launches
    # would cost more than the reduce launch it saves
    flags = (torch.empty(sc.num_tiles, dtype=torch.int32, device=x_q.device)
             if fixup_in_kernel(sc) else None)
    x = dequant_nvfp4(x_q, x_scales, order=order, dtype=torch.float16, pdl=True, zero=flags)
    _gemm_dense(x, prepacked, alpha, out, config, flags)


def fp4_gemm_sm90_w4a16(x: torch.Tensor, w_q: torch.Tensor, w_scales: torch.Tensor, alpha,
                        order: str, out: torch.Tensor, *,
                        prepacked: PackedWeightSM90 | None = None,
                        config: SM90Config | None = None) -> None:
    """NVFP4 weights x fp16/bf16 activations ``x`` ``(M, K)``: ``out = alpha * x @ dequant(w)^T``;
    the MMA runs in x's dtype. Other arguments as in :func:`fp4_gemm_sm90`."""
    if prepacked is None:
        prepacked = prepack_weight_sm90(w_q, w_scales, order)
    _gemm_dense(x.contiguous(), prepacked, alpha, out, config)


def fp4_gemm_sm90_grouped(x: torch.Tensor, w_q: torch.Tensor, scales: torch.Tensor,
                          group_size: int, order: str, out: torch.Tensor, *,
                          prepacked: PackedWeightSM90 | None = None,
                          config: SM90Config | None = None) -> None:
    """``w4a16_mm``: ``out = x @ (e2m1(w) * scales)^T`` with fp16/bf16 ``x`` ``(M, K)`` and
    16-bit ``(N, K/group_size)`` group scales, group_size 32 or a multiple of 64; exact up to fp32
    summation order for any scale (per-group fp32 scaling, :func:`_consumer_grouped`).
    ``prepacked``: ``prepack_grouped_sm90(w_q, scales, group_size, order)``, reused across calls
    (then ``w_q``/``scales`` are ignored). Other arguments as in :func:`fp4_gemm_sm90`."""
    if prepacked is None:
        prepacked = prepack_grouped_sm90(w_q, scales, group_size, order)
    elif prepacked.group_k != group_k(group_size):
        raise ValueError(f"prepacked: packed for group width {prepacked.group_k}, but "
                         f"group_size {group_size} needs {group_k(group_size)}")
    _gemm_dense(x.contiguous(), prepacked, 1.0, out, config)


def _gemm_dense(x, packed, alpha, out, config, flags=None):
    if x.data_ptr() % 16:  # TMA needs a 16-byte aligned base (e.g. a view at an odd offset)
        x = x.clone()
    M, N = out.shape
    if N % 8 == 0 and out.is_contiguous():
        gemm_sm90_dense_x(x, packed, alpha, out, config=config, flags=flags)
        return
    padded = torch.empty((M, cdiv(N, 8) * 8), dtype=out.dtype, device=out.device)
    gemm_sm90_dense_x(x, packed, alpha, padded, config=config, flags=flags)
    out.copy_(padded[:, :N])
