"""NVFP4 activation quantiser: fp16/bf16/fp32 ``(..., K)`` -> packed E2M1 + E4M3 block scales.

Bit-exact twin of :func:`fp4mm.formats.quantize_nvfp4` (same float32 operations):

- ``gs = 2688 / amax(|x|)`` with an IEEE division (``amax == 0`` gives 1, overflow gives FLT_MAX);
- ``s_b = e4m3_rne((amax_b / 6) * gs)`` with an IEEE division (as the codec, on every device),
  clamped to 448,
  no lower clamp (subnormal scales kept);
- ``q = e2m1_rne((x * gs) / s_b)``, ties to even, saturating at 6, sign kept; a zero scale gives
  +0 codes for its whole block.

Two tricks keep the per-element work free of division while staying exact:

1. E4M3 rounding is done on the float32 bits (integer RNE), which the interpreter and every GPU
   agree on. ``E4M3_VIA_CAST`` switches to Triton's ``.to(tl.float8e4nv)`` (``cvt.rn.satfinite`` on
   sm_89+); the interpreter's cast rounds ties away from zero, so the bitwise path is the default.
2. With ``a = x * gs`` and ``s = s_b`` (4 significant bits), ``fl(a / s) > t`` is equivalent to
   ``|a| > s * t`` for every E2M1 threshold t (and likewise for ``>=``): ``s * t`` is exact, and the
   float32 neighbours of ``s * t`` divide to values beyond the rounding midpoints around t (because
   ``ulp(s*t) / s > ulp(t) / 2`` whenever the mantissa of s is below 2). So the per-element
   encoding is one multiply and seven compares against per-block thresholds; the tests check this
   against the codec exhaustively over scales and ties.

Passes over ``x``: with a given (static) global scale, one read of ``x`` and one write of the
packed output. Without one (dynamic), an amax pass first (a second read of ``x``; for activation
sizes that fit in L2 it is served from there). NaN/inf inputs are not checked here (that would cost
a pass and a host sync); the codec rejects them.

fp16/bf16 input takes the 16-bit path by default (see the section above `_from16`): the 3-step
binary search runs on the input's own bit patterns against a per-scale threshold table, two
elements an instruction (HSET2 via inline PTX on CUDA; integer compares in the portable "int16"
variant that the interpreter runs), ~12 SASS instructions an element instead of ~23.

Speed (H100 SXM, 8192 x 8192, bytes = 16-bit in + packed out + scales, torch copy 2.86 TB/s in
the same run; bench/results/quantize_nvfp4_h100_v2.json): static scale, PTX path, bf16
2.30 TB/s effective with the [8, 512] tile now picked ([8, 256]: 2.06 bf16 and fp16); the f32
path 1.75 (bf16) and 0.77 (fp16); dynamic (amax pass + quantise, [8, 256] tile) 1.24 bf16,
1.13 fp16. See :func:`pick_config` for the sweep.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from fp4mm._validate import check_order, check_tensor
from fp4mm.backend import triton_interpreting
from fp4mm.formats.nvfp4 import NVFP4_BLOCK, NVFP4Tensor
from fp4mm.kernels.host import cdiv, next_power_of_2
from fp4mm.kernels.launch import launch
from fp4mm.kernels.pdl import pdl_epilogue, pdl_launch_args, pdl_prologue

_FLT_MAX = 3.4028234663852886e38


@triton.jit
def _e4m3_rne(v, VIA_CAST: tl.constexpr):
    """float32 ``v >= 0`` (inf allowed) -> int32 E4M3 code: RNE, saturating at 448 (0x7E)."""
    if VIA_CAST:
        code = v.to(tl.float8e4nv).to(tl.uint8, bitcast=True).to(tl.int32)
    else:
        bits = v.to(tl.int32, bitcast=True)
        # Normal range: drop 20 mantissa bits with RNE, rebias the exponent 127 -> 7.
        normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) >> 20) - (120 << 3)
        # Below 2^-6: multiples of 2^-9, rne(m * 2^(E - 141)) with the implicit bit; code 8 = 2^-6.
        mant = (bits & 0x7FFFFF) | 0x800000
        shift = tl.minimum(tl.maximum(141 - ((bits >> 23) & 0xFF), 1), 31)  # unused if < 21
        sub = (mant + (1 << (shift - 1)) - 1 + ((mant >> shift) & 1)) >> shift
        code = tl.where(v < 0.015625, sub, normal)
    return tl.where(v >= 448.0, 0x7E, code)


@triton.jit
def _e4m3_value(code, VIA_CAST: tl.constexpr):
    """int32 E4M3 code in 0..0x7E -> its float32 value (exact either way)."""
    if VIA_CAST:
        v = code.to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
    else:
        e = code >> 3
        normal = (((e + 120) << 23) | ((code & 7) << 20)).to(tl.float32, bitcast=True)
        v = tl.where(e == 0, (code & 7).to(tl.float32) * 0.001953125, normal)
    return v


@triton.jit
def _global_scale(src_ptr, FROM_AMAX: tl.constexpr):
    """The encode scale: ``2688 / amax`` (IEEE division, as the codec), or a given one."""
    v = tl.load(src_ptr).to(tl.float32)
    if FROM_AMAX:
        v = _gs_from_amax(v)
    return v


@triton.jit
def _gs_from_amax(amax):
    gs = tl.div_rn(tl.full([], 2688.0, tl.float32), amax)
    return tl.where(amax == 0.0, 1.0, tl.minimum(gs, 3.4028234663852886e38))


@triton.jit
def _max_of_partials(ptr, n):
    """``max(ptr[0:n])`` of non-negative float32 partial maxima (0 for n = 0)."""
    acc = tl.zeros([1024], dtype=tl.float32)
    for i in range(0, n, 1024):
        offs = i + tl.arange(0, 1024)
        acc = tl.maximum(acc, tl.load(ptr + offs, mask=offs < n, other=0.0))
    return tl.max(acc, axis=0)


@triton.jit
def _store_gs(gs, gs_out_ptr, alpha_num_ptr, alpha_out_ptr, ALPHA: tl.constexpr):
    """Writes gs and, with ALPHA, ``alpha = *alpha_num_ptr / gs`` (IEEE division, as torch's):
    the matmul's output factor, so that no division kernel runs between quantiser and matmul."""
    tl.store(gs_out_ptr, gs)
    if ALPHA:
        tl.store(alpha_out_ptr, tl.div_rn(tl.load(alpha_num_ptr).to(tl.float32), gs))


@triton.jit
def _amax_kernel(x_ptr, amax_ptr, M, K, stride_xm, K_PER_PROGRAM,
                 BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr,
                 PDL: tl.constexpr = False):
    """``amax_ptr[0] = max(amax_ptr[0], max |x|)`` over a ``[BLOCK_M, K_PER_PROGRAM]`` slab per
    program (a 2-D grid: enough programs to keep loads in flight, few atomics)."""
    pdl_prologue(PDL)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    k_begin = tl.program_id(1) * K_PER_PROGRAM
    k_end = tl.minimum(k_begin + K_PER_PROGRAM, K)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for k0 in tl.range(k_begin, k_end, BLOCK_K, num_stages=NUM_STAGES):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_m[:, None] < M) & (offs_k[None, :] < k_end)
        x = tl.load(row + offs_k[None, :], mask=mask, other=0.0).to(tl.float32)
        acc = tl.maximum(acc, tl.abs(x))
    tl.atomic_max(amax_ptr, tl.max(tl.max(acc, axis=1), axis=0))


@triton.jit
def _encode_e2m1(x, gs, s, sign_mask, t0, t1, t2, t3, t4, t5, t6, HIGH_FIRST: tl.constexpr):
    """Elements ``[BM, G, 8]`` (float32) -> packed bytes ``[BM, G, 4]`` (int32).

    fl(a / s) vs an E2M1 threshold t is |a| vs s * t (exact; see the module doc); the strict
    thresholds arrive as the next float up, so every test is ">=" and the code is a 3-step
    binary search (7 compares cost ~40% more instructions; the kernel is issue-bound)."""
    a = x * gs
    a_bits = a.to(tl.int32, bitcast=True)
    mag = (a_bits & 0x7FFFFFFF).to(tl.float32, bitcast=True)
    hi = mag >= t3
    mid = mag >= tl.where(hi, t5, t1)
    lo = mag >= tl.where(hi, tl.where(mid, t6, t4), tl.where(mid, t2, t0))
    q = (tl.where(hi, 4, 0) | tl.where(mid, 2, 0) | tl.where(lo, 1, 0)
         | ((a_bits >> 28) & sign_mask))
    first, second = tl.split(tl.reshape(q, (q.shape[0], q.shape[1], q.shape[2] // 2, 2)))
    if HIGH_FIRST:
        packed = (first << 4) | second
    else:
        packed = first | (second << 4)
    return packed


@triton.jit
def _next_up(v):
    """The next float32 above a positive finite ``v`` (``inf`` maps to NaN, which compares
    false)."""
    return (v.to(tl.int32, bitcast=True) + 1).to(tl.float32, bitcast=True)


@triton.jit
def _quantize_tile(x_ptr, data_ptr, scales_ptr, gs, offs_m64, m_ok, kt, K, stride_xm,
                   HIGH_FIRST: tl.constexpr, E4M3_VIA_CAST: tl.constexpr,
                   BLOCK_M: tl.constexpr, G: tl.constexpr):
    """K tile ``kt`` (G 16-blocks) of rows ``offs_m64``. Each 16-block is loaded as two [BM, G, 8]
    halves, so one thread holds a whole block: 16-byte loads for 16-bit input, the block amax and
    the per-block scale work done once, in registers."""
    offs_g = kt * G + tl.arange(0, G)
    mask = m_ok & (offs_g[None, :] < K // 16)
    ptrs = x_ptr + offs_m64[:, None, None] * stride_xm + offs_g[None, :, None] * 16 \
        + tl.arange(0, 8)[None, None, :]
    x0 = tl.load(ptrs, mask=mask[:, :, None], other=0.0).to(tl.float32)
    x1 = tl.load(ptrs + 8, mask=mask[:, :, None], other=0.0).to(tl.float32)

    # Block scales, in the codec's order: (amax_b / 6) * gs, then E4M3 RNE.
    amax_b = tl.maximum(tl.max(tl.abs(x0), axis=2), tl.max(tl.abs(x1), axis=2))
    code_s = _e4m3_rne(tl.div_rn(amax_b, tl.full(amax_b.shape, 6.0, tl.float32)) * gs,
                       E4M3_VIA_CAST)
    s = _e4m3_value(code_s, E4M3_VIA_CAST)[:, :, None]
    # A zero scale encodes +0: thresholds at inf (NaN for the strict ones) and no sign.
    zero = s == 0.0
    sign_mask = tl.where(zero, 0, 8)
    s = tl.where(zero, float("inf"), s)
    t0 = _next_up(s * 0.25)
    t1 = s * 0.75
    t2 = _next_up(s * 1.25)
    t3 = s * 1.75
    t4 = _next_up(s * 2.5)
    t5 = s * 3.5
    t6 = _next_up(s * 5.0)
    p0 = _encode_e2m1(x0, gs, s, sign_mask, t0, t1, t2, t3, t4, t5, t6, HIGH_FIRST)
    p1 = _encode_e2m1(x1, gs, s, sign_mask, t0, t1, t2, t3, t4, t5, t6, HIGH_FIRST)

    out = data_ptr + offs_m64[:, None, None] * (K // 2) + offs_g[None, :, None] * 8 \
        + tl.arange(0, 4)[None, None, :]
    tl.store(out, p0.to(tl.uint8), mask=mask[:, :, None])
    tl.store(out + 4, p1.to(tl.uint8), mask=mask[:, :, None])
    tl.store(scales_ptr + offs_m64[:, None] * (K // 16) + offs_g[None, :], code_s.to(tl.uint8),
             mask=mask)


@triton.jit
def _quantize_kernel(x_ptr, gs_src_ptr, data_ptr, scales_ptr, gs_out_ptr, alpha_num_ptr,
                     alpha_out_ptr, M, K, stride_xm,
                     FROM_AMAX: tl.constexpr, HIGH_FIRST: tl.constexpr, E4M3_VIA_CAST: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr,
                     PDL: tl.constexpr = False, ALPHA: tl.constexpr = False,
                     PDL_LATE: tl.constexpr = False):
    """Rows ``[pid_m * BLOCK_M, +BLOCK_M)``; K tiles ``pid_k, pid_k + grid_k, ...`` of BLOCK_K.
    Looping over K tiles (rather than one tile a program) keeps the per-thread tile small (no
    predicate spills) while amortising the per-program set-up. PDL_LATE: the next kernel (the
    matmul) may launch only after this program's stores (``quantize_nvfp4_triton(pdl_late=)``)."""
    pdl_prologue(PDL, PDL_LATE)
    tl.static_assert(BLOCK_K % 16 == 0)
    G: tl.constexpr = BLOCK_K // 16
    pid_m = tl.program_id(0)
    pid_k = tl.program_id(1)
    gs = _global_scale(gs_src_ptr, FROM_AMAX)
    if (pid_m == 0) & (pid_k == 0):
        _store_gs(gs, gs_out_ptr, alpha_num_ptr, alpha_out_ptr, ALPHA)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m[:, None] < M
    for kt in tl.range(pid_k, tl.cdiv(K, BLOCK_K), tl.num_programs(1), num_stages=NUM_STAGES):
        _quantize_tile(x_ptr, data_ptr, scales_ptr, gs, offs_m.to(tl.int64), m_ok, kt, K,
                       stride_xm, HIGH_FIRST, E4M3_VIA_CAST, BLOCK_M, G)
    pdl_epilogue(PDL, PDL_LATE)


# ---- 16-bit path: compare |x| in the input's own precision against per-scale thresholds -----
#
# fl(|x| * gs) is monotonic in |x|, so "fl(|x| * gs) >= T" is "|x| >= X(T)" for the smallest 16-bit
# X that reaches T. With T = s * t (the f32 thresholds of the 32-bit path) there are only 127 x 7
# of them per tensor (one per E4M3 scale code and E2M1 threshold): a one-program kernel maps them
# once into a table (`_threshold_table_kernel`), and the quantise kernel looks up its block's row
# and compares the 16-bit input directly, two elements an instruction (HSET2) in the PTX variant.
# Non-negative finite 16-bit floats order like their bit patterns, so the portable variant (and
# Triton's interpreter) compares the bits as integers; X = 0x7FFF (NaN) is never reached.

_NEVER16 = 0x7FFF


@triton.jit
def _from16(bits, IS_BF16: tl.constexpr):
    """int32 holding a bf16/fp16 bit pattern (0..0xFFFF) -> its float32 value (exact)."""
    if IS_BF16:
        v = (bits << 16).to(tl.float32, bitcast=True)
    else:
        v = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return v


@triton.jit
def _rn16(y, IS_BF16: tl.constexpr):
    """float32 ``y >= 0`` -> the bf16/fp16 bit pattern nearest to it (ties to even), as int32."""
    if IS_BF16:
        b = y.to(tl.int32, bitcast=True)
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    else:
        r = y.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return r


@triton.jit
def _smallest16(t, y, gs, IS_BF16: tl.constexpr):
    """The smallest 16-bit ``x >= 0`` with ``fl(x * gs) >= t`` (bit pattern, int32), given ``y``
    within a few float32 ulps of ``t / gs`` (or of its 2^-149 granule).

    The answer is P - 1 or P with P = ceil16(t / gs) (x two 16-bit steps below P is more than
    2^-12 below t / gs, far beyond float32 rounding), and c = rn16(y) is P - 1 or P (y is much
    closer to t / gs than half a 16-bit step), so the answer is c - 1, c or c + 1: the first that
    reaches t. c = 0 makes c - 1 the NaN 0xFFFF, which fails; an overflowing y gives c = inf."""
    c = _rn16(y, IS_BF16)
    below = _from16((c - 1) & 0xFFFF, IS_BF16) * gs >= t
    at = _from16(c, IS_BF16) * gs >= t
    return tl.where(below, c - 1, tl.where(at, c, c + 1))


@triton.jit
def _threshold_table_kernel(gs_src_ptr, gs_out_ptr, table_ptr, alpha_num_ptr, alpha_out_ptr,
                            n_partials, FROM_AMAX: tl.constexpr, IS_BF16: tl.constexpr,
                            HIGH_FIRST: tl.constexpr, PDL: tl.constexpr = False,
                            ALPHA: tl.constexpr = False):
    """``table[c, i]`` (int32, 128 x 8) for every E4M3 scale code c: columns 0..6 the 16-bit
    thresholds X_i (both halves of the word, ready for packed compares) such that, in a block of
    scale s, ``|x| >= X_i`` iff ``fl(|x| * gs) / s`` rounds above E2M1 threshold i (ties to even
    as in `_quantize_tile`); column 7 the sign bits to keep (0 for a zero scale, whose block
    encodes +0). Also writes gs (and alpha: :func:`_store_gs`). FROM_AMAX: ``gs_src_ptr`` holds
    ``n_partials`` partial maxima of |x| (``_amax16_kernel`` with PARTIAL)."""
    pdl_prologue(PDL)
    if FROM_AMAX:
        gs = _gs_from_amax(_max_of_partials(gs_src_ptr, n_partials))
    else:
        gs = _global_scale(gs_src_ptr, False)
    _store_gs(gs, gs_out_ptr, alpha_num_ptr, alpha_out_ptr, ALPHA)
    code = tl.arange(0, 128)[:, None]
    col = tl.arange(0, 8)[None, :]
    s = _e4m3_value(tl.minimum(code, 0x7E), False)
    t = tl.where(col == 0, 0.25, tl.where(col == 1, 0.75, tl.where(col == 2, 1.25, tl.where(
        col == 3, 1.75, tl.where(col == 4, 2.5, tl.where(col == 5, 3.5, 5.0))))))
    st = s * t  # exact
    st = tl.where((col % 2) == 0, _next_up(st), st)  # strict thresholds: ties go down
    # y ~ st / gs without overflow: 1/gs overflows for gs < 2^-128, so scale gs up first.
    big = tl.where(gs < 5.421010862427522e-20, 1.8446744073709552e19, 1.0)  # 2^-64, 2^64
    y = (s * (1.0 / (gs * big))) * (t * big)
    x16 = tl.where(s == 0.0, 0x7FFF, _smallest16(st, y, gs, IS_BF16))
    if HIGH_FIRST:
        sign = 0x00080080
    else:
        sign = 0x00800008
    entry = tl.where(col == 7, tl.where(s == 0.0, 0, sign), x16 | (x16 << 16))
    tl.store(table_ptr + code * 8 + col, entry)


@triton.jit
def _max_u16x2(a, b):
    """Lane-wise max of two words each holding two non-negative 16-bit floats (their bits)."""
    return tl.maximum(a & 0xFFFF, b & 0xFFFF) | tl.maximum(a & 0x7FFF0000, b & 0x7FFF0000)


@triton.jit
def _max_u16x2_ptx(a, b):
    return tl.inline_asm_elementwise("max.u16x2 $0, $1, $2;", "=r,r,r", [a, b],
                                     dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def _split4(t):
    """[..., 4] -> its 4 columns, in order."""
    e, o = tl.split(tl.reshape(t, (t.shape[0], t.shape[1], 2, 2)))
    c0, c2 = tl.split(e)
    c1, c3 = tl.split(o)
    return c0, c1, c2, c3


@triton.jit
def _lane_ge(a, t):
    """Per 16-bit lane: 0xFFFF where ``lane(a) >= lane(t)`` (bit patterns below 0x8000)."""
    lo = tl.where((a & 0xFFFF) >= (t & 0xFFFF), 0xFFFF, 0)
    return lo | tl.where((a >> 16) >= (t >> 16), -65536, 0)


@triton.jit
def _select(mask, a, b):
    """Bitwise ``mask ? a : b`` (the PTX ``lop3 ..., 0xCA``)."""
    return (mask & a) | (~mask & b)


@triton.jit
def _encode_words(x, a, p0, p1, p2, p3, p4, p5, p6, sign, HIGH_FIRST: tl.constexpr,
                  IS_BF16: tl.constexpr, USE_PTX: tl.constexpr):
    """Words ``x`` (two 16-bit elements each, element 2j in the low half), ``a = x & 0x7FFF7FFF``,
    per-block thresholds ``p_i`` (both halves X_i) and sign bits -> int32 whose low byte is the
    packed pair. Codes by a 3-step binary search on lane masks, then
    ``(h & 4) | (m & 2) | (l & 1) | sign`` placed in each lane's nibble of the output byte."""
    if HIGH_FIRST:
        CH: tl.constexpr = 0x00040040
        CM: tl.constexpr = 0x00020020
        CL: tl.constexpr = 0x00010010
    else:
        CH: tl.constexpr = 0x00400004
        CM: tl.constexpr = 0x00200002
        CL: tl.constexpr = 0x00100001
    if USE_PTX:
        if IS_BF16:
            SET: tl.constexpr = "set.ge.u32.bf16x2"
        else:
            SET: tl.constexpr = "set.ge.u32.f16x2"
        asm: tl.constexpr = (
            "{ .reg .b32 h, m, l, t, u, g, c;\n"
            f"{SET} h, $2, $3;\n"
            "lop3.b32 t, h, $4, $5, 0xCA;\n"
            f"{SET} m, $2, t;\n"
            "lop3.b32 u, m, $6, $7, 0xCA;\n"
            "lop3.b32 t, m, $8, $9, 0xCA;\n"
            "lop3.b32 t, h, u, t, 0xCA;\n"
            f"{SET} l, $2, t;\n"
            "prmt.b32 g, $1, $1, 0xBB99;\n"
            f"and.b32 c, l, {CL};\n"
            f"lop3.b32 c, m, {CM}, c, 0xEA;\n"
            f"lop3.b32 c, h, {CH}, c, 0xEA;\n"
            "lop3.b32 c, g, $10, c, 0xEA;\n"
            "shr.u32 t, c, 16;\n"
            "or.b32 $0, c, t; }")
        out = tl.inline_asm_elementwise(asm, "=r,r,r,r,r,r,r,r,r,r,r",
                                        [x, a, p3, p5, p1, p6, p4, p2, p0, sign],
                                        dtype=tl.int32, is_pure=True, pack=1)
    else:
        h = _lane_ge(a, p3)
        m = _lane_ge(a, _select(h, p5, p1))
        l_ = _lane_ge(a, _select(h, _select(m, p6, p4), _select(m, p2, p0)))
        g = tl.where((x & 0x8000) != 0, 0xFFFF, 0) | tl.where(x < 0, -65536, 0)
        c = (l_ & CL) | (m & CM) | (h & CH) | (g & sign)
        out = c | (c >> 16)
    return out


@triton.jit
def _dequant16(c, s):
    """int32 E2M1 code (0..15, sign in bit 3) times its block scale ``s >= 0`` (float32) -> the
    fp16 bit pattern (int32, 0..0xFFFF). Exact: the magnitude (0, 0.5, 1, 1.5, 2, 3, 4, 6) times
    s has at most 6 significant bits and lies in [2^-10, 2688] (or is 0). The sign goes in as a
    bit, so a negative-zero code gives -0 as the codec does (a float negation of 0 may not)."""
    mag = c & 7
    v = tl.where(mag < 2, (mag & 1).to(tl.float32) * 0.5,
                 ((((mag >> 1) + 126) << 23) | ((mag & 1) << 22)).to(tl.float32, bitcast=True))
    bits = (v * s).to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0x7FFF
    return bits | ((c & 8) << 12)


@triton.jit
def _dequant_words(packed, s):
    """int32 whose low byte holds two codes (low_first) and their block scale ``s`` -> one int32
    word of the two fp16 values ``e2m1 * s`` (element 2j in the low half)."""
    return _dequant16(packed & 0xF, s) | (_dequant16((packed >> 4) & 0xF, s) << 16)


@triton.jit
def _quantize_tile16(x_ptr, data_ptr, scales_ptr, table_ptr, gs, offs_m64, m_ok, kt, K,
                     stride_xm, HIGH_FIRST: tl.constexpr, IS_BF16: tl.constexpr,
                     USE_PTX: tl.constexpr, E4M3_VIA_CAST: tl.constexpr, G: tl.constexpr,
                     DEQUANT: tl.constexpr = False):
    """K tile ``kt`` (G 16-blocks) of rows ``offs_m64`` from int32 words (two 16-bit elements
    each): a thread holds a whole block (8 words, two 16-byte loads), takes its amax on the bit
    patterns, rounds the scale in float32 as the codec does, and looks up its threshold row.
    DEQUANT (with HIGH_FIRST False): ``data_ptr`` receives the fp16 values ``e2m1 * e4m3`` of the
    codes instead (int32 words, K/2 a row) and no scales are stored."""
    offs_g = kt * G + tl.arange(0, G)
    mask = (m_ok & (offs_g[None, :] < K // 16))[:, :, None]
    # Two 16-byte halves [BM, G, 4]: a thread holds a whole block with no cross-thread reduce.
    ptrs = x_ptr + offs_m64[:, None, None] * stride_xm + offs_g[None, :, None] * 8 \
        + tl.arange(0, 4)[None, None, :]
    x0 = tl.load(ptrs, mask=mask, other=0)
    x1 = tl.load(ptrs + 4, mask=mask, other=0)
    a0 = x0 & 0x7FFF7FFF
    a1 = x1 & 0x7FFF7FFF
    if USE_PTX:
        pair = tl.reduce(_max_u16x2_ptx(a0, a1), 2, _max_u16x2_ptx)
    else:
        pair = tl.reduce(_max_u16x2(a0, a1), 2, _max_u16x2)
    amax_b = _from16(tl.maximum(pair & 0xFFFF, pair >> 16), IS_BF16)
    code_s = _e4m3_rne(tl.div_rn(amax_b, tl.full(amax_b.shape, 6.0, tl.float32)) * gs,
                       E4M3_VIA_CAST)
    row = table_ptr + code_s[:, :, None] * 8 + tl.arange(0, 4)[None, None, :]
    p0, p1, p2, p3 = _split4(tl.load(row))
    p4, p5, p6, sign = _split4(tl.load(row + 4))
    p0, p1, p2, p3 = p0[:, :, None], p1[:, :, None], p2[:, :, None], p3[:, :, None]
    p4, p5, p6, sign = p4[:, :, None], p5[:, :, None], p6[:, :, None], sign[:, :, None]
    out0 = _encode_words(x0, a0, p0, p1, p2, p3, p4, p5, p6, sign, HIGH_FIRST, IS_BF16, USE_PTX)
    out1 = _encode_words(x1, a1, p0, p1, p2, p3, p4, p5, p6, sign, HIGH_FIRST, IS_BF16, USE_PTX)
    # bytes of the packed codes, or with DEQUANT int32 words of fp16 pairs: K/2 of either a row
    dst = data_ptr + offs_m64[:, None, None] * (K // 2) + offs_g[None, :, None] * 8 \
        + tl.arange(0, 4)[None, None, :]
    if DEQUANT:
        s = _e4m3_value(code_s, E4M3_VIA_CAST)[:, :, None]
        tl.store(dst, _dequant_words(out0, s), mask=mask)
        tl.store(dst + 4, _dequant_words(out1, s), mask=mask)
    else:
        tl.store(dst, out0.to(tl.uint8), mask=mask)
        tl.store(dst + 4, out1.to(tl.uint8), mask=mask)
        # Stored as [BM, G, 1]: the blocks' own layout, no shared-memory round trip and barriers.
        tl.store(scales_ptr + offs_m64[:, None, None] * (K // 16) + offs_g[None, :, None],
                 code_s[:, :, None].to(tl.uint8), mask=mask)


@triton.jit
def _quantize16_kernel(x_ptr, gs_ptr, table_ptr, data_ptr, scales_ptr, M, K, stride_xm,
                       HIGH_FIRST: tl.constexpr, IS_BF16: tl.constexpr, USE_PTX: tl.constexpr,
                       E4M3_VIA_CAST: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_K: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr = False,
                       PDL_LATE: tl.constexpr = False, DEQUANT: tl.constexpr = False):
    """The 16-bit twin of `_quantize_kernel` (same grid); ``x_ptr`` int32 words, ``stride_xm``
    in words, ``gs_ptr`` and ``table_ptr`` written by `_threshold_table_kernel`. DEQUANT: the
    quantised values in fp16 instead of codes and scales
    (:func:`quantize_dequantize_nvfp4_triton`)."""
    pdl_prologue(PDL, PDL_LATE)
    tl.static_assert(BLOCK_K % 16 == 0)
    gs = tl.load(gs_ptr)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m[:, None] < M
    for kt in tl.range(tl.program_id(1), tl.cdiv(K, BLOCK_K), tl.num_programs(1),
                       num_stages=NUM_STAGES):
        _quantize_tile16(x_ptr, data_ptr, scales_ptr, table_ptr, gs, offs_m.to(tl.int64), m_ok,
                         kt, K, stride_xm, HIGH_FIRST, IS_BF16, USE_PTX, E4M3_VIA_CAST,
                         BLOCK_K // 16, DEQUANT)
    pdl_epilogue(PDL, PDL_LATE)


@triton.jit
def _amax16_kernel(x_ptr, amax_ptr, M, KW, stride_xm, KW_PER_PROGRAM, IS_BF16: tl.constexpr,
                   USE_PTX: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr,
                   PDL: tl.constexpr = False, PARTIAL: tl.constexpr = False):
    """`_amax_kernel` on int32 words of 16-bit elements (``KW`` words a row): the max is taken on
    the bit patterns of |x| (two lanes a word), converted to float32 once. PARTIAL: each program
    stores its own maximum at ``amax_ptr[program]`` (row-major over the grid) instead, so the
    buffer needs no zeroing (the threshold-table kernel takes the max of the partials)."""
    pdl_prologue(PDL)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_begin = tl.program_id(1) * KW_PER_PROGRAM
    w_end = tl.minimum(w_begin + KW_PER_PROGRAM, KW)
    acc = tl.zeros((BLOCK_M, BLOCK_W), dtype=tl.int32)
    for w0 in range(w_begin, w_end, BLOCK_W):
        offs_w = w0 + tl.arange(0, BLOCK_W)
        mask = (offs_m[:, None] < M) & (offs_w[None, :] < w_end)
        a = tl.load(row + offs_w[None, :], mask=mask, other=0) & 0x7FFF7FFF
        if USE_PTX:
            acc = _max_u16x2_ptx(acc, a)
        else:
            acc = _max_u16x2(acc, a)
    pair = tl.max(tl.max(acc & 0xFFFF, axis=1), axis=0)
    pair = tl.maximum(pair, tl.max(tl.max(acc >> 16, axis=1), axis=0))
    if PARTIAL:
        tl.store(amax_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1),
                 _from16(pair, IS_BF16))
    else:
        tl.atomic_max(amax_ptr, _from16(pair, IS_BF16))


@dataclass(frozen=True)
class QuantizeConfig:
    """Tile of the quantise kernel (powers of two; ``block_k >= 16``) and how many programs share
    the K tiles of a row block (``k_programs``; ``None``: about ``target_programs`` in all)."""

    block_m: int
    block_k: int
    num_warps: int = 4
    k_programs: int | None = None
    target_programs: int = 4096
    num_stages: int = 1  # > 1 pipelines the K loop through shared memory: slower on H100

    def __post_init__(self):
        for name in ("block_m", "block_k", "num_warps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0 or v & (v - 1):
                raise ValueError(f"QuantizeConfig.{name}: expected a power of two, got {v!r}")
        if self.block_k < 16:
            raise ValueError(f"QuantizeConfig.block_k: expected >= 16, got {self.block_k}")
        if self.k_programs is not None and (not isinstance(self.k_programs, int)
                                            or self.k_programs <= 0):
            raise ValueError(f"QuantizeConfig.k_programs: expected None or a positive int, got "
                             f"{self.k_programs!r}")

    def grid(self, M: int, K: int) -> tuple[int, int]:
        m_tiles, k_tiles = max(1, cdiv(M, self.block_m)), cdiv(K, self.block_k)
        k_programs = self.k_programs or cdiv(self.target_programs, m_tiles)
        return m_tiles, max(1, min(k_tiles, k_programs))


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def pick_config(M: int, K: int, path: str = "f32") -> QuantizeConfig:
    """Tiles of whole 16-blocks a thread, 4 warps, about 4096 programs each looping over its K
    tiles; narrower for small K. ``path="f32"``: [8, 256]; the 16-bit paths: [8, 512].

    H100 SXM, 8192 x 8192, static scale, effective TB/s (torch copy 2.86 TB/s in the same run;
    bench/results/quantize_nvfp4_h100_v2.json): 16-bit PTX path, bf16: [8, 512] w4 2.30,
    [8, 256] w4 2.06 (fp16 2.06), same with 8192 programs 2.20, 2048 programs 2.05, [4, 256] w2
    2.15, [16, 256] w4 1.91, [16, 256] w8 0.83; the portable int16 path 1.67. The f32 path
    (bf16; _run2.json and _sweep.json, copy 2.85): [8, 256] w4 1.75-1.81; 2048 programs
    1.54-1.75; one K tile a program 1.59; [4, 256] w2 1.61; [16, 256] w8 1.57; pipelined K loop
    (num_stages 2-4) 1.47-1.62.
    """
    block_k = min(256 if path == "f32" else 512, next_power_of_2(K))
    block_m = max(1, min(4096 // block_k if path != "f32" else 2048 // block_k,
                         next_power_of_2(M)))
    per_warp = 512 if path == "f32" else 1024
    return QuantizeConfig(block_m=block_m, block_k=block_k,
                          num_warps=max(1, min(4, block_m * block_k // per_warp)))


@dataclass(frozen=True)
class AmaxConfig:
    """Tile of the amax reduction and the K extent one program covers (a multiple of block_k)."""

    block_m: int
    block_k: int
    k_per_program: int
    num_warps: int = 8
    num_stages: int = 1

    def __post_init__(self):
        QuantizeConfig(self.block_m, self.block_k, self.num_warps)  # same validity rules
        if self.k_per_program <= 0 or self.k_per_program % self.block_k:
            raise ValueError(f"AmaxConfig.k_per_program: expected a positive multiple of block_k "
                             f"= {self.block_k}, got {self.k_per_program}")


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def pick_amax_config(M: int, K: int, target_programs: int = 1024) -> AmaxConfig:
    """[32, 256] tiles; K split so that about ``target_programs`` programs run (a few per SM, each
    with several tiles of loads; one atomic each). H100, 8192 x 8192 bf16: 2.12-2.17 TB/s of reads
    for 512 to 4096 programs (the torch copy moves 2.85 TB/s); pipelining does not help."""
    block_k = min(256, next_power_of_2(K))
    block_m = max(1, min(32, next_power_of_2(M)))
    k_tiles = cdiv(K, block_k)
    splits = max(1, min(k_tiles, cdiv(target_programs, cdiv(max(M, 1), block_m))))
    return AmaxConfig(block_m, block_k, cdiv(k_tiles, splits) * block_k,
                      num_warps=8 if block_m * block_k >= 4096 else 4)


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    check_tensor("x", x, dtype=(torch.float16, torch.bfloat16, torch.float32), contiguous=False)
    if x.dim() == 0 or x.shape[-1] == 0 or x.shape[-1] % NVFP4_BLOCK != 0:
        raise ValueError(f"x: expected a last dimension (K) that is a positive multiple of "
                         f"{NVFP4_BLOCK}, got shape {tuple(x.shape)}")
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    return x2


def _interpreted(x2: torch.Tensor) -> bool:
    return x2.device.type == "cpu" and triton_interpreting()


def _for_f32_path(x2: torch.Tensor) -> torch.Tensor:
    if x2.dtype == torch.bfloat16 and _interpreted(x2):
        x2 = x2.float()  # exact; bf16 arithmetic is wrong in Triton's interpreter
    return x2


def _as_words(x2: torch.Tensor) -> torch.Tensor:
    """16-bit ``(M, K)`` with unit last stride -> int32 ``(M, K/2)`` sharing its storage
    (copied when the row stride or offset is odd)."""
    if x2.stride(0) % 2 or x2.storage_offset() % 2:
        x2 = x2.contiguous()
    return x2.view(torch.int32)


PATHS = ("f32", "int16", "ptx")


def _pick_path(x2: torch.Tensor, path: str | None) -> str:
    if path is None:
        if x2.dtype == torch.float32:
            return "f32"
        return "int16" if _interpreted(x2) else "ptx"
    if path not in PATHS:
        raise ValueError(f"path: expected one of {PATHS} or None, got {path!r}")
    if path != "f32" and x2.dtype == torch.float32:
        raise ValueError(f"path: {path!r} needs fp16/bf16 input, got {x2.dtype}")
    if path == "ptx" and x2.device.type != "cuda":
        raise ValueError("path: 'ptx' (inline PTX) runs on CUDA only")
    return path


def nvfp4_amax_triton(x: torch.Tensor, *, config: AmaxConfig | None = None,
                      path: str | None = None) -> torch.Tensor:
    """``max |x|`` as a float32 0-d tensor on x's device (a Triton reduction; no host sync).
    ``path``: as in :func:`quantize_nvfp4_triton` (16-bit input is reduced on its bit patterns
    unless ``"f32"``)."""
    x2 = _as_2d(x)
    return _amax(x2, config, _pick_path(x2, path))


def _amax(x2: torch.Tensor, config: AmaxConfig | None, path: str) -> torch.Tensor:
    M, K = x2.shape
    cfg = config or pick_amax_config(M, K)
    amax = torch.zeros((), dtype=torch.float32, device=x2.device)
    if not M:
        return amax
    grid = (cdiv(M, cfg.block_m), cdiv(K, cfg.k_per_program))
    if path == "f32":
        x2 = _for_f32_path(x2)
        launch(_amax_kernel, grid, x2, amax, M, K, x2.stride(0), cfg.k_per_program,
               BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, NUM_STAGES=cfg.num_stages,
               num_warps=cfg.num_warps, **pdl_launch_args(x2.device))
    else:
        _launch_amax16(x2, amax, cfg, grid, path, partial=False)
    return amax


def _launch_amax16(x2: torch.Tensor, out: torch.Tensor, cfg: AmaxConfig, grid: tuple,
                   path: str, partial: bool) -> None:
    """``_amax16_kernel`` over 16-bit ``x2`` (M > 0): one atomic max into ``out[0]``, or with
    ``partial`` each program's maximum at ``out[program]``."""
    M, K = x2.shape
    w = _as_words(x2)
    launch(_amax16_kernel, grid, w, out, M, K // 2, w.stride(0), cfg.k_per_program // 2,
           IS_BF16=x2.dtype == torch.bfloat16, USE_PTX=path == "ptx",
           BLOCK_M=cfg.block_m, BLOCK_W=cfg.block_k // 2,
           num_warps=cfg.num_warps, PARTIAL=partial,
           **pdl_launch_args(x2.device))


def _alpha_tensor(name: str, t, device) -> torch.Tensor:
    """A one-element float32 tensor on ``device``, as the alpha arguments must be."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a one-element float32 tensor on {device}, got "
                         f"{type(t).__name__}")
    if t.numel() != 1 or t.dtype != torch.float32 or t.device != torch.device(device):
        raise ValueError(f"{name}: expected a one-element float32 tensor on {device}, got a "
                         f"{t.dtype} tensor of shape {tuple(t.shape)} on {t.device}")
    return t


def _amax16_partials(x2: torch.Tensor, config: AmaxConfig | None, path: str) -> torch.Tensor:
    """Each amax program's maximum of |x| (16-bit input), float32 ``(programs,)``; empty for
    M = 0."""
    M, K = x2.shape
    cfg = config or pick_amax_config(M, K)
    grid = (cdiv(M, cfg.block_m), cdiv(K, cfg.k_per_program))
    partials = torch.empty(grid[0] * grid[1] if M else 0, dtype=torch.float32, device=x2.device)
    if M:
        _launch_amax16(x2, partials, cfg, grid, path, partial=True)
    return partials


def _global_scale_source(global_scale, device) -> torch.Tensor:
    if isinstance(global_scale, torch.Tensor):
        if global_scale.numel() != 1:
            raise ValueError(f"global_scale: expected a scalar, got shape "
                             f"{tuple(global_scale.shape)}")
        if global_scale.device != device:
            raise ValueError(f"global_scale: expected a tensor on {device}, got one on "
                             f"{global_scale.device}")
        return global_scale.reshape(()).to(torch.float32)
    if isinstance(global_scale, bool) or not isinstance(global_scale, numbers.Real):
        raise TypeError(f"global_scale: expected a float or a one-element tensor, got "
                        f"{type(global_scale).__name__}")
    if not (math.isfinite(global_scale) and global_scale > 0):
        raise ValueError(f"global_scale: expected a finite positive number, got {global_scale}")
    return torch.tensor(float(global_scale), dtype=torch.float32, device=device)


def quantize_nvfp4_triton(
    x: torch.Tensor,
    global_scale=None,
    order: str = "low_first",
    *,
    config: QuantizeConfig | None = None,
    amax_config: AmaxConfig | None = None,
    e4m3_via_cast: bool | None = None,
    path: str | None = None,
    alpha_numerator: torch.Tensor | None = None,
    alpha_out: torch.Tensor | None = None,
    pdl_late: bool = False,
) -> NVFP4Tensor:
    """Quantise ``x`` to NVFP4 on the GPU (or in Triton's interpreter); bit-exact twin of
    :func:`fp4mm.formats.quantize_nvfp4`.

    Args:
        x: fp16/bf16/fp32 ``(..., K)``, K a positive multiple of 16, finite (not checked); the last
            dimension must be contiguous or x is copied.
        global_scale: the encode scale gs: ``None`` (computed as ``2688 / amax|x|`` on the device,
            one extra read of x), a positive float, or a one-element tensor on x's device (read by
            the kernel, no host sync; its value is not checked).
        order: nibble order of the packed output, ``"low_first"`` or ``"high_first"``.
        config, amax_config: tile overrides (tests, tuning); ``None`` picks them.
        e4m3_via_cast: round and decode block scales with the hardware float8e4nv conversions
            (``cvt.rn.satfinite.e4m3x2``; fewer instructions) instead of integer RNE. Both are
            exact on sm_89+; Triton's interpreter rounds ties away from zero in that cast.
            ``None``: the cast on a GPU, integer RNE under the interpreter.
        path: ``"f32"`` (every element scaled and compared in float32; the only path for fp32
            input), ``"int16"`` (fp16/bf16: |x| compared as 16-bit bit patterns against a
            per-scale threshold table; portable, runs in the interpreter) or ``"ptx"`` (the same
            with packed HSET2 compares, two elements an instruction; CUDA only). ``None``:
            ``"ptx"`` for 16-bit input on CUDA, ``"int16"`` in the interpreter, else ``"f32"``.
        alpha_numerator, alpha_out: one-element float32 tensors on x's device, both or neither:
            the kernel that writes gs also writes ``alpha_out = alpha_numerator / gs`` (IEEE
            division, bit for bit torch's), the output factor of the matmul after the quantiser
            (``NVFP4Linear``: ``weight_scale_2 / gs_x``) without a division kernel between them.
        pdl_late: on sm_90+ the quantise kernel launches with PDL and lets the next kernel (the
            matmul) launch at its start; with ``pdl_late`` only after its stores
            (:func:`fp4mm.ops.dispatch.quantiser_pdl_late` says where the W4A4 ops want that).

    Returns:
        ``NVFP4Tensor(data uint8 (..., K/2), scales uint8 (..., K/16) row-major E4M3 bytes,
        global_scale float32 0-d)``, all on x's device.
    """
    check_order(order)
    x2 = _as_2d(x)
    data, scales, gs = _quantize(x2, global_scale, order, config, amax_config, e4m3_via_cast,
                                 _pick_path(x2, path), alpha_numerator, alpha_out, pdl_late,
                                 dequantize=False)
    lead = tuple(x.shape[:-1])
    K = x2.shape[1]
    return NVFP4Tensor(data.reshape(*lead, K // 2), scales.reshape(*lead, K // NVFP4_BLOCK), gs)


def quantize_dequantize_nvfp4_triton(
    x: torch.Tensor,
    global_scale=None,
    *,
    config: QuantizeConfig | None = None,
    amax_config: AmaxConfig | None = None,
    e4m3_via_cast: bool | None = None,
    path: str | None = None,
    alpha_numerator: torch.Tensor | None = None,
    alpha_out: torch.Tensor | None = None,
    pdl_late: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The values of :func:`quantize_nvfp4_triton`'s codes, ``e2m1(q) * e4m3(s_b)`` (the global
    scale not divided out), as an fp16 ``(..., K)`` tensor, in one pass: what the NVFP4
    activations are to a matmul on 16-bit x (``NVFP4Linear``'s W4A4 route at decode sizes, with
    ``alpha = 1 / (gs_x * gs_w)``). Exact: ``e2m1 * e4m3`` has at most 6 significant bits and lies
    in [2^-10, 2688], so fp16 holds it (so would bf16). The codes and scales are those of
    :func:`quantize_nvfp4_triton` bit for bit (the same kernel, storing values instead of
    bytes). ``x``: fp16 or bf16 (the 16-bit paths only); other arguments as there.

    Returns:
        ``(values fp16 (..., K), global_scale float32 0-d)``, on x's device.
    """
    x2 = _as_2d(x)
    if x2.dtype == torch.float32:
        raise ValueError("x: expected fp16 or bf16 (the 16-bit quantiser paths), got "
                         "torch.float32")
    path = _pick_path(x2, path)
    if path == "f32":
        raise ValueError("path: expected 'int16', 'ptx' or None (the 16-bit paths), got 'f32'")
    data, _, gs = _quantize(x2, global_scale, "low_first", config, amax_config, e4m3_via_cast,
                            path, alpha_numerator, alpha_out, pdl_late, dequantize=True)
    return data.reshape(x.shape), gs


def _quantize(x2, global_scale, order, config, amax_config, e4m3_via_cast, path,
              alpha_numerator, alpha_out, pdl_late, dequantize):
    """Both launchers: ``(data, scales, gs)`` for 2-D ``x2``; with ``dequantize`` (16-bit
    paths) ``data`` is the fp16 values and ``scales`` None."""
    if (alpha_numerator is None) != (alpha_out is None):
        raise ValueError("alpha_numerator, alpha_out: expected both or neither")
    alpha = alpha_numerator is not None
    if alpha:
        alpha_numerator = _alpha_tensor("alpha_numerator", alpha_numerator, x2.device)
        alpha_out = _alpha_tensor("alpha_out", alpha_out, x2.device)
    M, K = x2.shape
    cfg = config or pick_config(M, K, path)
    if e4m3_via_cast is None:
        e4m3_via_cast = not _interpreted(x2)
    n_partials = 0
    if global_scale is None and path == "f32":
        src, from_amax = _amax(x2, amax_config, path), True
    elif global_scale is None:  # partial maxima: no zeroed buffer, so no fill kernel
        src, from_amax = _amax16_partials(x2, amax_config, path), True
        n_partials = src.numel()
    else:
        src, from_amax = _global_scale_source(global_scale, x2.device), False
    if dequantize:
        data = torch.empty((M, K), dtype=torch.float16, device=x2.device)
        scales = None
    else:
        data = torch.empty((M, K // 2), dtype=torch.uint8, device=x2.device)
        scales = torch.empty((M, K // NVFP4_BLOCK), dtype=torch.uint8, device=x2.device)
    gs = torch.empty((), dtype=torch.float32, device=x2.device)
    if not alpha:  # the kernels' unused alpha pointers
        alpha_numerator = alpha_out = gs
    high_first = order == "high_first"
    pdl = pdl_launch_args(x2.device)  # the matmul after the quantiser starts while it runs
    late = {"PDL_LATE": pdl_late} if pdl else {}  # ... or once the quantise kernel has stored
    if path == "f32":
        x2 = _for_f32_path(x2)
        launch(_quantize_kernel, cfg.grid(M, K),
            x2, src, data, scales, gs, alpha_numerator, alpha_out, M, K, x2.stride(0),
            FROM_AMAX=from_amax, HIGH_FIRST=high_first, E4M3_VIA_CAST=e4m3_via_cast,
            BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, NUM_STAGES=cfg.num_stages,
            num_warps=cfg.num_warps, ALPHA=alpha, **pdl, **late)
    else:
        is_bf16 = x2.dtype == torch.bfloat16
        table = torch.empty((128, 8), dtype=torch.int32, device=x2.device)
        launch(_threshold_table_kernel, (1,), src, gs, table, alpha_numerator, alpha_out,
               n_partials, FROM_AMAX=from_amax, IS_BF16=is_bf16, HIGH_FIRST=high_first,
               ALPHA=alpha, num_warps=4, **pdl)
        if M:
            w = _as_words(x2)
            dst = data.view(torch.int32) if dequantize else data  # words of fp16 pairs
            launch(_quantize16_kernel, cfg.grid(M, K),
                w, gs, table, dst, dst if dequantize else scales, M, K, w.stride(0),
                HIGH_FIRST=high_first, IS_BF16=is_bf16, USE_PTX=path == "ptx",
                E4M3_VIA_CAST=e4m3_via_cast, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps, DEQUANT=dequantize,
                **pdl, **late)
    return data, scales, gs


def nvfp4_global_scale_triton(x: torch.Tensor) -> torch.Tensor:
    """``2688 / amax|x|`` (IEEE division) as the codec computes it
    (:func:`fp4mm.formats.nvfp4_global_scale`), as a float32 0-d tensor, without a host sync."""
    amax = nvfp4_amax_triton(x)
    gs = torch.where(amax == 0, torch.ones_like(amax), torch.full_like(amax, 2688.0) / amax)
    return gs.clamp(max=_FLT_MAX)
