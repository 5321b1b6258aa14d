"""Decode (small-M) GEMV for NVFP4 weights on Hopper, in Gluon: ``out[M, N] = alpha * x @ W^T``.

Why a second decode kernel (the plain-Triton ``fp4_gemv`` is its interpreter-tested twin): in
plain Triton the decoded weight tile goes through shared memory to reach the MMA, and the per-step
chain (load, shared-memory round trip, MMA wait) left the H100 at 1.1-1.4 TB/s. Here the weights go
from global memory straight into the registers of the ``mma.sync`` A operand, with no shared memory
anywhere, and each warp keeps several K steps of loads in flight.

Design, per warp (num_warps warps per CTA, each owning ROW_TILES x 16 weight rows; tokens padded
to NT = 8..64: up to 64 for W4A4, 32 for 16-bit x, 16 with 16-bit group scales, the largest
tiles each kind compiles without spills, see ``max_m``; groups of 16 up to 2). Measurements
behind each choice: docs/perf-log.md, "fp4_gemv_sm90".

- **K permutation.** A dot product does not care in which order K is summed, so the MMA's K
  slots need not be consecutive K. Each thread (lane ``4 g + c``) loads 16 contiguous bytes (32
  codes) per row and step, one 16-byte load, and those 32 values fill exactly its A-fragment slots
  of the step's 8 ``m16n8k16`` MMAs: slot ``16 j + 8 h + 2 c + l`` holds physical K
  ``32 c + 4 j + 2 h + l`` (step of 128). The same permutation is applied to x, so the products
  pair up as in ``x @ W^T``. In Gluon the permutation is a reshape/permute of the decoded tile
  whose layout conversion to the A operand is free (no data moves).
- **Decode** (inline PTX, one 32-bit word of 8 codes at a time): nibbles become E4M3 bytes with
  32-bit masks and shifts, one ``cvt.rn.f16x2.e4m3x2`` per pair, then one ``mul.f16x2`` per pair
  by the block scale (E4M3 * 2^6 in fp16). ``e2m1 * e4m3`` is exact in fp16 (at most 6 significant
  bits, in [2^-10, 2688]); a NaN scale byte gives NaN, as in the oracle.
- **Scales:** the thread's 32 values of a row span two 16-blocks, whose two scale bytes are one
  2-byte load.
- **Register ring**, unrolled: PREFETCH + 1 slots, slot j holds step i + j and is refilled right
  after it is consumed. Never rotate slots by copying: a copy of a register whose load is still
  in flight waits for that load, and the memory latency was exposed every step (run 2).
- **x one step ahead** (``x_ahead``, W4A4 at 33-64 tokens): x leaves the ring and is loaded
  one step before its use into the one slot that step reads, so one step's x is live instead
  of PREFETCH + 1 (x is L2-resident, and a 64-token step is about a thousand instructions per
  warp). Two row tiles then fit at 64 tokens (252 registers; 255 + 112-128 B spill with x in
  the ring): 12-24% faster there than the one-tile ring or the plain-Triton GEMV (H100).
- **Evict-first weight words.** Each word is read once, while a row's scale line serves 16
  steps and x is re-read by every warp: ``L1::evict_first`` on the words (by asm, where a
  thread's words are 16-byte runs; Triton's ``evict_first`` elsewhere) keeps those cached, 3-7%
  faster at M = 1-8 (H100, perf-log session 25; the scales evict-first instead: 4-9% slower).
- **Loads without masks:** rows past N and tokens past M are clamped into the tensors (their
  outputs are never stored), and each split runs whole ring turns, so no zero-fill instructions
  (a masked path remains for step counts that are not a multiple of the ring).
- **Row tiles:** with ROW_TILES = 2 a warp's two 16-row MMA tiles share one x operand (half the
  x traffic and, for W4A4, half the x decode per weight byte).
- **16-bit group scales** (``w4a16_mm``) must scale exact fp32 group sums (``e2m1 * scale``
  can need 13 bits). Three forms, by how many tokens x groups must fit 8 MMA columns:
  - *groups as MMA columns* (``group_cols=128``; groups of 16, 32 and 64 where tokens x
    groups per step fit 8 columns, 16 for groups of 16): the plain K permutation above, and B
    column ``n`` is token ``n // G`` with x zeroed outside group ``n % G`` (G groups a step).
    Each accumulator column then sums one group, one FMA a column scales it, and the epilogue
    adds a token's G columns. Same loads and one MMA chain a step as NVFP4, no scale multiply
    in the decode: g32 M = 1 at 18432 x 3072 15.9 us against 19.4 for the chains (H100,
    session 26).
  - *the same per half step* (``group_cols=64``; groups of 32 at 3-4 tokens, 64 at 5-8): a
    permutation whose MMAs 0-3 hold the first 64 K and 4-7 the second (thread c: 8 contiguous
    bytes of each half), so a half holds half the groups and needs half the columns; two MMA
    chains a step, two 8-byte loads a row. g32 M = 4: 17.4 us against 20.3 for the chains.
  - *one MMA chain per group* (``group_cols=0``): the permutation of span 2
    (``_slot_to_phys``) puts each 32-group in one K quarter, so a thread holds one 4-byte word
    of every group (four loads a row and step) and each quarter's MMAs are scaled on their own.
    It serves the most tokens (up to 16) in a column tile, where a second tile would cost more.
- **W4A4:** x is NVFP4 too and is decoded in the kernel with the same PTX (it is tiny: tokens x
  128 per step). Both operands then skip the two ``prmt`` per word that restore element order:
  the same permutation of K on both sides (H100: 2-11% faster at M = 1-16). W4A16 moves
  16-bit x as int32 pairs (an asm move keeps each pair in its register); with bf16 x the
  weights decode straight to bf16 (byte tables indexed by ``prmt``,
  ``fp4_decode.E2M1_WORD_BF16_PTX``; exact, and 4-17% faster than converting fp16 to bf16).
- **Split-K** (grid axis 1): fp32 partials ``(splits, M, N)`` summed in a fixed order by
  ``fp4_gemv``'s reduce kernel (deterministic, no atomics). Both kernels then use programmatic
  dependent launch: each waits (``griddepcontrol.wait``) for the previous kernel before any
  memory access, so nothing changes in what it reads or writes, and the GEMV lets its reduce
  launch once its K loop is done, hiding most of the reduce's launch latency (H100: 4-8% at
  M = 1-16; with split 1 there is no reduce, and PDL measured -3% to +4%, so it is off).

Requirements (``is_supported``; the ops fall back to ``fp4_gemv`` otherwise): K % 128 == 0,
16-byte aligned rows and base pointers, contiguous operands, M <= ``max_m`` (the launcher
raises above it).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

from fp4mm.backend import is_hopper
from fp4mm.kernels.alpha import alpha_args
from fp4mm.kernels.fp4_decode import (
    BF16_PAIR_SELECTORS,
    E2M1_WORD_BF16_PTX,
    E2M1_WORD_PTX,
    as_16bit_pairs,
)
from fp4mm.kernels.host import SM90_SMS, cdiv, next_power_of_2
from fp4mm.kernels.launch import launch

KS = 128  # K per step (the smallest): 16 bytes per thread and row; 256: two 16-byte loads
_KS = gl.constexpr(KS)  # the same, for the jit functions

# One 32-bit word of 8 codes and an fp16x2 scale pair -> 8 fp16 e2m1 * scale as four fp16x2
# registers, ready for the MMA (pack=8: the asm sees the word and the scale eight times each, as
# $4..$11 and $12..$19, and writes $0..$3; 16-bit outputs packed in pairs by Triton, so no
# instruction is spent packing halves).
_DECODE_SCALED = (E2M1_WORD_PTX.replace("IN", "$4").replace("OUTPUT", """
mul.rn.f16x2 q0, q0, $12;
mul.rn.f16x2 q1, q1, $12;
mul.rn.f16x2 q2, q2, $12;
mul.rn.f16x2 q3, q3, $12;
""").replace("STORE", "mov.b32 $0, q0;\nmov.b32 $1, q1;\nmov.b32 $2, q2;\nmov.b32 $3, q3;"))
_DECODE_LOW = gl.constexpr(_DECODE_SCALED.replace("FIRST", "lo").replace("SECOND", "hi"))
_DECODE_HIGH = gl.constexpr(_DECODE_SCALED.replace("FIRST", "hi").replace("SECOND", "lo"))
# W4A4, where x and the weights go through the same decoder: the pairs in the order the hardware
# conversion yields them, (c0, c2), (c4, c6), (c1, c3), (c5, c7), without the two `prmt` that
# restore element order. Both operands are permuted alike within each word (one scale block),
# and a dot product does not care in which order K is summed.
_ELEMENT_ORDER = """prmt.b32 p0, FIRST, SECOND, 0x5140;
prmt.b32 p1, FIRST, SECOND, 0x7362;
mov.b32 {h0, h1}, p0;
mov.b32 {h2, h3}, p1;"""
assert _DECODE_SCALED.count(_ELEMENT_ORDER) == 1
_UNORDERED = _DECODE_SCALED.replace(_ELEMENT_ORDER,
                                    "mov.b32 {h0, h1}, FIRST;\nmov.b32 {h2, h3}, SECOND;")
_DECODE_LOW_UNORDERED = gl.constexpr(_UNORDERED.replace("FIRST", "lo").replace("SECOND", "hi"))
_DECODE_HIGH_UNORDERED = gl.constexpr(_UNORDERED.replace("FIRST", "hi").replace("SECOND", "lo"))
# The same without a scale (16-bit group scales multiply the fp32 group sums instead): 8 codes ->
# four fp16x2 registers of ``e2m1 * 2^-6`` (the word is $4..$11).
_CODES = (E2M1_WORD_PTX.replace("IN", "$4").replace("OUTPUT", "")
          .replace("STORE", "mov.b32 $0, q0;\nmov.b32 $1, q1;\nmov.b32 $2, q2;\nmov.b32 $3, q3;"))
_CODES_LOW = gl.constexpr(_CODES.replace("FIRST", "lo").replace("SECOND", "hi"))
_CODES_HIGH = gl.constexpr(_CODES.replace("FIRST", "hi").replace("SECOND", "lo"))
# bf16 operands (bf16 x): the same two decoders straight to bf16 (exact ``e2m1``, and the
# scale as exact bf16 ``e4m3``), so no fp16 -> bf16 conversion per pair.
_STORE4 = "mov.b32 $0, q0;\nmov.b32 $1, q1;\nmov.b32 $2, q2;\nmov.b32 $3, q3;"
_SCALE4 = """
mul.rn.bf16x2 q0, q0, $12;
mul.rn.bf16x2 q1, q1, $12;
mul.rn.bf16x2 q2, q2, $12;
mul.rn.bf16x2 q3, q3, $12;
"""


def _bf16_decoder(order: str, scaled: bool) -> str:
    p01, p23 = BF16_PAIR_SELECTORS[order]
    return (E2M1_WORD_BF16_PTX.replace("IN", "$4").replace("P01", p01).replace("P23", p23)
            .replace("OUTPUT", _SCALE4 if scaled else "").replace("STORE", _STORE4))


_DECODE_BF16_LOW = gl.constexpr(_bf16_decoder("low_first", True))
_DECODE_BF16_HIGH = gl.constexpr(_bf16_decoder("high_first", True))
_CODES_BF16_LOW = gl.constexpr(_bf16_decoder("low_first", False))
_CODES_BF16_HIGH = gl.constexpr(_bf16_decoder("high_first", False))
# Two E4M3 scale bytes ($2, b16) -> bf16x2 (s0, s0) and (s1, s1), exact.
_SCALE_PAIR_BF16 = gl.constexpr("""
{
.reg .b32 f;
.reg .b16 f0, f1;
.reg .f32 a, b;
cvt.rn.f16x2.e4m3x2 f, $2;
mov.b32 {f0, f1}, f;
cvt.f32.f16 a, f0;
cvt.f32.f16 b, f1;
cvt.rn.bf16x2.f32 $0, a, a;
cvt.rn.bf16x2.f32 $1, b, b;
}
""")
# Fire-and-forget prefetch of one weight chunk into L2 (no register, nothing to wait for).
_L2_PREFETCH = gl.constexpr("prefetch.global.L2 [$1];\nmov.u32 $0, 0;")
# Two E4M3 scale bytes ($2, b16) -> fp16x2 (s0 * 64, s0 * 64) and (s1 * 64, s1 * 64).
_SCALE_PAIR = gl.constexpr("""
{
.reg .b32 f, k;
cvt.rn.f16x2.e4m3x2 f, $2;
mov.b32 k, 0x54005400;
mul.rn.f16x2 f, f, k;
prmt.b32 $0, f, f, 0x1010;
prmt.b32 $1, f, f, 0x3232;
}
""")


# ----------------------------------------------------------------------------------------------
# Layouts (compile time)
# ----------------------------------------------------------------------------------------------
@gluon.constexpr_function
def _slot_to_phys(k: int, ks: int = KS, span: int = 0) -> int:
    """MMA K slot -> physical K within a step of ``ks`` (a bit permutation, so linear over
    GF(2)): slot ``16 j + 8 h + 2 c + l`` holds physical ``(ks / 4) c + 4 j + 2 h + l`` (each
    thread c one contiguous run of the step). ``span`` (ks = 128 only; 0: the plain form):
    the MMAs ``j`` of one block of ``span`` (2 or 4) hold exactly the block's ``16 span``
    physical K, thread c its contiguous quarter: physical ``16 span (j // span) + 4 span c +
    4 (j % span) + 2 h + l``. Span 2 puts each 32-group in one MMA pair (thread c: word c of
    it), span 4 each 64-K half in four MMAs (thread c: words 2c, 2c + 1 of it)."""
    lo, c, h, j = k & 1, (k >> 1) & 3, (k >> 3) & 1, k >> 4
    if span:
        return lo | h << 1 | (j % span) << 2 | c * 4 * span | (j // span) * 16 * span
    return lo | h << 1 | j << 2 | c * (ks // 4)


@gluon.constexpr_function
def _packed(regs, lanes, warps, shape, shift):
    """Drop the register bases of the low ``shift`` K bits (they become one packed element) and
    shift the others: the layout of the packed tensor. Register bases along K go first, so each
    thread's packed elements are contiguous (one vector load)."""
    low = (1 << shift) - 1
    dropped = [b for b in regs if b[1] & low]
    assert all(b[0] == 0 and b[1] & (b[1] - 1) == 0 for b in dropped), regs
    assert all(not (b[1] & low) for b in lanes + warps), (lanes, warps)
    keep = [[b[0], b[1] >> shift] for b in regs if not b[1] & low]
    keep = sorted([b for b in keep if b[1]], key=lambda b: b[1]) + [b for b in keep if not b[1]]
    sh = lambda bs: [[b[0], b[1] >> shift] for b in bs]  # noqa: E731
    return gl.DistributedLinearLayout(keep, sh(lanes), sh(warps), [], [shape[0], shape[1] >> shift])


@gluon.constexpr_function
def _operand_layouts(ll, transposed, span=0):
    """For a slot-ordered fp16 operand (``ll``: [rows, KS], or [KS, rows] when ``transposed``):
    the layouts of its int32 code words [rows, KS / 8], int16 scale pairs [rows, KS / 32] and
    int32 pairs of 16-bit values [rows, KS / 2], all in physical K order. ``span``: a blocked
    permutation for 16-bit group scales (``_slot_to_phys``; no E4M3 scale pairs: their layout
    is None)."""
    if transposed:
        swap = lambda bs: [[b[1], b[0]] for b in bs]  # noqa: E731
        regs, lanes, warps = swap(ll.reg_bases), swap(ll.lane_bases), swap(ll.warp_bases)
        shape = [ll.shape[1], ll.shape[0]]
    else:
        regs, lanes, warps, shape = ll.reg_bases, ll.lane_bases, ll.warp_bases, list(ll.shape)
    phys = lambda bs: [[b[0], _slot_to_phys(b[1], shape[1], span)] for b in bs]  # noqa: E731
    regs, lanes, warps = phys(regs), phys(lanes), phys(warps)
    words = _packed(regs, lanes, warps, shape, 3)
    scales = None if span else _packed(regs, lanes, warps, shape, 5)
    pairs = _packed(regs, lanes, warps, shape, 1)
    return words, scales, pairs


# ----------------------------------------------------------------------------------------------
# Kernel
# ----------------------------------------------------------------------------------------------
@gluon.jit
def _join8(o0, o1, o2, o3, o4, o5, o6, o7):
    """Eight tensors -> one with a new last axis of 8, element i from o_i."""
    return gl.join(gl.join(gl.join(o0, o4), gl.join(o2, o6)),
                   gl.join(gl.join(o1, o5), gl.join(o3, o7)))


@gluon.jit
def _decode(words, pairs, HIGH_FIRST: gl.constexpr, ROWS: gl.constexpr, WORDS_L: gl.constexpr,
            KSTEP: gl.constexpr, DTYPE: gl.constexpr, UNORDERED: gl.constexpr = False):
    """int32 code words [ROWS, KS/8] and int16 scale pairs [ROWS, KS/32] (physical K order) ->
    ``e2m1 * e4m3`` [ROWS, KS] of DTYPE (fp16 or bf16, exact either way) in MMA slot order.
    UNORDERED (fp16, W4A4 only: both operands must take it): each word's eight values in the
    conversion's order (codes 0, 2, 4, 6, 1, 3, 5, 7) instead of element order."""
    s0, s1 = gl.inline_asm_elementwise(
        _SCALE_PAIR_BF16 if DTYPE == gl.bfloat16 else _SCALE_PAIR, "=r,=r,h", [pairs],
        dtype=(gl.int32, gl.int32), is_pure=True, pack=1)
    # word 4c + w of a thread uses the scale of 16-block 2c + w // 2: the inner join is the
    # w // 2 axis, the outer one (a copy) w % 2, and reshape flattens the last axis fastest
    sw = gl.join(gl.join(s0, s1), gl.join(s0, s1)).reshape([ROWS, KSTEP // 8])
    sw = gl.convert_layout(sw, WORDS_L)
    # eight copies of each word and scale along a new register axis: one asm instance per word
    w8 = _join8(words, words, words, words, words, words, words, words)
    s8 = _join8(sw, sw, sw, sw, sw, sw, sw, sw)
    if DTYPE == gl.bfloat16:
        v = gl.inline_asm_elementwise(_DECODE_BF16_HIGH if HIGH_FIRST else _DECODE_BF16_LOW,
                                      "=r,=r,=r,=r" + ",r" * 16, [w8, s8], dtype=gl.bfloat16,
                                      is_pure=True, pack=8)
    elif UNORDERED:
        v = gl.inline_asm_elementwise(_DECODE_HIGH_UNORDERED if HIGH_FIRST else
                                      _DECODE_LOW_UNORDERED, "=r,=r,=r,=r" + ",r" * 16, [w8, s8],
                                      dtype=gl.float16, is_pure=True, pack=8)
    else:
        v = gl.inline_asm_elementwise(_DECODE_HIGH if HIGH_FIRST else _DECODE_LOW,
                                      "=r,=r,=r,=r" + ",r" * 16, [w8, s8], dtype=gl.float16,
                                      is_pure=True, pack=8)
    return _slot_order(v, ROWS, KSTEP)


@gluon.jit
def _slot_order(v, ROWS: gl.constexpr, KSTEP: gl.constexpr):
    """[ROWS, KSTEP] in physical K order -> MMA slot order: physical (KSTEP / 4) c + 4 j + 2 h + l
    -> slot 16 j + 8 h + 2 c + l."""
    v = v.reshape([ROWS, 4, KSTEP // 16, 2, 2]).permute((0, 2, 3, 1, 4))
    return v.reshape([ROWS, KSTEP])


@gluon.jit
def _decode_codes(words, HIGH_FIRST: gl.constexpr, ROWS: gl.constexpr, DTYPE: gl.constexpr,
                  SPAN: gl.constexpr = 2):
    """int32 code words [ROWS, KS/8] -> fp16 ``e2m1 * 2^-6`` or bf16 ``e2m1`` [ROWS, KS] in MMA
    slot order of the permutation with this ``SPAN`` (``_slot_to_phys``; 0: the plain one)."""
    w8 = _join8(words, words, words, words, words, words, words, words)
    if DTYPE == gl.bfloat16:
        v = gl.inline_asm_elementwise(_CODES_BF16_HIGH if HIGH_FIRST else _CODES_BF16_LOW,
                                      "=r,=r,=r,=r" + ",r" * 8, [w8], dtype=gl.bfloat16,
                                      is_pure=True, pack=8)
    else:
        v = gl.inline_asm_elementwise(_CODES_HIGH if HIGH_FIRST else _CODES_LOW,
                                      "=r,=r,=r,=r" + ",r" * 8, [w8], dtype=gl.float16,
                                      is_pure=True, pack=8)
    return _span_slot_order(v, ROWS, SPAN)


@gluon.jit
def _span_slot_order(v, ROWS: gl.constexpr, SPAN: gl.constexpr):
    """[ROWS, KS] in physical K order -> MMA slot order of the permutation with this ``SPAN``:
    physical 16 SPAN q + 4 SPAN c + 4 jj + 2 h + l -> slot 16 SPAN q + 16 jj + 8 h + 2 c + l
    (0: the plain one, ``_slot_order``)."""
    if SPAN == 0:
        v = _slot_order(v, ROWS, _KS)
    else:
        v = v.reshape([ROWS, 8 // SPAN, 4, SPAN, 2, 2]).permute((0, 1, 3, 4, 2, 5))
        v = v.reshape([ROWS, _KS])
    return v


@gluon.jit
def _quarters(t):
    """[R, KS] (slot order, K last) -> its four [R, KS / 4] K quarters (a register split)."""
    R: gl.constexpr = t.shape[0]
    t = t.reshape([R, 4, _KS // 4]).permute((0, 2, 1)).reshape([R, _KS // 4, 2, 2])
    e, o = gl.split(t)  # quarter 2 a + b: b = 0 | 1
    t0, t2 = gl.split(e)
    t1, t3 = gl.split(o)
    return t0, t1, t2, t3


@gluon.jit
def _group_scale(sv, q: gl.constexpr, SDTYPE: gl.constexpr, UNIT: gl.constexpr):
    """Scale ``q`` of the 16-bit scales packed in ``sv`` (int16/32/64 per row) -> fp32 times
    UNIT (2^6 where the codes are decoded as ``e2m1 * 2^-6``, else 1)."""
    if sv.dtype == gl.int16:
        b = sv.to(SDTYPE, bitcast=True)
    else:
        b = ((sv >> (16 * q)) & 0xFFFF).to(gl.int16).to(SDTYPE, bitcast=True)
    return b.to(gl.float32) * UNIT


@gluon.constexpr_function
def _in_16_byte_runs(words_layout):
    """Whether a thread's int32 words in ``words_layout`` come 4 contiguous at a time (the two
    lowest register bases step K by one and two words): one 16-byte load each, aligned where
    rows are (``is_supported``)."""
    return [list(b) for b in words_layout.reg_bases[:2]] == [[0, 1], [0, 2]]


@gluon.jit
def _load_scales(ptrs, live, MASKED: gl.constexpr, W_GROUP: gl.constexpr, COLS_K: gl.constexpr):
    """A step's weight scales at ``ptrs``; with the groups as MMA columns per half step
    (COLS_K 64) both halves' (the second half's groups follow the first's), joined on a last
    axis of 2."""
    if COLS_K > 0 and COLS_K < _KS:
        if MASKED:
            sc = gl.join(gl.load(ptrs, mask=live, other=0),
                         gl.load(ptrs + COLS_K // W_GROUP, mask=live, other=0))
        else:
            sc = gl.join(gl.load(ptrs), gl.load(ptrs + COLS_K // W_GROUP))
    elif MASKED:
        sc = gl.load(ptrs, mask=live, other=0)
    else:
        sc = gl.load(ptrs)
    return sc


@gluon.jit
def _load_w(w_ptr, ws_ptr, w_offs, s_offs, i, live, MASKED: gl.constexpr, KSTEP: gl.constexpr,
            W_GROUP: gl.constexpr, RUNS16: gl.constexpr, COLS_K: gl.constexpr = 0):
    """The weight words and scales of K step ``i``. Rows are clamped into the tensor by the
    caller (their outputs are not stored), so only MASKED (steps that may lie past the end: zero
    codes and scales, which add exact zeros) needs a mask; an unmasked load needs no zero-fill
    instructions. W_GROUP > 0: ``ws_ptr`` holds one packed word of the step's 16-bit group scales
    per row (a group of W_GROUP >= 128 spans W_GROUP / 128 steps); with COLS_K (the groups as
    MMA columns) the 16-bit scales themselves, KS / W_GROUP per row and step (``s_offs`` picks
    each column's).
    The words are read once, so they load evict-first: ``L1::evict_first`` alone where they come
    in 16-byte runs (RUNS16, by asm: Triton's hint adds an L2 policy, 1-3% slower here), else
    Triton's ``evict_first``. H100 (perf-log, session 25): 3-7% faster at M = 1-8."""
    if W_GROUP == 0:
        s_step = i * (KSTEP // 32)
    elif COLS_K > 0:
        s_step = i * (_KS // W_GROUP)
    elif W_GROUP > _KS:
        s_step = i // (W_GROUP // _KS)
    else:
        s_step = i
    if MASKED:
        wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8), mask=live, other=0,
                     eviction_policy="evict_first")
    elif RUNS16:
        # pack=4: the asm gets a thread's 4 contiguous words (their pointers; the first
        # addresses all four)
        wd = gl.inline_asm_elementwise(
            "ld.global.L1::evict_first.v4.u32 {$0, $1, $2, $3}, [$4]; // $5 $6 $7",
            "=r,=r,=r,=r,l,l,l,l", [w_ptr + w_offs + i * (KSTEP // 8)], dtype=gl.int32,
            is_pure=True, pack=4)
    else:
        wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8), eviction_policy="evict_first")
    return wd, _load_scales(ws_ptr + s_offs + s_step, live, MASKED, W_GROUP, COLS_K)


@gluon.jit
def _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, i, live, X_FP4: gl.constexpr, MASKED: gl.constexpr,
            KSTEP: gl.constexpr):
    """The activations of K step ``i``: fp16/bf16 halves as int32 pairs, or NVFP4 words and
    scale pairs (the second value is a dummy for 16-bit x). Tokens are clamped by the caller;
    masked as in :func:`_load_w` (a zero x keeps a past-the-end step exact even where the clamped
    weights hold NaN)."""
    if X_FP4:
        if MASKED:
            xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 8), mask=live, other=0)
            xb = gl.load(xs_ptr + xb_offs + i * (KSTEP // 32), mask=live, other=0)
        else:
            xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 8))
            xb = gl.load(xs_ptr + xb_offs + i * (KSTEP // 32))
    else:
        if MASKED:
            xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 2), mask=live, other=0)
        else:
            xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 2))
        xb = xa
    return xa, xb


@gluon.jit
def _mma_step(acc, wd, sc, xa, xb, X_FP4: gl.constexpr, HIGH_FIRST: gl.constexpr,
              DTYPE: gl.constexpr, BN: gl.constexpr, NT: gl.constexpr, W_WORDS: gl.constexpr,
              X_WORDS: gl.constexpr, a_l: gl.constexpr, b_l: gl.constexpr,
              KSTEP: gl.constexpr):
    """Decode one K step's operands into MMA slot order and accumulate ``W x^T``."""
    if X_FP4:
        xv = _decode(xa, xb, HIGH_FIRST, NT, X_WORDS, KSTEP, DTYPE, True)
    else:
        xv = _slot_order(as_16bit_pairs(xa, DTYPE), NT, KSTEP)
    b = gl.convert_layout(xv.permute((1, 0)).to(DTYPE), b_l)
    a = gl.convert_layout(_decode(wd, sc, HIGH_FIRST, BN, W_WORDS, KSTEP, DTYPE, X_FP4), a_l)
    return mma_v2(a, b, acc)


@gluon.jit
def _mma_step_grouped(acc, wd, sc, xa, HIGH_FIRST: gl.constexpr, DTYPE: gl.constexpr,
                      SDTYPE: gl.constexpr, BN: gl.constexpr, NT: gl.constexpr,
                      W_GROUP: gl.constexpr, a_l: gl.constexpr, b_l: gl.constexpr):
    """One K step for 16-bit group scales (exact for any scale): the MMAs sum unscaled codes
    times x over one group at a time (exact products, fp32 sums), and each group sum is scaled
    in fp32. The grouped permutation puts 32-group q of the step in K quarter q."""
    xv = _span_slot_order(as_16bit_pairs(xa, DTYPE).reshape([NT, _KS]), NT, 2)
    w = _decode_codes(wd, HIGH_FIRST, BN, DTYPE, 2)
    UNIT: gl.constexpr = 64.0 if DTYPE == gl.float16 else 1.0
    zero = gl.zeros_like(acc)
    if W_GROUP >= _KS:  # one group (or part of one) per step
        d = mma_v2(gl.convert_layout(w, a_l), gl.convert_layout(xv.permute((1, 0)), b_l), zero)
        acc = acc + d * gl.expand_dims(_group_scale(sc, 0, SDTYPE, UNIT), 1)
    else:
        w0, w1, w2, w3 = _quarters(w)
        x0, x1, x2, x3 = _quarters(xv)
        b0 = gl.convert_layout(x0.permute((1, 0)), b_l)
        b1 = gl.convert_layout(x1.permute((1, 0)), b_l)
        b2 = gl.convert_layout(x2.permute((1, 0)), b_l)
        b3 = gl.convert_layout(x3.permute((1, 0)), b_l)
        if W_GROUP == 32:
            d = mma_v2(gl.convert_layout(w0, a_l), b0, zero)
            acc = acc + d * gl.expand_dims(_group_scale(sc, 0, SDTYPE, UNIT), 1)
            d = mma_v2(gl.convert_layout(w1, a_l), b1, zero)
            acc = acc + d * gl.expand_dims(_group_scale(sc, 1, SDTYPE, UNIT), 1)
            d = mma_v2(gl.convert_layout(w2, a_l), b2, zero)
            acc = acc + d * gl.expand_dims(_group_scale(sc, 2, SDTYPE, UNIT), 1)
            d = mma_v2(gl.convert_layout(w3, a_l), b3, zero)
            acc = acc + d * gl.expand_dims(_group_scale(sc, 3, SDTYPE, UNIT), 1)
        else:  # 64: quarters 0-1 and 2-3
            d = mma_v2(gl.convert_layout(w0, a_l), b0, zero)
            d = mma_v2(gl.convert_layout(w1, a_l), b1, d)
            acc = acc + d * gl.expand_dims(_group_scale(sc, 0, SDTYPE, UNIT), 1)
            d = mma_v2(gl.convert_layout(w2, a_l), b2, zero)
            d = mma_v2(gl.convert_layout(w3, a_l), b3, d)
            acc = acc + d * gl.expand_dims(_group_scale(sc, 1, SDTYPE, UNIT), 1)
    return acc


@gluon.jit
def _mma_step_group_cols(acc, wd, sc, xa, xmask, HIGH_FIRST: gl.constexpr, DTYPE: gl.constexpr,
                         BN: gl.constexpr, NT: gl.constexpr, a_l: gl.constexpr,
                         b_l: gl.constexpr, COLS_K: gl.constexpr):
    """One K step for 16-bit group scales below 128 with the groups as MMA columns, per block of
    COLS_K (128: the step, in the plain K permutation; 64: each half, in the permutation of span
    4). Column ``n`` of the B operand is token ``n // G`` masked to the K of the block's group
    ``n % G`` (``xmask``; G = COLS_K / W_GROUP groups a block), so each column of a block's MMA
    sums is one group's exact fp32 sum. They are scaled per column (``sc``: each column's group
    scale, [BN, NT] or, for halves, [BN, NT, 2]) and the epilogue adds a token's G columns."""
    UNIT: gl.constexpr = 64.0 if DTYPE == gl.float16 else 1.0
    SPAN: gl.constexpr = 0 if COLS_K == _KS else 4
    xv = _span_slot_order(as_16bit_pairs(gl.where(xmask, xa, 0), DTYPE), NT, SPAN)
    w = _decode_codes(wd, HIGH_FIRST, BN, DTYPE, SPAN)
    if COLS_K == _KS:
        acc = _scaled_mma(acc, w, xv, sc, UNIT, a_l, b_l)
    else:  # the two halves of the step (slots 0-63, 64-127), each its own MMA chain
        w0, w1 = gl.split(w.reshape([BN, 2, _KS // 2]).permute((0, 2, 1)))
        x0, x1 = gl.split(xv.reshape([NT, 2, _KS // 2]).permute((0, 2, 1)))
        s0, s1 = gl.split(sc)
        acc = _scaled_mma(acc, w0, x0, s0, UNIT, a_l, b_l)
        acc = _scaled_mma(acc, w1, x1, s1, UNIT, a_l, b_l)
    return acc


@gluon.jit
def _scaled_mma(acc, w, xv, sc, UNIT: gl.constexpr, a_l: gl.constexpr, b_l: gl.constexpr):
    """``acc + (w xv^T) * sc * UNIT``: one MMA chain from zero over the K of ``w`` [rows, K] and
    ``xv`` [columns, K] (slot order), each column's exact fp32 sum times its scale."""
    d = mma_v2(gl.convert_layout(w, a_l), gl.convert_layout(xv.permute((1, 0)), b_l),
               gl.zeros_like(acc))
    return acc + d * (gl.convert_layout(sc, acc.type.layout).to(gl.float32) * UNIT)


@gluon.jit
def _step(acc, wd, sc, xa, xb, X_FP4: gl.constexpr, HIGH_FIRST: gl.constexpr,
          DTYPE: gl.constexpr, SDTYPE: gl.constexpr, BN: gl.constexpr, NT: gl.constexpr,
          W_WORDS: gl.constexpr, X_WORDS: gl.constexpr, a_l: gl.constexpr, b_l: gl.constexpr,
          KSTEP: gl.constexpr, W_GROUP: gl.constexpr, COLS_K: gl.constexpr = 0,
          xmask=None):
    if W_GROUP == 0:
        return _mma_step(acc, wd, sc, xa, xb, X_FP4, HIGH_FIRST, DTYPE, BN, NT, W_WORDS,
                         X_WORDS, a_l, b_l, KSTEP)
    elif COLS_K > 0:
        return _mma_step_group_cols(acc, wd, sc, xa, xmask, HIGH_FIRST, DTYPE, BN, NT, a_l, b_l,
                                    COLS_K)
    else:
        return _mma_step_grouped(acc, wd, sc, xa, HIGH_FIRST, DTYPE, SDTYPE, BN, NT, W_GROUP,
                                 a_l, b_l)


@gluon.jit
def _fp4_gemv_sm90_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, out_ptr,
    M, N, STEPS, STEPS_SPLIT, alpha, alpha_ptr,
    stride_xm, stride_xsm, stride_wn, stride_wsn, stride_om,
    X_FP4: gl.constexpr, DTYPE: gl.constexpr, NT: gl.constexpr, HIGH_FIRST: gl.constexpr,
    PREFETCH: gl.constexpr, PARTIAL: gl.constexpr, L2_AHEAD: gl.constexpr,
    MASKED: gl.constexpr, ROW_TILES: gl.constexpr, KSTEP: gl.constexpr,
    W_GROUP: gl.constexpr = 0, SDTYPE: gl.constexpr = gl.float16, PDL: gl.constexpr = False,
    ALPHA_PTR: gl.constexpr = False, X_AHEAD: gl.constexpr = False,
    COLS_K: gl.constexpr = 0,
):
    """``out[m, n] = alpha * sum_k x[m, k] * W[n, k]`` over this program's K range.

    w: int32 (N, K/8) code words; ws: int16 (N, K/32) E4M3 scale pairs. x: X_FP4 -> int32
    (M, K/8) words + int16 (M, K/32) scale pairs, else fp16/bf16 (M, K) viewed as int32 pairs
    (M, K/2). Strides in elements of each (viewed) tensor. Grid (N / (16 ROW_TILES num_warps),
    splits); STEPS = K / KSTEP (K % KSTEP == 0); STEPS_SPLIT: steps per split (the last split may
    be shorter). MASKED: some split's step count
    is not a multiple of PREFETCH + 1, so ring slots past its end must load zeros.
    PARTIAL: write unscaled fp32 partials to ``out_ptr`` as (splits, M, N). X_AHEAD: x held one
    step ahead instead of in the ring (see the ring below).
    W_GROUP > 0 (16-bit x only, KSTEP = KS, no L2 prefetch): groupwise weights with SDTYPE
    scales per W_GROUP (32, 64 or a multiple of 128) along K; ws is the scale matrix viewed as
    one int16/32/64 word per row and step (int16 per W_GROUP / 128 steps for groups >= 128).
    COLS_K 128 or 64 (W_GROUP 16, 32 or 64; 64: W_GROUP 32 or 64): the groups of each COLS_K
    block as MMA columns (``_mma_step_group_cols``), NT columns of tokens x groups a block; ws
    is then the 16-bit scale matrix itself."""
    NW: gl.constexpr = gl.num_warps()
    BN: gl.constexpr = 16 * ROW_TILES * NW
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[NW, 1],
                                                  instr_shape=[16, 8])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    GROUPED: gl.constexpr = W_GROUP > 0
    gl.static_assert(not GROUPED or (KSTEP == _KS and L2_AHEAD == 0 and not X_FP4))
    gl.static_assert(COLS_K == 0 or ((W_GROUP == 32 or W_GROUP == 64
                                      or (W_GROUP == 16 and COLS_K == _KS))
                                     and NT >= COLS_K // W_GROUP))
    gl.static_assert(COLS_K == 0 or COLS_K == _KS or COLS_K == _KS // 2)
    # the K permutation: plain (span 0), or blocks of 2 or 4 MMAs (``_slot_to_phys``)
    SPAN: gl.constexpr = (0 if not GROUPED or COLS_K == _KS else (4 if COLS_K == _KS // 2
                                                                  else 2))
    WL: gl.constexpr = _operand_layouts(gl.to_linear_layout(a_l, [BN, KSTEP]), False, SPAN)
    XL: gl.constexpr = _operand_layouts(gl.to_linear_layout(b_l, [KSTEP, NT]), True, SPAN)
    W_WORDS: gl.constexpr = WL[0]
    X_WORDS: gl.constexpr = XL[0]
    X_SCALES: gl.constexpr = XL[1]
    X_PAIRS: gl.constexpr = XL[2]
    W_RUNS16: gl.constexpr = _in_16_byte_runs(W_WORDS)

    if PDL:  # launched early behind the previous kernel: wait for it before any memory access
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    i_begin = pid_k * STEPS_SPLIT
    i_end = gl.minimum(i_begin + STEPS_SPLIT, STEPS)
    # weight offsets (elements of the int32 / int16 views), physical K order; rows past N are
    # clamped to the last row (their outputs are not stored)
    rw = pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, W_WORDS))
    cw = gl.arange(0, KSTEP // 8, layout=gl.SliceLayout(0, W_WORDS))
    w_offs = gl.expand_dims(gl.minimum(rw, N - 1), 1) * stride_wn + gl.expand_dims(cw, 0)
    if COLS_K > 0:  # each accumulator column's group scale, in the accumulator's layout
        rs = gl.minimum(pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, mma)), N - 1)
        cols = gl.arange(0, NT, layout=gl.SliceLayout(0, mma))
        s_offs = gl.expand_dims(rs, 1) * stride_wsn + gl.expand_dims(cols % (COLS_K // W_GROUP),
                                                                     0)
        pf_ptrs = w_ptr  # no L2 prefetch
    elif GROUPED:  # one packed scale word per row, in the accumulator's row layout
        rs = gl.minimum(pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, mma)), N - 1)
        s_offs = rs * stride_wsn
        pf_ptrs = w_ptr  # no L2 prefetch
    else:
        W_SCALES: gl.constexpr = WL[1]
        rs = gl.minimum(pid_n * BN + gl.arange(0, BN, layout=gl.SliceLayout(1, W_SCALES)),
                        N - 1)
        cs = gl.arange(0, KSTEP // 32, layout=gl.SliceLayout(0, W_SCALES))
        s_offs = gl.expand_dims(rs, 1) * stride_wsn + gl.expand_dims(cs, 0)
        # L2 prefetch pointers: one per thread and row (the scale layout has exactly that);
        # rows and steps clamped into the matrix: never an address outside it
        pf_ptrs = w_ptr + gl.expand_dims(rs, 1) * stride_wn + gl.expand_dims(cs, 0) * 4
    # activation offsets: tokens are the rows of the transposed B operand
    if X_FP4:
        ta = gl.minimum(gl.arange(0, NT, layout=gl.SliceLayout(1, X_WORDS)), M - 1)
        xa_offs = gl.expand_dims(ta, 1) * stride_xm + gl.expand_dims(
            gl.arange(0, KSTEP // 8, layout=gl.SliceLayout(0, X_WORDS)), 0)
        tb = gl.minimum(gl.arange(0, NT, layout=gl.SliceLayout(1, X_SCALES)), M - 1)
        xb_offs = gl.expand_dims(tb, 1) * stride_xsm + gl.expand_dims(
            gl.arange(0, KSTEP // 32, layout=gl.SliceLayout(0, X_SCALES)), 0)
        xmask = None
    else:
        if COLS_K > 0:  # B column n: token n // G, masked to the K of its block's group n % G
            G: gl.constexpr = COLS_K // W_GROUP
            cx = gl.arange(0, NT, layout=gl.SliceLayout(1, X_PAIRS))
            px = gl.arange(0, KSTEP // 2, layout=gl.SliceLayout(0, X_PAIRS))  # physical K / 2
            ta = gl.minimum(cx // G, M - 1)
            xmask = (gl.expand_dims(cx % G, 1)
                     == gl.expand_dims((px % (COLS_K // 2)) // (W_GROUP // 2), 0))
        else:
            ta = gl.minimum(gl.arange(0, NT, layout=gl.SliceLayout(1, X_PAIRS)), M - 1)
            xmask = None
        xa_offs = gl.expand_dims(ta, 1) * stride_xm + gl.expand_dims(
            gl.arange(0, KSTEP // 2, layout=gl.SliceLayout(0, X_PAIRS)), 0)
        xb_offs = xa_offs

    acc = gl.zeros([BN, NT], gl.float32, mma)
    # Register ring of PREFETCH + 1 slots, unrolled so that no slot is ever copied: a register
    # copy of a load still in flight waits for it, which exposed the full memory latency every
    # step (run 2). Slot j holds step i + j; right after it is consumed it is refilled with step
    # i + j + U. Steps past the end load nothing (masked: zero codes, zero scales, zero x) and
    # add exact zeros, so the K range needs no tail code.
    # X_AHEAD: x is not in the ring but one step ahead, in the slot of the step that uses it
    # next (slot j's refill loads step i + j + 1's x into slot j + 1), so one step's x is live
    # instead of U: x is L2-resident and a 64-token step is about a thousand instructions per
    # warp, enough to hide it. This is what lets two row tiles compile at 64 tokens.
    U: gl.constexpr = PREFETCH + 1
    last = STEPS - 1
    wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, i_begin, True, MASKED, KSTEP, W_GROUP,
                       W_RUNS16, COLS_K)
    xa0, xb0 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, i_begin, True, X_FP4, MASKED, KSTEP)
    wd1, sc1 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 1, last),
                       i_begin + 1 < i_end, MASKED, KSTEP, W_GROUP, W_RUNS16, COLS_K)
    if not X_AHEAD:
        xa1, xb1 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i_begin + 1, last),
                           i_begin + 1 < i_end, X_FP4, MASKED, KSTEP)
    if U == 3:
        wd2, sc2 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 2, last),
                           i_begin + 2 < i_end, MASKED, KSTEP, W_GROUP, W_RUNS16, COLS_K)
        if not X_AHEAD:
            xa2, xb2 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i_begin + 2, last),
                               i_begin + 2 < i_end, X_FP4, MASKED, KSTEP)
    # L2 prefetch of the weight chunk L2_AHEAD steps ahead, so DRAM latency is paid ahead of
    # the register ring.
    for i in range(i_begin, i_end, U):
        if L2_AHEAD > 0:
            for u in gl.static_range(U):
                gl.inline_asm_elementwise(
                    _L2_PREFETCH, "=r,l",
                    [pf_ptrs + gl.minimum(i + u + L2_AHEAD, STEPS - 1) * (KSTEP // 8)],
                    dtype=gl.int32, is_pure=False, pack=1)
        acc = _step(acc, wd0, sc0, xa0, xb0, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP, COLS_K, xmask)
        if X_AHEAD:
            xa1, xb1 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + 1, last),
                               i + 1 < i_end, X_FP4, MASKED, KSTEP)
        wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i + U, last), i + U < i_end,
                           MASKED, KSTEP, W_GROUP, W_RUNS16, COLS_K)
        if not X_AHEAD:
            xa0, xb0 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + U, last),
                               i + U < i_end, X_FP4, MASKED, KSTEP)
        acc = _step(acc, wd1, sc1, xa1, xb1, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP, COLS_K, xmask)
        if X_AHEAD:
            if U == 3:
                xa2, xb2 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + 2, last),
                                   i + 2 < i_end, X_FP4, MASKED, KSTEP)
            else:
                xa0, xb0 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + 2, last),
                                   i + 2 < i_end, X_FP4, MASKED, KSTEP)
        wd1, sc1 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i + 1 + U, last),
                           i + 1 + U < i_end, MASKED, KSTEP, W_GROUP, W_RUNS16, COLS_K)
        if not X_AHEAD:
            xa1, xb1 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + 1 + U, last),
                               i + 1 + U < i_end, X_FP4, MASKED, KSTEP)
        if U == 3:
            acc = _step(acc, wd2, sc2, xa2, xb2, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                        W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP, COLS_K, xmask)
            if X_AHEAD:
                xa0, xb0 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + 3, last),
                                   i + 3 < i_end, X_FP4, MASKED, KSTEP)
            wd2, sc2 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i + 2 + U, last),
                               i + 2 + U < i_end, MASKED, KSTEP, W_GROUP, W_RUNS16, COLS_K)
            if not X_AHEAD:
                xa2, xb2 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i + 2 + U, last),
                                   i + 2 + U < i_end, X_FP4, MASKED, KSTEP)

    if COLS_K > 0:
        if COLS_K // W_GROUP > 1:  # a token's group columns -> one
            acc = gl.sum(acc.reshape([BN, NT // (COLS_K // W_GROUP), COLS_K // W_GROUP]),
                         axis=2)
    _epilogue(acc, out_ptr, pid_n * BN, pid_k, M, N, alpha, alpha_ptr, stride_om, PARTIAL, PDL,
              ALPHA_PTR)


@gluon.jit
def _epilogue(acc, out_ptr, row0, pid_k, M, N, alpha, alpha_ptr, stride_om, PARTIAL: gl.constexpr,
              PDL: gl.constexpr, ALPHA_PTR: gl.constexpr):
    """After the K loop (both Gluon GEMVs): let the next kernel launch (PDL; it waits for this
    one to end), then store ``acc`` [rows, tokens] transposed into ``out`` (M, N): unscaled fp32
    partials at ``(pid_k, M, N)`` when PARTIAL, else ``alpha * acc`` in out's dtype (times
    ``*alpha_ptr`` when ALPHA_PTR: ``fp4mm.kernels.alpha``)."""
    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [],
                                  dtype=gl.int32, is_pure=False, pack=1)
    BN: gl.constexpr = acc.shape[0]
    NT: gl.constexpr = acc.shape[1]
    rows = row0 + gl.arange(0, BN, layout=gl.SliceLayout(1, acc.type.layout))
    toks = gl.arange(0, NT, layout=gl.SliceLayout(0, acc.type.layout))
    mask = gl.expand_dims(rows < N, 1) & gl.expand_dims(toks < M, 0)
    offs = gl.expand_dims(toks, 0) * stride_om + gl.expand_dims(rows, 1)
    if PARTIAL:
        gl.store(out_ptr + pid_k * M * N + offs, acc, mask=mask)
    else:
        if ALPHA_PTR:
            alpha = alpha * gl.load(alpha_ptr)
        gl.store(out_ptr + offs, (acc * alpha).to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------
MAX_M = 64  # tokens per launch: the MMA N side, padded to 8, 16, 32 or 64
# The largest token tile each operand kind compiles without register spills (ptxas, sm_90a,
# session 16): W4A4 64 (two row tiles with x held one step ahead, 252 registers; with x in the
# ring they spill 112-128 B), 16-bit x 32 (64 spills 912-920 B), 16-bit group scales 16 (32
# spills 4-48 B). The compile test covers every tile up to these.
MAX_M_W4A4 = MAX_M
MAX_M_16BIT_X = 32
MAX_M_GROUPED = 16
# The most MMA columns (tokens x groups per 128-K step) of the group-column form (two 8-column
# MMA tiles). ``choose_config`` takes the form up to GROUP_COLS_FAST columns, and for groups of
# 16 (which the one-chain-per-group form cannot serve) up to GROUP_COLS_MAX.
GROUP_COLS_MAX = 16
GROUP_COLS_FAST = 8
# Warps resident at once on an H100 SXM (132 SMs) at <= 128 registers per thread: 16 per SM
# (``choose_config``'s split rule for 9-16 W4A4 tokens).
_WAVE_WARPS_16 = SM90_SMS * 16
_GL_DTYPE = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16}


@dataclass(frozen=True)
class GemvSM90Config:
    """num_warps: warps per CTA (16 weight rows each); prefetch: K steps in flight ahead of the
    decode (1-2); split_k: K ranges (a deterministic reduce pass sums them when > 1); l2_ahead:
    steps ahead of the decode that each warp prefetches its weights into L2 (0 = off);
    row_tiles: 16-row MMA tiles per warp (2 halves the x traffic and, for W4A4, the x decode per
    weight byte: both tiles share one B operand); k_step: K per step, 128 (16 bytes per thread
    and row) or 256 (32: longer contiguous row reads; needs K % 256 == 0, else 128 is used);
    x_ahead: x loaded one step ahead of its use into a single live slot instead of riding the
    ring (fewer registers: two row tiles fit at 64 W4A4 tokens); group_cols: 16-bit group
    scales below 128 with the groups of each block of ``group_cols`` K (128: the step; 64: each
    half) as MMA columns (``_mma_step_group_cols``; M times group_cols / group_size columns, at
    most ``GROUP_COLS_MAX``) instead of one MMA chain per group (0)."""

    num_warps: int = 4
    prefetch: int = 2
    split_k: int = 1
    l2_ahead: int = 0
    row_tiles: int = 1
    k_step: int = KS
    x_ahead: bool = False
    group_cols: int = 0


def config_is_valid(cfg: GemvSM90Config) -> bool:
    """The one validity predicate (heuristic, tests and benchmarks use it)."""
    return (cfg.num_warps in (1, 2, 4, 8) and cfg.prefetch in (1, 2) and cfg.split_k >= 1
            and cfg.row_tiles in (1, 2) and cfg.l2_ahead >= 0 and cfg.k_step in (128, 256)
            and isinstance(cfg.x_ahead, bool) and cfg.group_cols in (0, 64, 128)
            and not isinstance(cfg.group_cols, bool))


def packed_group_scales(w_scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """16-bit group scales ``(N, K/group_size)`` viewed as one packed word of a 128-K step's
    scales per row and step (int64 for groups of 32, int32 for 64; int16, one group spanning
    ``group_size / 128`` steps, from 128 on): what the one-chain-per-group form loads."""
    return w_scales.view({32: torch.int64, 64: torch.int32}.get(group_size, torch.int16))


def group_size_is_supported(group_size: int) -> bool:
    """16-bit group scales this kernel serves: 16 (as MMA columns only, so at most
    ``max_m(False, 16)`` tokens), 32, 64 or a multiple of 128 (below 16, or 96, they go to the
    Triton GEMV: an MMA's K slots must cover whole groups)."""
    return group_size in (16, 32, 64) or (group_size > 0 and group_size % KS == 0)


def max_m(x_fp4: bool, group_size: int | None = None) -> int:
    """The most tokens one launch serves for this operand kind (W4A4, 16-bit x with E4M3 or
    with 16-bit group scales): the largest token tile that compiles without spills; groups of
    16 only as MMA columns (``GROUP_COLS_MAX`` of them, 8 a token)."""
    if group_size == 16:
        return group_cols_max_m(16)
    if group_size is not None:
        return MAX_M_GROUPED
    return MAX_M_W4A4 if x_fp4 else MAX_M_16BIT_X


def is_supported(device, M: int, K: int, *tensors: torch.Tensor,
                 group_size: int | None = None, x_fp4: bool = False) -> bool:
    """True where this kernel applies: Hopper, 1 <= M <= :func:`max_m`, K % 128 == 0, every
    operand contiguous with a 16-byte aligned base (rows are then 16-byte aligned too); for
    16-bit group scales (``group_size``), a group size :func:`group_size_is_supported`
    accepts. ``x_fp4``: NVFP4 activations (W4A4)."""
    return (is_hopper(device) and 1 <= M <= max_m(x_fp4, group_size) and K % KS == 0
            and (group_size is None or group_size_is_supported(group_size))
            and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in tensors))


@functools.lru_cache(maxsize=1024)  # a pure function of ints, asked every call
def choose_config(M: int, N: int, K: int, x_fp4: bool = False,
                  group_size: int | None = None, bf16_x: bool = False) -> GemvSM90Config:
    """The heuristic, from the H100 sweep of run 5 (bench/results/2026-11-26-gemv_sm90-h100-run5.
    json, CUDA-graph medians over 4 weight copies; best config / this rule, in us):

    - 1 K step in flight ahead (prefetch 1) and no L2 prefetch: deeper rings cost registers,
      hence resident warps, and won nothing.
    - W4A4, or M > 8: two 16-row tiles per warp (the x operand, decoded or loaded, serves both):
      W4A4 M=1 19.3 (one tile: 19.6), M=16 23.8, M=32 32.0; W4A16 M=16 28.4 (one tile: 36.5).
      W4A4 at 33-64 tokens: two tiles with x held one step ahead (``x_ahead``; with x in the
      ring two tiles spill 112-128 B there), session 17
      (bench/results/2026-11-27-gemv-x-ahead-tune-h100.json, x-ahead two tiles at splits 2-8 vs
      this kernel's old one-tile rule): 18432 x 3072 M=33 41.5 (split 3) vs 51.0, M=64 45.9-47.0
      vs 54.0; N = K = 8192 M=33 41.7 (split 4) vs 54.9, M=64 43.9-44.5 vs 57.9. The split
      rule below gives 3 and 4 there. (At N = 3072 it wants 6-8 splits; the ops send N < 8192
      above 32 tokens to the Triton GEMV, ``fp4mm.ops.dispatch.GEMV_SM90_MIN_N_ABOVE_32``.)
    - 16-bit x with M <= 8: one tile per warp (W4A16 M=1 17.4, two tiles 19.9); with M > 16 two
      tiles spill (64 B, ptxas), so one.
    - split K until about 2304 warps are in flight (1728 for M > 8, whose warps carry more x):
      W4A16 M=1 split 2 at N=18432 (17.4) and 4 at N=K=8192 (19.6); W4A4 M=1 split 4.
    - W4A4 at 9-16 tokens (session 17, bench/results/2026-11-27-gemv-split-cap-run2-h100.json,
      splits 3-8 at six shapes): more splits than the rule above where they still fit one wave
      (132 SMs x 16 warps at these 128 registers), at most 8, each at least 8 steps of 128
      (4 from session 39, below).
      The rule above was right at 18432 x 3072 (split 3) and 14336 x 4096 (4), but narrow
      weights want more: N = K = 8192 M=16 23.1 us with split 8 vs 27.3 (split 4), 8192 x
      28672 63.4 vs 80.2, 5120 x 5120 13.9 (split 5) vs 14.6. Fewer than 8 steps per split lost
      (5120 x 5120 split 8, 5 steps: 14.9), and so did fewer splits than the rule (3072 x 3072
      split 3 7.9-8.0 vs 7.4-7.7, ...-split-cap-verify-h100.json, which also has the rule at
      M = 9, 12, 16 against the old one on seven shapes). At M <= 8 and 17-32 more splits did
      not pay (...-split-cap-h100.json: N = K = 8192 M=1 split 8 21.9 vs 20.2, M=32 31.2 vs
      28.1).

    16-bit group scales (``group_size``; bench/results/2026-11-26-gemv_sm90-grouped-h100.json,
    N = 18432, K = 3072): one tile per warp always (two: 21-30% slower).

    Re-tuned in session 9 (bench/results/2026-11-26-gemv_sm90-sweep-h100.json, every op and x
    dtype, bf16 decoded directly; best / old rule / this rule, us):

    - W4A4 with M > 1 splits to 1728 warps like M > 8: M=4 19.8 / 21.2 (split 4) / split 3.
    - Group scales: one warp per CTA (128-170 registers per thread; with two warps bf16 M=16
      took 43.0 us against 25.3), and for groups below 128 split to about 3456 warps at M = 1,
      1152 above: group 32 M=1 20.3-20.9 / 21.0-22.1 (split 1) / split 3; N=K=8192 21.7-21.9 /
      24.9-25.9 (split 2) / split 4; M=4, 16 split 1 (20.6, 24.5; bf16 21.9, 25.3).
    - 16-bit x with 8 < M <= 16: one warp per CTA, no split (about 576 warps): fp16 27.4 /
      28.2, bf16 27.5 / 28.9 (bench/results/2026-11-26-gemv_sm90-probes-h100.txt, part 5, which
      also shows prefetch 2 and k_step 256 no faster anywhere).

    Session 26: groups of 16, 32 and 64 as MMA columns (``group_cols``) where M times
    128 / group_size is at most ``GROUP_COLS_FAST`` (and always for groups of 16), two warps a
    CTA, split to about 2304 warps with fp16 x and 4608 with bf16 x (``bf16_x``: its decode
    takes 18 instructions a word against 13). H100, CUDA-graph medians, 3 rotating rounds, us:
    - the sweep (bench/results/2026-11-27-gemv-group-cols-h100.json, 18432 x 3072 unless
      named; one chain per group at its rule / columns): g32 fp16 M=1 19.42 / 15.90-15.96, M=2
      20.20 / 16.56-16.96, 8192 x 8192 M=1 19.95 / 17.67-17.79; g64 M=4 20.46 / 16.36-16.46;
      g16 M=1 16.20 (the chains cannot serve it). With 16 columns the second MMA tile costs
      more than it saves: g32 M=4 20.16 / 21.26-21.56 (the best columns configs).
    - this rule against the old one at six shapes (...-group-cols-verify-h100.json): g32 fp16
      and bf16, M = 1 and 2, 3-31% faster at 23 of 24 (the exception: fp16 M=2 3072 x 3072,
      6.87 / 6.75); g16 against the plain-Triton GEMV: 16.3 / 29.0 at 18432 x 3072 M=1, 25.2 /
      58.5 at M=2.
    - splits 1-4 (...-group-cols-splits-h100.json, 28672 x 4096, 18432 x 3072, 14336 x 4096,
      M = 1 and 2): fp16 at the 2304 rule is the best or within 1.5%; bf16 gains from more
      splits (28672 x 4096 M=1: split 4 30.71, 3 30.97, 1 (the 2304 rule) 32.60).
    - where 8 columns a step do not hold the tokens, the groups of each half step as columns
      (``group_cols=64``: groups 32 at 3-4 tokens, 64 at 5-8), two warps, split to about 4608
      warps (...-group-cols-halves-h100.json; chains at their rule / the best halves config):
      g32 fp16 M=4 20.27 / 17.42 (this rule's split 4), M=3 20.45 / 17.77; 8192 x 8192 M=4
      23.14 / 19.29-19.52; 28672 x 4096 44.32 / 32.12-32.28; 3072 x 3072 a tie (7.30 /
      7.22-7.24); bf16 M=4 21.89 / 18.26; g64 M=8 21.03 / 18.19. The best split was 3-4 at
      every shape but 28672 x 4096 (1-3, within 2%).

    Re-checked on an H200 at W4A4's 16 tokens (session 37,
    bench/results/2026-11-28-decode-bar-resweep-h200.json, 18432 x 3072, 30 configs, 3 rotating
    rounds): this rule 19.51 us, the best swept config 19.08 (one warp, split 4), 2% apart.

    Session 39 (H200, bench/results/2026-11-28-gemv-split-sweep-part{0,1}-h200.json: 18 layer
    shapes, splits 3-12 against the rule, 3 rotating rounds) moved two limits; the validation,
    old rule against new at every point where they differ, is ...-split-rules-ab-h200.json:
    - 16-bit x, where the warps rule wants at least twice its 4 splits (``WIDE_SPLIT_WANT``):
      split up to 8 ways, no more than it wants, while each split keeps ``SPLIT_MIN_STEPS``
      steps (``SPLIT_MIN_STEPS_FEW_ROWS`` where the weights have fewer row warps than the card
      has SMs). Best split / the old rule's 4 (5 at 3584 x 18944), bf16 x at one token: 2048 x
      8192 split 8 1.33x, 4096 x 14336 1.21x, 3584 x 18944 1.21x, 1024 x 4096 1.15x; groups of
      32 at 1 and 4 tokens 1.11-1.36x at the same shapes.
    - W4A4 at 9-16 tokens: splits of at least ``W4A4_16_MIN_STEPS`` = 4 steps (was 8, from an
      H100, where 5120 x 5120 split 8 (5 steps) lost 7%; on the H200 it is 1% behind): 1024 x
      4096 split 8 1.32x, 4096 x 4096 1.17x, 4608 x 3584 and 6144 x 4096 1.09-1.12x, 3584 x
      3584 1.08x, 7168 x 5120 1.08x.
    """
    grouped = group_size is not None

    steps = K // KS

    def splits(target: int, warps: int, long_k: bool = True) -> int:
        """Split K until about ``target`` warps are in flight, at most 4 ways; where that cap
        binds, 16-bit x splits on (up to 8) until no CTA streams more than LONG_K_STEPS, and
        where it binds twice over, towards ``target`` while the splits keep their minimum
        steps (the constants below the function)."""
        want = round(target / warps)
        split = max(1, min(4, steps, want))
        if long_k and want > 4:
            split = max(split, min(8, cdiv(steps, LONG_K_STEPS)))
        if long_k and want >= WIDE_SPLIT_WANT:
            least = SPLIT_MIN_STEPS_FEW_ROWS if warps < SM90_SMS else SPLIT_MIN_STEPS
            split = max(split, min(8, want, steps // least))
        return split

    if grouped and group_size < KS:
        warps = cdiv(N, 16)
        if group_columns(M, group_size) <= GROUP_COLS_FAST or group_size == 16:
            return GemvSM90Config(num_warps=2, prefetch=1, group_cols=KS,
                                  split_k=splits(4608 if bf16_x else 2304, warps))
        if group_columns(M, group_size, KS // 2) <= GROUP_COLS_FAST:
            return GemvSM90Config(num_warps=2, prefetch=1, split_k=splits(4608, warps),
                                  group_cols=KS // 2)
    two_tiles = x_fp4 or (not x_fp4 and 8 < M <= 16)
    rt = 2 if two_tiles and not grouped else 1
    warps = cdiv(N, 16 * rt)
    wide_16bit = not x_fp4 and not grouped and 8 < M <= 16
    if grouped and group_size < KS:
        target = 3456 if M == 1 else 1152
    elif wide_16bit:
        target = 576
    elif M == 1 or (M <= 8 and not x_fp4):
        target = 2304
    else:
        target = 1728
    split = splits(target, warps, long_k=not x_fp4 and not wide_16bit)
    if x_fp4 and _token_tile(M) == 16:  # up to one full wave, splits of at least 4 steps
        split = max(split, min(8, steps // W4A4_16_MIN_STEPS, _WAVE_WARPS_16 // warps))
    return GemvSM90Config(num_warps=1 if grouped or wide_16bit else 2, prefetch=1, split_k=split,
                          row_tiles=rt, x_ahead=x_fp4 and _token_tile(M) > 32)



# 16-bit x, where the warps-in-flight rule wants more than its 4 splits: split K further (up to 8
# ways) until no CTA streams more than this many 128-K steps. Session 38, H200, 3 rounds
# (bench/results/2026-11-28-gemv-other-splits-h200.json, ...-ring-long-k-h200.json): 5120 x
# 27648 (216 steps, 320 row warps) split 4 -> 7 1.16-1.20x (bf16 x, one token, 41.97 -> 35.52
# us), 3584 x 18944 split 4 -> 5 1.03-1.12x; where the rule's 4 splits already hold about its
# target (8192 x 28672, 512 row warps) 7 splits were 0.93-1.00x, so the cap binding is the
# condition.
LONG_K_STEPS = 32
# 16-bit x where the warps rule wants at least WIDE_SPLIT_WANT splits (twice its cap): split up
# to 8 ways while each split keeps SPLIT_MIN_STEPS 128-K steps, or SPLIT_MIN_STEPS_FEW_ROWS
# where the weights have fewer row warps (16 rows each) than the card has SMs, so that the
# capped grid would leave SMs with one CTA or none. W4A4 at 9-16 tokens: splits of at least
# W4A4_16_MIN_STEPS steps. Session 39, H200 (``choose_config``'s docstring).
WIDE_SPLIT_WANT = 8
SPLIT_MIN_STEPS = 8
SPLIT_MIN_STEPS_FEW_ROWS = 4
W4A4_16_MIN_STEPS = 4


def _plan(steps: int, cfg: GemvSM90Config) -> tuple[int, int, bool]:
    """``(splits, steps per split, masked)``: each split runs whole turns of the register ring
    (a multiple of prefetch + 1 steps); ``masked`` when the last turn of some split is partial
    (then the ring slots past its end load zeros)."""
    unroll = cfg.prefetch + 1
    split = max(1, min(cfg.split_k, steps))
    per = cdiv(cdiv(steps, split), unroll) * unroll
    return cdiv(steps, per), per, steps % unroll != 0


# W4A4 tokens from which this GEMV's split-K reduce lets the next kernel launch only after its
# stores. Launched at the reduce's start, the next kernel's CTAs cannot share an SM with a running
# reduce CTA and pile onto the SMs it leaves free; back to back (the same call again, as in a
# CUDA-graph decode loop or a model's consecutive projections) this GEMV's W4A4 grid, about one
# wave at these tokens, pays for it. H100, CUDA-graph medians over 4 weight copies, early / late,
# us (bench/results/2026-11-28-reduce-trigger-sweep-h100.json, W4A4 on the ring at 8 and 16
# tokens): 4096 x 14336 M=8 24.91 / 22.66, M=16 24.44 / 19.52; 8192 x 8192 M=8 22.18 / 19.23;
# 4096 x 4096 M=8 9.73 / 8.61, M=16 11.69 / 10.70; 2048 x 4096 0.2 us faster; no worse than 0.09
# us at the other 8 points (18432 x 3072, 28672 x 4096, 14336 x 4096, 1024 x 4096). With 16-bit x
# (other grids) the late trigger was mixed (-1.1 to +0.6 us, one +4.9) and is not used.
REDUCE_PDL_LATE_MIN_M_W4A4 = 5


def _uses_pdl(partial: bool, group_size: int | None, token_tile: int) -> bool:
    """Programmatic dependent launch for split K (module docstring); not for group scales with
    more than 8 tokens, which its two instructions push into an 8-byte spill (ptxas)."""
    return partial and (group_size is None or token_tile <= 8)


def _token_tile(M: int) -> int:
    return max(8, next_power_of_2(M))


def group_cols_max_m(group_size: int, block: int = KS) -> int:
    """The most tokens the group-column form serves (``GROUP_COLS_MAX`` columns) with groups of
    ``group_size`` as the columns of each ``block`` of K."""
    return GROUP_COLS_MAX // (block // group_size)


def group_columns(M: int, group_size: int, block: int = KS) -> int:
    """The MMA columns of the group-column form: M tokens times the block / group_size groups of
    a block of K (128: the step; 64: each half of it), padded like a token tile."""
    return _token_tile(M * (block // group_size))


def gemv_sm90(x: torch.Tensor, x_scales: torch.Tensor | None, w_q: torch.Tensor,
              w_scales: torch.Tensor, alpha, order: str, out: torch.Tensor, *,
              config: GemvSM90Config | None = None, group_size: int | None = None) -> None:
    """``out = alpha * x @ W^T`` (written in place) for NVFP4 or groupwise FP4 weights.

    Args:
        x: fp16/bf16 ``(M, K)`` activations, or (with ``x_scales``) uint8 ``(M, K/2)`` NVFP4
            codes in ``order``.
        x_scales: uint8 ``(M, K/16)`` E4M3 scales of NVFP4 activations, or None.
        w_q: uint8 ``(N, K/2)`` codes in ``order``; w_scales: uint8 / float8_e4m3fn ``(N, K/16)``,
            or with ``group_size`` fp16/bf16 ``(N, K/group_size)`` group scales (16-bit x only).
        alpha: fp32 factor applied in the epilogue: a float or a one-element float32 device
            tensor (``fp4mm.kernels.alpha``).
        out: ``(M, N)`` fp16/bf16/fp32 with unit column stride.
    The caller checks :func:`is_supported` (a token count above :func:`max_m` raises); shapes
    and dtypes are validated by ``fp4mm.ops``.
    """
    M = x.shape[0]
    N, K = w_q.shape[0], w_q.shape[1] * 2
    limit = max_m(x_scales is not None, group_size)
    if not 1 <= M <= limit:
        raise ValueError(f"x: expected 1 to {limit} rows (tokens) for this operand kind, got {M}")
    cfg = config or choose_config(M, N, K, x_scales is not None, group_size,
                                  bf16_x=x_scales is None and x.dtype == torch.bfloat16)
    if not config_is_valid(cfg):
        raise ValueError(f"config: invalid {cfg}")
    if group_size is not None:
        if (x_scales is not None or not group_size_is_supported(group_size)
                or (group_size == 16 and not cfg.group_cols)):
            raise ValueError(f"group_size: expected 16 (with config.group_cols), 32, 64 or a "
                             f"multiple of {KS} with 16-bit x, got {group_size}")
        sdtype = _GL_DTYPE[w_scales.dtype]
        cfg = dataclasses.replace(cfg, k_step=KS, l2_ahead=0)
        if cfg.group_cols:
            sizes = (16, 32, 64) if cfg.group_cols == KS else (32, 64)
            if (group_size not in sizes
                    or group_columns(M, group_size, cfg.group_cols) > GROUP_COLS_MAX):
                raise ValueError(f"config: group_cols={cfg.group_cols} needs a group of "
                                 f"{', '.join(map(str, sizes))} and at most {GROUP_COLS_MAX} "
                                 f"columns, got group_size={group_size}, M={M}")
            ws = w_scales  # each column's scale, loaded as it is
        else:
            ws = packed_group_scales(w_scales, group_size)
    else:
        if w_scales.dtype == torch.float8_e4m3fn:
            w_scales = w_scales.view(torch.uint8)
        ws, sdtype = w_scales.view(torch.int16), gl.float16
    x_fp4 = x_scales is not None
    if x_fp4:
        xa, xs = x.view(torch.int32), x_scales.view(torch.int16)
        dtype = gl.float16
    else:
        xa = x.view(torch.int32)
        xs, dtype = xa, _GL_DTYPE[x.dtype]
    ks = cfg.k_step if K % cfg.k_step == 0 else KS
    steps = K // ks
    split, per, masked = _plan(steps, cfg)
    partial = split > 1
    nt = group_columns(M, group_size, cfg.group_cols) if cfg.group_cols else _token_tile(M)
    pdl = _uses_pdl(partial, group_size, nt)
    dst = (torch.empty((split, M, N), dtype=torch.float32, device=out.device) if partial
           else out)
    grid = (cdiv(N, 16 * cfg.row_tiles * cfg.num_warps), split)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    launch(_fp4_gemv_sm90_kernel, grid,
        xa, xs, w_q.view(torch.int32), ws, dst,
        M, N, steps, per, a, alpha_ptr,
        xa.stride(0), xs.stride(0), K // 8, ws.stride(0), out.stride(0) if not partial else N,
        X_FP4=x_fp4, DTYPE=dtype, NT=nt, HIGH_FIRST=order == "high_first",
        PREFETCH=cfg.prefetch, PARTIAL=partial, L2_AHEAD=cfg.l2_ahead,
        MASKED=masked, ROW_TILES=cfg.row_tiles, KSTEP=ks, W_GROUP=group_size or 0,
        SDTYPE=sdtype, PDL=pdl, ALPHA_PTR=alpha_on_device and not partial, X_AHEAD=cfg.x_ahead,
        COLS_K=cfg.group_cols, launch_pdl=pdl, num_warps=cfg.num_warps)
    if partial:
        from fp4mm.kernels.fp4_gemv import reduce_partials

        reduce_partials(dst, out, alpha, pdl=pdl,
                        pdl_late=x_fp4 and M >= REDUCE_PDL_LATE_MIN_M_W4A4)


def nvfp4_mm_gemv_sm90(x_q, x_scales, w_q, w_scales, alpha, order: str, out, *,
                       config: GemvSM90Config | None = None) -> None:
    """W4A4 (the signature of ``fp4_gemv.nvfp4_mm_gemv``): x_q uint8 ``(M, K/2)`` and x_scales
    uint8 ``(M, K/16)`` NVFP4 activations."""
    gemv_sm90(x_q, x_scales, w_q, w_scales, alpha, order, out, config=config)


def nvfp4_w4a16_mm_gemv_sm90(x, w_q, w_scales, alpha, order: str, out, *,
                             config: GemvSM90Config | None = None) -> None:
    """NVFP4 weights, fp16/bf16 activations ``x`` ``(M, K)`` (the MMA runs in x's dtype)."""
    gemv_sm90(x, None, w_q, w_scales, alpha, order, out, config=config)


def w4a16_mm_gemv_sm90(x, w_q, scales, group_size: int, order: str, out, *,
                       config: GemvSM90Config | None = None) -> None:
    """Groupwise FP4 weights with fp16/bf16 ``scales`` ``(N, K/group_size)`` (the signature of
    ``fp4_gemv.w4a16_mm_gemv``); ``group_size``: see :func:`group_size_is_supported`."""
    gemv_sm90(x, None, w_q, scales, 1.0, order, out, config=config, group_size=group_size)
