"""W4A4 decode (1-4 tokens) on Hopper's E4M3 ``wgmma``, in Gluon: ``out[M, N] = alpha * x @ W^T``.

Why a third decode kernel: the register-ring GEMV (``fp4_gemv_sm90``) turns every 8-code word
into four fp16x2 registers (7 bit ops, 4 ``cvt.f16x2.e4m3x2``, 4 ``mul.f16x2`` by the block scale)
for fp16 ``mma.sync``, about 3 instructions a code, and held W4A4 at 17.5-17.9 us for the
18432 x 3072 decode row (1.8 TB/s). Here both operands stay 8-bit:

- **E4M3 operands.** An E2M1 code whose sign stays put and whose other 3 bits move left by 2 is
  the E4M3 byte of ``e2m1 * 2^-6`` (``fp4_decode.E2M1_E4M3_BYTES_PTX``), so 7 bit ops turn a word
  into the 8 bytes of an FP8 A fragment: no conversion, no scale multiply. E4M3 ``mma.sync`` is
  emulated on sm_90 (perf-log, session 17), but ``wgmma`` takes an E4M3 A operand from
  registers (``m64n16k32``, one warpgroup per 64 weight rows).
- **Block sums as MMA columns.** An E4M3 value cannot carry a block scale, so the scales multiply
  fp32 block sums instead: B (x, built once per CTA in shared memory) holds each 16-code block's
  x codes in that block's column and zeros elsewhere, so column ``j`` of the accumulator is the
  bare dot product of block ``j``. Eight wgmmas cover a 256-K window (16 blocks, 16 columns);
  then ``acc += sums * e4m3(w_scale) * e4m3(x_scale) * 2^12`` (8 FFMA a thread; 2^12 undoes the
  two ``2^-6``), and the row sums of ``acc`` are the output.
- **2-4 tokens** (T = 2 or 4 token columns, compiled apart; 3 tokens run as 4 with the fourth
  zero). Each wgmma reads 4 blocks of the window (one per K group c), so with T tokens it needs
  4 T columns: the 8 wgmmas go into T fresh accumulators of 16 columns (4, 2 or 1 wgmma pairs
  each), every column one (token, block). The columns are placed so that lane c of a quad holds
  only blocks ``8 h + 2 c + t'``, the blocks it holds for one token: the weight scales stay one
  [64, 16] load a window and reach every accumulator by register moves, and B keeps one token's
  size (8 tiles of [16, 32] a window). The x scales (times 2^12) come from a small shared table
  built with B. A window then costs 8 FMUL + 8 FFMA more a thread per extra accumulator (the
  loop: 272 SASS instructions for one token, 278 for two, 317 for four).
- **Four tokens, registers.** Their scales are formed after the wgmma wait, not before (112
  registers instead of 128; 3-4% faster at 18432 x 3072 split 3). Where 4 CTAs an SM would
  leave the split grid a second wave and 5 would not (:func:`uses_halves`: 18432 x 3072, 576
  CTAs), the window runs as two halves of 4 wgmmas, each waited for and scaled before the next
  is issued (``HALVES``, capped at 96 registers without spills: 5 CTAs an SM). Session 23,
  H100: four tokens at 18432 x 3072 16.60 us (split 2, halves) against 17.48 (split 3) before.
- **Exact.** A column sums 16 products of two coded E2M1 values (each a multiple of 2^-14
  below 2^-6), so a block sum is a multiple of 2^-14 below 2^-2: at most 12 significant bits,
  which the FP8 MMA's reduced-width accumulation holds exactly (a GPU test checks the widest
  case); the rest is fp32, so the result equals the oracle up to fp32 summation order. A NaN
  scale byte gives NaN in every output that reads it, as in the oracle.
- **K order.** Thread ``4 g + c`` of a warp loads 16 contiguous bytes per row and 128-K half
  window (its A fragment's K group ``c``); word ``t`` of them feeds wgmma ``4 h + t`` of the
  window, low nibbles in K slots ``4 c + j``, high ones in ``16 + 4 c + j``. B gets the same
  permutation, so the products pair up as in ``x @ W^T``; the decoded tile's conversion to the
  A operand layout is free (checked at compile time). The nibble order does not matter: both
  operands use the same one, and each product pairs the same nibble of the same byte.
- **Pipeline.** Each CTA builds its slice of B (``x`` words -> zero-padded E4M3 columns, one
  tensor and one store: built per window or per tile it cost 0.5-2.3 us a call) after
  requesting its first weight window, then runs the windows with the next window's weights in
  flight (one ahead: deeper rings measured slower), loaded evict-first (Triton's hint: L1 and
  an L2 policy; 8-10% faster at 1-4 tokens: the scale lines, which serve 8 windows each, then
  stay cached; perf-log, session 25). Split K over grid axis 1: fp32 partials
  ``(splits, M, N)`` summed in a fixed order by ``fp4_gemv``'s reduce kernel. Both launch with
  programmatic dependent launch, as the register-ring GEMV does: the GEMV waits for the kernel
  before it before touching memory and lets the reduce launch once its windows are done.

H100, CUDA-graph medians, same runs as the register-ring GEMV (perf-log, ``fp4_gemv_fp8_sm90``;
three runs): 18432 x 3072 15.1-15.7 us against 17.8-18.5, 8192 x 8192 17.5-17.9 against
19.9-20.2, 14336 x 4096 15.5-16.0 against 19.6-20.2, 3072 x 3072 5.1-5.6 against 7.0-7.3.
2-4 tokens (session 22, same runs as the ring, best split, us): 18432 x 3072 M = 2 16.5
against 17.8, M = 4 17.4 against 18.0; 8192 x 8192 M = 4 18.4 against 20.5; faster than the
ring at all six shapes measured (``fp4mm.ops.dispatch.GEMV_FP8_SM90_MAX_M``). A session-21
version with 16 block columns per token (``b230709``: B, the MMA's N side and the scale tile
grew with the tokens) was slower than the ring from two tokens on wide weights.

Requirements (``is_supported``; the ops use the register-ring GEMV otherwise): 1 to 4 tokens,
K % 256 == 0, contiguous operands with 16-byte aligned bases. N is free (rows past N are
clamped for loads and not stored).
"""

from __future__ import annotations

import functools

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from fp4mm.backend import is_hopper
from fp4mm.kernels.alpha import alpha_args
from fp4mm.kernels.fp4_decode import E2M1_E4M3_BYTES_PTX
from fp4mm.kernels.host import SM90_SMS, cdiv, next_power_of_2
from fp4mm.kernels.launch import launch

MAX_M = 4  # tokens (the ops' limit is fp4mm.ops.dispatch.GEMV_FP8_SM90_MAX_M)
WINDOW = 256  # K per window: 8 wgmmas of K 32, 16 scale blocks
ROWS = 64  # weight rows per CTA: one warpgroup, wgmma M
_ROWS = gl.constexpr(ROWS)  # the same, for the jit functions
# most windows a CTA may take: B holds 8 tiles of 512 bytes a window, the tile count rounded up
# to a power of two (32 windows: 128 KB of the 227 KB a CTA may use)
MAX_WINDOWS = 32
MIN_WINDOWS = 2  # windows a CTA of a one-wave grid takes at least, where K has them (choose_split)
SHORT_GRID_MAX_WINDOWS = 4  # windows a CTA takes at most on a grid under half a wave (choose_split)
_WAVE = 4 * SM90_SMS  # CTAs of 2-4 tokens resident at once: 4 an SM (109-112 registers), 528
# four tokens with the window run in halves, capped at HALVES_MAXNREG registers: 5 an SM, 660
_WAVE_HALVES = 5 * SM90_SMS
HALVES_MAXNREG = 96

# word ($2) -> $0: E4M3 bytes of its low nibbles, $1: of its high nibbles (the asm sees the
# word as many times as it has output bytes to pack, and reads the first)
_E4M3_BYTES = gl.constexpr(
    "{\n.reg .b32 lo, hi, v4;" + E2M1_E4M3_BYTES_PTX.replace("IN", "$2")
    + "\nmov.b32 $0, lo;\nmov.b32 $1, hi;\n}")


@gluon.jit
def _copies(v, n: gl.constexpr):
    """``n`` (4 or 8) copies of ``v`` along a new last axis: one asm instance packs n bytes."""
    v2 = gl.join(v, v)
    v4 = gl.join(v2, v2)
    if n == 4:
        return v4.reshape(v.shape + [4])
    else:
        return gl.join(v4, v4).reshape(v.shape + [8])


@gluon.jit
def _split8(v):
    """[R, C, 8] -> its 8 slices [R, C] along the last axis, in index order."""
    R: gl.constexpr = v.shape[0]
    C: gl.constexpr = v.shape[1]
    a, b = gl.split(v.reshape([R, C, 2, 2, 2]))  # index bit 0
    a0, a1 = gl.split(a)  # bit 1
    b0, b1 = gl.split(b)
    s0, s4 = gl.split(a0)  # bit 2
    s2, s6 = gl.split(a1)
    s1, s5 = gl.split(b0)
    s3, s7 = gl.split(b1)
    return s0, s1, s2, s3, s4, s5, s6, s7


@gluon.jit
def _col_token(col, T: gl.constexpr):
    """Token of accumulator column ``col`` (``_block`` gives its block)."""
    if T == 1:
        return col * 0
    elif T == 2:
        return col // 8
    else:
        return col % 2 + 2 * (col // 8)


@gluon.jit
def _block(col, a, T: gl.constexpr):
    """Window block (0-15) of column ``col`` of accumulator ``a`` (T accumulators a window).
    Lane ``c`` of a quad holds columns with ``(col % 8) // 2 == c``, so it only ever needs the
    weight scales of blocks ``8 h + 2 c + t'`` (h, t' in 0/1), whatever T is."""
    c = (col % 8) // 2
    if T == 1:
        return col
    elif T == 2:
        return 8 * a + 2 * c + col % 2
    else:
        return 8 * (a // 2) + 2 * c + a % 2


@gluon.jit
def _build_b(xw_ptr, M, KW, win0, WINS: gl.constexpr, TP: gl.constexpr, T: gl.constexpr):
    """This CTA's B in shared memory: tile ``8 w + 4 h + t`` ([16 columns, 32 K slots] E4M3)
    feeds wgmma ``4 h + t`` of window ``w``, which adds into accumulator ``a(h, t)`` (0 for one
    token, h for two, ``2 h + t // 2`` for four). Its slots ``16 lohi + 4 c + j`` of column col
    hold byte j of the low / high nibble bytes of word ``16 h + 4 c + t`` of the window of token
    ``_col_token(col)``, where c = (col % 8) // 2 and that word's block ``8 h + 2 c + t // 2`` is
    the column's (``_block``); every other byte is zero, and so are tokens past M. TP >= 8 WINS
    (a power of two) tiles are built; those past 8 WINS are zero and unused."""
    NW: gl.constexpr = gl.num_warps()
    NT: gl.constexpr = WINS * 8
    bw_l: gl.constexpr = gl.BlockedLayout([1, 1, 8], [2, 16, 1], [NW, 1, 1], [2, 1, 0])
    row_l: gl.constexpr = gl.SliceLayout(2, bw_l)  # a thread builds whole 32-byte column rows
    tile = gl.expand_dims(gl.arange(0, TP, layout=gl.SliceLayout(1, row_l)), 1)  # [TP, 1]
    col = gl.expand_dims(gl.arange(0, 16, layout=gl.SliceLayout(0, row_l)), 0)  # [1, 16]
    h = (tile // 4) % 2
    t = tile % 4
    if T == 1:
        # (the same columns as T > 1 would give, in the form that compiles to the fastest
        # one-token kernel measured: session 22, perf-log)
        off = col - 8 * h - t // 2  # 2 c for the one c whose block is this column
        has = (off >= 0) & (off < 8) & (off % 2 == 0) & (tile < NT)
        c = off // 2
        word = gl.load(xw_ptr + (win0 + tile // 8) * 32 + 16 * h + 4 * c + t, mask=has, other=0)
    else:
        c = (col % 8) // 2
        tok = _col_token(col, T)
        if T == 2:
            has = (col % 2 == t // 2) & (tile < NT) & (tok < M)
        else:
            has = (tile < NT) & (tok < M)
        word = gl.load(xw_ptr + tok * KW + (win0 + tile // 8) * 32 + 16 * h + 4 * c + t,
                       mask=has, other=0)
    lo, hi = gl.inline_asm_elementwise(_E4M3_BYTES, "=r,=r,r", [word],
                                       dtype=(gl.int32, gl.int32), is_pure=True, pack=1)
    g8 = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, bw_l)))
    g8 = gl.expand_dims(gl.expand_dims(g8, 0), 1)  # [1, 1, 8]: 4-byte group of the slots
    c3 = gl.expand_dims(c, 2)
    words = gl.where(g8 == c3, gl.expand_dims(lo, 2),
                     gl.where(g8 == c3 + 4, gl.expand_dims(hi, 2), 0))  # [TP, 16, 8]
    b = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r,r,r,r", [_copies(words, 4)],
                                  dtype=gl.int8, is_pure=True, pack=4)  # [TP, 16, 8, 4]
    b = b.reshape([TP * 16, 32]).to(gl.float8e4nv, bitcast=True)
    # 32-byte rows with the 32-byte swizzle: each 16-row tile of the 2-D buffer is laid out as a
    # [16, 32] tile on its own, so a 3-D view indexes tiles
    layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=8)
    flat = gl.allocate_shared_memory(gl.float8e4nv, [TP * 16, 32], layout, b)
    fence_async_shared()
    return flat._reinterpret(gl.float8e4nv, [TP, 16, 32], layout)


@gluon.jit
def _mma(a, b_smem, tile, acc, use_acc: gl.constexpr, a_l: gl.constexpr):
    """One async ``m64n16k32`` E4M3 wgmma: A tile ``a`` (its layout converts to ``a_l`` without
    moving data) times B tile ``tile`` of ``b_smem``."""
    return warpgroup_mma(gl.convert_layout(a, a_l, assert_trivial=True),
                         b_smem.index(tile).permute((1, 0)), acc, use_acc=use_acc,
                         is_async=True)


@gluon.jit
def _mma2(a0, a1, b_smem, tile, acc, use_acc: gl.constexpr, a_l: gl.constexpr):
    """Two chained wgmmas: ``a0`` x B tile ``tile``, then ``a1`` x tile ``tile + 1`` added on
    (``use_acc``: the first adds onto ``acc`` too, else it starts a fresh sum)."""
    d = _mma(a0, b_smem, tile, acc, use_acc, a_l)
    return _mma(a1, b_smem, tile + 1, d, True, a_l)


@gluon.jit
def _x_scales(xs_ptr, M, KB, win0, WINS: gl.constexpr, T: gl.constexpr):
    """Shared [>= WINS T, 16] fp32 table of x's scales for T > 1 tokens: row ``T w + a``, column
    col holds ``e4m3(x_scale) * 2^12`` (2^12 undoes the two 2^-6 of the codes) of token
    ``_col_token(col)`` and block ``_block(col, a)`` of window w, zero for tokens past M."""
    NW: gl.constexpr = gl.num_warps()
    R: gl.constexpr = triton.next_power_of_2(WINS * T)
    t_l: gl.constexpr = gl.BlockedLayout([1, 1], [2, 16], [NW, 1], [1, 0])
    row = gl.expand_dims(gl.arange(0, R, layout=gl.SliceLayout(1, t_l)), 1)  # [R, 1]
    col = gl.expand_dims(gl.arange(0, 16, layout=gl.SliceLayout(0, t_l)), 0)  # [1, 16]
    blk = _block(col, row % T, T)
    tok = _col_token(col, T)
    sx = gl.load(xs_ptr + tok * KB + (win0 + row // T) * 16 + blk,
                 mask=(row < WINS * T) & (tok < M), other=0)
    sx = sx.to(gl.float8e4nv, bitcast=True).to(gl.float32) * 4096.0
    layout: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
    flat = gl.allocate_shared_memory(gl.float32, [R, 16], layout, sx)
    return flat._reinterpret(gl.float32, [R, 1, 16], layout)  # .index(row): a [1, 16] row


@gluon.jit
def _w_scales(sw, a: gl.constexpr, T: gl.constexpr):
    """[64, 16] weight scales of accumulator ``a`` (of T) from the window's ``sw`` [64, 16]
    (column = block): lane c's columns of every accumulator read its own blocks, so these are
    register moves (checked at compile time)."""
    R: gl.constexpr = sw.shape[0]
    if T == 2:
        q0, q1 = gl.split(sw.reshape([R, 2, 8]).permute((0, 2, 1)))  # [R, 2 c + t'] for h
        if a == 0:
            q = q0
        else:
            q = q1
        e = gl.join(q, q).permute((0, 2, 1)).reshape([R, 16])  # col = 8 tok + 2 c + t'
    else:
        p0, p1 = gl.split(sw.reshape([R, 2, 4, 2]))  # [R, h, c] for t'
        if a % 2 == 0:
            p = p0
        else:
            p = p1
        q0, q1 = gl.split(p.permute((0, 2, 1)))  # [R, c] for h
        if a // 2 == 0:
            q = q0
        else:
            q = q1
        e = gl.join(q, q)  # col = 8 (tok // 2) + 2 c + tok % 2:
        e = gl.join(e, e).permute((0, 3, 1, 2)).reshape([R, 16])
    return gl.convert_layout(e, sw.type.layout, assert_trivial=True)


@gluon.jit
def _scale(sw, a: gl.constexpr, i, sx_smem, T: gl.constexpr):
    """The [64, 16] scales of accumulator ``a`` of window ``i``."""
    return _w_scales(sw, a, T) * sx_smem.index(i * T + a).load(sw.type.layout)


@gluon.jit
def _window(acc, words, i, ws_ptr, s_rows, xs_ptr, xs0, sx_smem, cols, b_smem,
            a_l: gl.constexpr, T: gl.constexpr, HALVES: gl.constexpr = False):
    """Window ``i``: the [64, 32] weight ``words`` -> 8 E4M3 A tiles, 8 wgmmas into T fresh
    accumulators of block sums, scaled into ``acc`` [64, 16]. HALVES (T = 4): the first 4
    wgmmas are waited for and scaled before the last 4 are issued (half the A tiles and
    accumulators live at a time)."""
    R: gl.constexpr = words.shape[0]
    sw = gl.load(ws_ptr + s_rows + gl.expand_dims(cols, 0) + i * 16).to(gl.float8e4nv,
                                                                       bitcast=True)
    if T < 4:
        sw = sw.to(gl.float32)
    if T == 1:
        sx = gl.load(xs_ptr + xs0 + i * 16 + cols).to(gl.float8e4nv, bitcast=True)
        sc0 = sw * gl.expand_dims(sx.to(gl.float32) * 4096.0, 0)  # 2^12: codes are * 2^-6
    elif T == 2:
        sc0 = _scale(sw, 0, i, sx_smem, T)
    v = gl.inline_asm_elementwise(_E4M3_BYTES, "=r,=r" + ",r" * 8, [_copies(words, 8)],
                                  dtype=gl.int8, is_pure=True, pack=8)
    # [R, word 16 h + 4 c + t, lohi j] -> 8 tiles (h, t) of [R, K slot 16 lohi + 4 c + j]
    v = v.reshape([R, 2, 4, 4, 2, 4]).permute((0, 4, 2, 5, 1, 3)).reshape([R, 32, 8])
    s0, s1, s2, s3, s4, s5, s6, s7 = _split8(v.to(gl.float8e4nv, bitcast=True))
    base = i * 8
    # (the 8-bit A tiles cannot be deps of the wait in Triton 3.6; nothing writes their
    # registers before it, and the compile test checks ptxas kept the wgmmas pipelined)
    if T == 1:
        d = _mma2(s0, s1, b_smem, base, acc, False, a_l)
        d = _mma2(s2, s3, b_smem, base + 2, d, True, a_l)
        d = _mma2(s4, s5, b_smem, base + 4, d, True, a_l)
        d = _mma2(s6, s7, b_smem, base + 6, d, True, a_l)
        d = warpgroup_mma_wait(0, deps=[d])
        acc = acc + d * sc0
    elif T == 2:
        sc1 = _scale(sw, 1, i, sx_smem, T)
        d0 = _mma2(s0, s1, b_smem, base, acc, False, a_l)
        d0 = _mma2(s2, s3, b_smem, base + 2, d0, True, a_l)
        d1 = _mma2(s4, s5, b_smem, base + 4, acc, False, a_l)
        d1 = _mma2(s6, s7, b_smem, base + 6, d1, True, a_l)
        d0, d1 = warpgroup_mma_wait(0, deps=[d0, d1])
        acc = acc + d0 * sc0 + d1 * sc1
    elif HALVES:
        d0 = _mma2(s0, s1, b_smem, base, acc, False, a_l)
        d1 = _mma2(s2, s3, b_smem, base + 2, acc, False, a_l)
        d0, d1 = warpgroup_mma_wait(0, deps=[d0, d1])
        swf = sw.to(gl.float32)
        acc = acc + d0 * _scale(swf, 0, i, sx_smem, T) + d1 * _scale(swf, 1, i, sx_smem, T)
        d2 = _mma2(s4, s5, b_smem, base + 4, acc, False, a_l)
        d3 = _mma2(s6, s7, b_smem, base + 6, acc, False, a_l)
        d2, d3 = warpgroup_mma_wait(0, deps=[d2, d3])
        acc = acc + d2 * _scale(swf, 2, i, sx_smem, T) + d3 * _scale(swf, 3, i, sx_smem, T)
    else:
        d0 = _mma2(s0, s1, b_smem, base, acc, False, a_l)
        d1 = _mma2(s2, s3, b_smem, base + 2, acc, False, a_l)
        d2 = _mma2(s4, s5, b_smem, base + 4, acc, False, a_l)
        d3 = _mma2(s6, s7, b_smem, base + 6, acc, False, a_l)
        d0, d1, d2, d3 = warpgroup_mma_wait(0, deps=[d0, d1, d2, d3])
        # the scales after the wait: 32 fewer registers live across it
        sw = sw.to(gl.float32)
        acc = acc + d0 * _scale(sw, 0, i, sx_smem, T) + d1 * _scale(sw, 1, i, sx_smem, T)
        acc = acc + d2 * _scale(sw, 2, i, sx_smem, T) + d3 * _scale(sw, 3, i, sx_smem, T)
    return acc


@gluon.jit
def _fp4_gemv_fp8_sm90_kernel(w_ptr, ws_ptr, xw_ptr, xs_ptr, out_ptr, M, N, KB, KW, alpha,
                              alpha_ptr, WINS: gl.constexpr, TP: gl.constexpr, T: gl.constexpr,
                              PARTIAL: gl.constexpr, ALPHA_PTR: gl.constexpr,
                              HALVES: gl.constexpr = False):
    """64 weight rows x WINS windows of 256 K x M <= T tokens per CTA (grid: row blocks x
    splits). w_ptr int32 ``[N, K/8]`` code words; ws_ptr uint8 ``[N, K/16]``; xw_ptr int32
    ``[M, K/8]``; xs_ptr uint8 ``[M, K/16]``; KB = K/16, KW = K/8. PARTIAL: fp32 partials
    ``[splits, M, N]``, else ``alpha * y`` in out's dtype (contiguous ``[M, N]``)."""
    gl.static_assert(gl.num_warps() == 4, "one warpgroup: launch with num_warps=4")
    gl.static_assert((T == 1) | (T == 2) | (T == 4), "T: 1, 2 or 4 tokens")
    # PDL: x (and alpha) may come from the kernel before; wait for it before any memory access
    gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                              is_pure=False, pack=1)
    row0 = gl.program_id(0) * _ROWS
    win0 = gl.program_id(1) * WINS
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, 16, 32])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    # one window's words [64 rows, 32]: word 16 h + 4 c + t of a row to lane c (the A
    # fragment's K group), registers t (one 16-byte load), h and row + 8, as a_l holds them
    w_l: gl.constexpr = gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 16], [8, 0]],
        lane_bases=[[0, 4], [0, 8], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16, 0], [32, 0]], block_bases=[], shape=[_ROWS, 32])
    rows_w = gl.minimum(row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, w_l)), N - 1)
    w_offs = (gl.expand_dims(rows_w, 1).to(gl.int64) * KW
              + gl.expand_dims(gl.arange(0, 32, layout=gl.SliceLayout(0, w_l)), 0) + win0 * 32)
    # the words are read once: evict-first (L1 and L2; H100, perf-log session 25: 8-10% faster
    # at 1-4 tokens); requested before B is built, whose build hides their latency
    words = gl.load(w_ptr + w_offs, eviction_policy="evict_first")
    b_smem = _build_b(xw_ptr, M, KW, win0, WINS, TP, T)
    if T == 1:
        sx_smem = b_smem  # (unused: one token reads its scales from x_scales)
    else:
        sx_smem = _x_scales(xs_ptr, M, KB, win0, WINS, T)

    rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, mma))
    cols = gl.arange(0, 16, layout=gl.SliceLayout(0, mma))
    s_rows = gl.expand_dims(gl.minimum(rows, N - 1), 1).to(gl.int64) * KB + win0 * 16
    acc = gl.zeros([_ROWS, 16], gl.float32, mma)
    for i in range(WINS):
        more = w_offs * 0 + i + 1 < WINS
        words_next = gl.load(w_ptr + w_offs + (i + 1) * 32, mask=more,
                             eviction_policy="evict_first")
        acc = _window(acc, words, i, ws_ptr, s_rows, xs_ptr, win0 * 16, sx_smem, cols, b_smem,
                      a_l, T, HALVES)
        words = words_next
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [],
                              dtype=gl.int32, is_pure=False, pack=1)
    if ALPHA_PTR:
        alpha = alpha * gl.load(alpha_ptr)
    if T == 1:
        y = gl.sum(acc, axis=1)
        if PARTIAL:
            gl.store(out_ptr + gl.program_id(1) * N + rows, y, mask=rows < N)
        else:
            gl.store(out_ptr + rows, (y * alpha).to(out_ptr.dtype.element_ty), mask=rows < N)
    else:
        # column col of acc belongs to token _col_token(col): T = 2 col // 8, T = 4 col % 2 +
        # 2 (col // 8); the sum over its blocks (c = (col % 8) // 2) leaves [64 rows, T tokens]
        if T == 2:
            y = gl.sum(acc.reshape([_ROWS, 2, 8]), axis=2)
        else:
            y = gl.sum(acc.reshape([_ROWS, 2, 4, 2]), axis=2).reshape([_ROWS, 4])
        y_rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, y.type.layout))
        y_toks = gl.arange(0, T, layout=gl.SliceLayout(0, y.type.layout))
        live = gl.expand_dims(y_rows < N, 1) & gl.expand_dims(y_toks < M, 0)
        offs = gl.expand_dims(y_toks, 0) * N + gl.expand_dims(y_rows, 1)
        if PARTIAL:
            gl.store(out_ptr + gl.program_id(1) * M * N + offs, y, mask=live)
        else:
            gl.store(out_ptr + offs, (y * alpha).to(out_ptr.dtype.element_ty), mask=live)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------
def is_supported(device, M: int, K: int, *tensors: torch.Tensor) -> bool:
    """True where this kernel applies: Hopper, 1 to MAX_M tokens, K % 256 == 0, every operand
    contiguous with a 16-byte aligned base."""
    return (is_hopper(device) and 1 <= M <= MAX_M and K % WINDOW == 0
            and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in tensors))


def tokens_per_cta(M: int) -> int:
    """T, the token columns a CTA is compiled for (1, 2 or 4; tokens past M are zero)."""
    return 1 if M == 1 else 2 if M == 2 else 4


def uses_halves(N: int, M: int, split: int) -> bool:
    """Whether four-token CTAs run their windows in halves (``HALVES``: each half's 4 wgmmas
    waited for and scaled before the next is issued; 96 registers instead of 112, so 5 CTAs an
    SM): where that puts the split grid in one wave and 4 CTAs an SM would not. H100
    (bench/results/2026-11-27-gemv-fp8-halves-h100.json, four tokens, us): 18432 x 3072 split 2
    (576 CTAs) 16.60 against 17.48 for the best split before (3); where 4 CTAs an SM already
    hold the grid, or neither count does, halves are slower (8192 x 8192 split 4 18.78 vs
    18.08, 28672 x 4096 split 2 32.75 vs 29.80)."""
    ctas = cdiv(N, ROWS) * split
    return tokens_per_cta(M) == 4 and _WAVE < ctas <= _WAVE_HALVES


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def choose_split(N: int, K: int, M: int = 1) -> int:
    """K slices (grid axis 1): the smallest divisor of the window count that leaves at most 8
    windows a CTA and at least 176 CTAs (4/3 per SM of an H100), else the largest divisor. For
    2-4 tokens (109-112 registers, 4 CTAs an SM) also: one wave of 528 CTAs at most, or a last wave
    at least half full.
    Measured on an H100 (graph medians, every split). One token, eight decode shapes
    (bench/results/2026-11-27-gemv-fp8-split-h100.json): the best split at 18432 x 3072 (2: 6
    windows, 576 CTAs), 8192 x 8192 (4), 14336 x 4096 (2), 28672 x 4096 (2) and 4096 x 4096
    (4); within 2-6% of it at 3072 x 3072, 5120 x 5120 and 4096 x 14336. 2-4 tokens, six shapes
    (...-gemv-fp8-tokens-h100.json): 18432 x 3072 split 2 leaves 48 CTAs for a second wave and
    takes 7-8% longer than split 3; with the wave term the rule picks the best split at five of
    six shapes and is within 3% at 3072 x 3072. Four tokens take the smallest split first where
    it fits one wave of CTAs in halves (:func:`uses_halves`): 18432 x 3072 split 2.

    Where that leaves one window a CTA on a grid of one wave at most, the largest split that
    leaves ``MIN_WINDOWS`` = 2 to 8 instead (session 39, H200,
    bench/results/2026-11-28-gemv-split-sweep-part{0,1}-h200.json, 18 layer shapes at 1, 2 and
    4 tokens): with one window a CTA has nothing to overlap its loads with. It changes the split
    where the weights have so few rows that the 1-window grid is the first to reach 176 CTAs or
    none does: 1024 x 4096 split 16 -> 8 1.17 / 1.36 / 1.33x at 1 / 2 / 4 tokens, 2048 x 2048
    split 8 -> 4 1.09 / 1.09 / 0.94x.
    The validation, old rule against new: ...-gemv-split-rules-ab-h200.json.

    And where the grid holds under half a wave (264 CTAs) of CTAs with more than
    ``SHORT_GRID_MAX_WINDOWS`` = 4 windows each, the smallest larger split that leaves 2-4 while
    the grid stays one wave: such a grid puts one or two long CTAs on an SM. The sweep's
    6144 x 4096 (split 2: 192 CTAs of 8 windows) took 7.48 us at split 4 against 8.66; old rule
    against new at the 17 shapes it changes among N = 1024-10240, K = 2048-27648
    (``scripts/gpu_gemv_split_rules_ab.py --short-grid``, ...-gemv-short-grid-ab-h200.json, 1, 2
    and 4 tokens): faster at all 51 points, 1.00-1.22x (median 1.10x): 4096 x 8192 split 4 -> 8
    1.13-1.22x, 3072 x 8192 1.13-1.20x, 6144 x 4096 split 2 -> 4 1.11-1.14x, 7168 x 4096
    1.13x."""
    windows = K // WINDOW
    blocks = cdiv(N, ROWS)
    divisors = [s for s in range(1, windows + 1) if windows % s == 0]
    fit = [s for s in divisors if windows // s <= 8 and blocks * s >= 176]
    if fit and uses_halves(N, M, fit[0]):
        return fit[0]

    def fills(s: int) -> bool:
        ctas = blocks * s
        return M == 1 or ctas <= _WAVE or ctas % _WAVE == 0 or ctas % _WAVE >= _WAVE // 2
    split = next((s for s in fit if fills(s)), divisors[-1])
    if windows // split == 1 and blocks * split <= _WAVE:  # one window a CTA, one wave
        longer = [s for s in divisors if MIN_WINDOWS <= windows // s <= 8]
        split = longer[-1] if longer else split
    if blocks * split < _WAVE // 2 and windows // split > SHORT_GRID_MAX_WINDOWS:
        # under half a wave of long CTAs: more, shorter ones while the grid stays one wave
        wider = [s for s in divisors if s > split and blocks * s <= _WAVE
                 and MIN_WINDOWS <= windows // s <= SHORT_GRID_MAX_WINDOWS]
        split = wider[0] if wider else split
    return split


def gemv_fp8_sm90(x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor,
                  w_scales: torch.Tensor, alpha, out: torch.Tensor, *,
                  split: int | None = None) -> None:
    """``out = alpha * x @ W^T`` (written in place) for 1 to 4 NVFP4 tokens and NVFP4 weights.

    Args:
        x_q: uint8 ``(M, K/2)`` E2M1 codes, M <= MAX_M; x_scales: uint8 / float8_e4m3fn
            ``(M, K/16)``.
        w_q: uint8 ``(N, K/2)`` codes; w_scales: uint8 / float8_e4m3fn ``(N, K/16)``. Both
            operands in the same nibble order (either: the product does not depend on it).
        alpha: fp32 factor: a float or a one-element float32 device tensor
            (``fp4mm.kernels.alpha``).
        out: contiguous ``(M, N)`` fp16/bf16/fp32.
        split: K slices, a divisor of K / 256 leaving at most MAX_WINDOWS windows a slice
            (default :func:`choose_split`, which leaves at most 8).
    Raises ValueError for more than MAX_M tokens, K % 256 != 0 or an invalid split.
    The caller checks :func:`is_supported`; shapes and dtypes are validated by ``fp4mm.ops``.
    """
    N, K = w_q.shape[0], w_q.shape[1] * 2
    M = x_q.shape[0]
    if not 1 <= M <= MAX_M:
        raise ValueError(f"x_q: expected 1 to {MAX_M} rows (tokens), got {M}")
    windows = K // WINDOW
    if K % WINDOW:
        raise ValueError(f"w_q: expected K (2 * columns) a multiple of {WINDOW}, got {K}")
    split = choose_split(N, K, M) if split is None else split
    if split < 1 or windows % split:
        raise ValueError(f"split: expected a divisor of K / {WINDOW} = {windows}, got {split}")
    if windows // split > MAX_WINDOWS:
        raise ValueError(f"split: {split} leaves {windows // split} windows of {WINDOW} K a CTA, "
                         f"more than its shared memory holds ({MAX_WINDOWS}); use a larger split")
    wins = windows // split
    dst = (torch.empty((split, M, N), dtype=torch.float32, device=out.device) if split > 1
           else out)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    halves = uses_halves(N, M, split)
    launch(_fp4_gemv_fp8_sm90_kernel, (cdiv(N, ROWS), split),
        w_q.view(torch.int32), w_scales.view(torch.uint8), x_q.view(torch.int32),
        x_scales.view(torch.uint8), dst, M, N, K // 16, K // 8, a, alpha_ptr,
        WINS=wins, TP=next_power_of_2(8 * wins), T=tokens_per_cta(M), PARTIAL=split > 1,
        ALPHA_PTR=alpha_on_device and split == 1, HALVES=halves, num_warps=4, launch_pdl=True,
        **({"maxnreg": HALVES_MAXNREG} if halves else {}))
    if split > 1:
        from fp4mm.kernels.fp4_gemv import reduce_partials

        reduce_partials(dst, out, alpha, pdl=True)


def nvfp4_mm_gemv_fp8_sm90(x_q, x_scales, w_q, w_scales, alpha, order: str, out) -> None:
    """W4A4 with the signature of the other GEMVs' ``nvfp4_mm_*`` launchers (``order`` is not
    needed: the product does not depend on it when both operands share it)."""
    gemv_fp8_sm90(x_q, x_scales, w_q, w_scales, alpha, out)
