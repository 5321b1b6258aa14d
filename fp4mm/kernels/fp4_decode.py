"""Device-side decoding shared by the Triton kernels: the device half of ``fp4mm.formats``.

Both helpers work through the E4M3 type, whose hardware conversion to fp16 is exact:

- an E2M1 code ``c`` re-read as the E4M3 byte ``(c & 7) << 2 | (c & 8) << 4`` is ``e2m1(c) * 2^-6``;
- an E4M3 scale times ``2^6`` is exact in fp16 (at most 448 * 64 = 28672),

so ``e2m1_to_f16_x64(c) * e4m3_to_f16_x64(s)`` is ``e2m1(c) * e4m3(s)``, exactly, in fp16.

Also here: the PTX word decoders the Gluon kernels share (``E2M1_WORD_PTX`` and its bf16 twin)
and ``as_16bit_pairs``, their way to hand packed 16-bit pairs over without repacking.
"""

import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

# PTX, the first step of every word decoder: one 32-bit word of packed codes (IN: 8 E2M1 codes,
# bytes in memory order) -> two words of E4M3 bytes (b32 registers lo, hi, v4 declared by the
# caller): byte j of ``lo`` is the low nibble of byte j, of ``hi`` the high one. Each nibble keeps
# its sign bit and its other 3 bits move left by 2, so the E4M3 byte is exactly ``e2m1 * 2^-6``
# (E2M1's exponent bias is 1, E4M3's 7; E2M1's subnormal 0.5 lands on E4M3's subnormals).
# 32-bit masks and shifts: 4 codes per instruction.
E2M1_E4M3_BYTES_PTX = """
and.b32 hi, IN, 0x70707070;
shr.b32 hi, hi, 2;
lop3.b32 hi, hi, IN, 0x80808080, 0xF8;
shl.b32 v4, IN, 4;
and.b32 lo, v4, 0x70707070;
shr.b32 lo, lo, 2;
lop3.b32 lo, lo, v4, 0x80808080, 0xF8;"""
# PTX for one 32-bit word of packed codes (IN) -> 8 fp16 ``e2m1 * 2^-6`` in element order, as
# fp16x2 pairs q0..q3: the E4M3 bytes above, one ``prmt`` per 4 codes to put each pair in
# element order, one hardware ``cvt.rn.f16x2.e4m3x2`` per pair. Placeholders: IN = the input
# operand; FIRST/SECOND = lo/hi (low nibble first) or hi/lo; OUTPUT = instructions on q0..q3
# before they are written out (empty, or a multiply by a scale); STORE = how q0..q3 reach the
# outputs (E2M1_STORE_HALVES: eight 16-bit outputs $0..$7).
E2M1_WORD_PTX = """
{
.reg .b32 lo, hi, v4, p0, p1, q0, q1, q2, q3;
.reg .b16 h0, h1, h2, h3;""" + E2M1_E4M3_BYTES_PTX + """
prmt.b32 p0, FIRST, SECOND, 0x5140;
prmt.b32 p1, FIRST, SECOND, 0x7362;
mov.b32 {h0, h1}, p0;
mov.b32 {h2, h3}, p1;
cvt.rn.f16x2.e4m3x2 q0, h0;
cvt.rn.f16x2.e4m3x2 q1, h1;
cvt.rn.f16x2.e4m3x2 q2, h2;
cvt.rn.f16x2.e4m3x2 q3, h3;
OUTPUT
STORE
}
"""
# The same word -> 8 *bf16* ``e2m1`` values (exact, no 2^-6 factor) as bf16x2 pairs q0..q3, for
# bf16 MMAs without an fp16 -> bf16 conversion: the sign-free code (3 bits) indexes two 8-byte
# tables with one ``prmt`` per 4 codes (the high and the low byte of the bf16 value: 0, 0.5, 1,
# 1.5, 2, 3, 4, 6 = 0x0000, 0x3F00, 0x3F80, 0x3FC0, 0x4000, 0x4040, 0x4080, 0x40C0), the sign bits
# are OR-ed into the high bytes, and one ``prmt`` per pair interleaves low and high bytes in
# element order. Placeholders: IN, OUTPUT, STORE as above; P01/P23 = the pair selectors (low
# nibble first: 0x5140 / 0x7362; high nibble first: 0x4051 / 0x6273).
E2M1_WORD_BF16_PTX = """
{
.reg .b32 s, t, a, hA, lA, hB, lB, sA, sB, q0, q1, q2, q3;
and.b32 s, IN, 0x77777777;
shr.b32 t, s, 16;
prmt.b32 hA, 0x3F3F3F00, 0x40404040, s;
prmt.b32 lA, 0xC0800000, 0xC0804000, s;
prmt.b32 hB, 0x3F3F3F00, 0x40404040, t;
prmt.b32 lB, 0xC0800000, 0xC0804000, t;
shl.b32 a, IN, 4;
prmt.b32 sA, a, IN, 0x5140;
prmt.b32 sB, a, IN, 0x7362;
lop3.b32 hA, hA, sA, 0x80808080, 0xF8;
lop3.b32 hB, hB, sB, 0x80808080, 0xF8;
prmt.b32 q0, lA, hA, P01;
prmt.b32 q1, lA, hA, P23;
prmt.b32 q2, lB, hB, P01;
prmt.b32 q3, lB, hB, P23;
OUTPUT
STORE
}
"""
BF16_PAIR_SELECTORS = {"low_first": ("0x5140", "0x7362"), "high_first": ("0x4051", "0x6273")}
_MOVE_B32 = gl.constexpr("mov.b32 $0, $1;")


@gluon.jit
def as_16bit_pairs(p, DTYPE: gl.constexpr):
    """int32 registers [...], each holding two 16-bit values -> DTYPE [..., 2], each pair left in
    its register (Gluon kernels): an asm move with pack 2 hands the register over whole, where
    a bitcast path re-packs every pair with a PRMT. DTYPE: gl.float16 or gl.bfloat16 (spelled
    out per branch: the asm's dtype must be a literal type)."""
    if DTYPE == gl.bfloat16:
        return gl.inline_asm_elementwise(_MOVE_B32, "=r,r,r", [gl.join(p, p)],
                                         dtype=gl.bfloat16, is_pure=True, pack=2)
    else:
        return gl.inline_asm_elementwise(_MOVE_B32, "=r,r,r", [gl.join(p, p)],
                                         dtype=gl.float16, is_pure=True, pack=2)


E2M1_STORE_HALVES = """mov.b32 {$0, $1}, q0;
mov.b32 {$2, $3}, q1;
mov.b32 {$4, $5}, q2;
mov.b32 {$6, $7}, q3;"""


@triton.jit
def e2m1_to_f16_x64(codes):
    """uint8 E2M1 codes (0..15) -> fp16 ``value * 2^-6``, exactly."""
    e4m3 = ((codes & 7) << 2) | ((codes & 8) << 4)
    return e4m3.to(tl.float8e4nv, bitcast=True).to(tl.float16)


@triton.jit
def e4m3_to_f16_x64(scale_bytes):
    """uint8 E4M3 bytes -> fp16 ``scale * 2^6``, exactly. The NaN bytes 0x7F/0xFF are mapped to
    NaN explicitly: the hardware conversion does so, Triton's CPU interpreter does not (it
    decodes 0x7F as 480)."""
    s = scale_bytes.to(tl.float8e4nv, bitcast=True).to(tl.float16) * 64.0
    return tl.where((scale_bytes & 0x7F) == 0x7F, float("nan"), s)
