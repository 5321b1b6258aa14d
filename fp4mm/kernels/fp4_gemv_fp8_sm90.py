"""W4A4 decode (one token) on Hopper's E4M3 ``wgmma``, in Gluon: ``out[1, N] = alpha * x @ W^T``.

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
  flight (one ahead: deeper rings measured slower). Split K over grid axis 1: fp32 partials
  ``(splits, 1, N)`` summed in a fixed order by ``fp4_gemv``'s reduce kernel. Both launch with
  programmatic dependent launch, as the register-ring GEMV does: the GEMV waits for the kernel
  before it before touching memory and lets the reduce launch once its windows are done.

H100, CUDA-graph medians, same runs as the register-ring GEMV (perf-log, ``fp4_gemv_fp8_sm90``;
three runs): 18432 x 3072 15.1-15.7 us against 17.8-18.5, 8192 x 8192 17.5-17.9 against
19.9-20.2, 14336 x 4096 15.5-16.0 against 19.6-20.2, 3072 x 3072 5.1-5.6 against 7.0-7.3.
One token only: a version with 16 block columns per token (``b230709``) was slower than the
register ring from two tokens on wide weights (the columns, B's build and the scale tile grow
with the tokens; ``fp4mm.ops.dispatch.GEMV_FP8_SM90_MAX_M``).

Requirements (``is_supported``; the ops use the register-ring GEMV otherwise): one token,
K % 256 == 0, contiguous operands with 16-byte aligned bases. N is free (rows past N are
clamped for loads and not stored).
"""

from __future__ import annotations

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

MAX_M = 1  # tokens (the ops' limit is fp4mm.ops.dispatch.GEMV_FP8_SM90_MAX_M)
WINDOW = 256  # K per window: 8 wgmmas of K 32, 16 scale blocks
ROWS = 64  # weight rows per CTA: one warpgroup, wgmma M
_ROWS = gl.constexpr(ROWS)  # the same, for the jit functions
# most windows a CTA may take: B holds 8 tiles of 512 bytes a window, the tile count rounded up
# to a power of two (32 windows: 128 KB of the 227 KB a CTA may use)
MAX_WINDOWS = 32

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
def _build_b(xw_ptr, win0, WINS: gl.constexpr, TP: gl.constexpr):
    """This CTA's B in shared memory: tile ``8 w + 4 h + t`` ([16 columns, 32 K slots] E4M3)
    feeds wgmma ``4 h + t`` of window ``w``; slots ``16 lohi + 4 c + j`` of column
    ``8 h + 2 c + t // 2`` hold byte j of the low / high nibble bytes of x word
    ``16 h + 4 c + t`` of the window, every other byte is zero. TP >= 8 WINS (a power of two)
    tiles are built; those past 8 WINS are zero and unused."""
    NW: gl.constexpr = gl.num_warps()
    T: gl.constexpr = WINS * 8
    bw_l: gl.constexpr = gl.BlockedLayout([1, 1, 8], [2, 16, 1], [NW, 1, 1], [2, 1, 0])
    row_l: gl.constexpr = gl.SliceLayout(2, bw_l)  # a thread builds whole 32-byte column rows
    tile = gl.expand_dims(gl.arange(0, TP, layout=gl.SliceLayout(1, row_l)), 1)  # [TP, 1]
    col = gl.expand_dims(gl.arange(0, 16, layout=gl.SliceLayout(0, row_l)), 0)  # [1, 16]
    h = (tile // 4) % 2
    t = tile % 4
    off = col - 8 * h - t // 2  # 2 c for the one c whose block is this column
    has = (off >= 0) & (off < 8) & (off % 2 == 0) & (tile < T)
    c = off // 2
    word = gl.load(xw_ptr + (win0 + tile // 8) * 32 + 16 * h + 4 * c + t, mask=has, other=0)
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
def _window(acc, words, i, ws_ptr, s_offs, xs_ptr, win0, cols, b_smem, a_l: gl.constexpr):
    """Window ``i``: the [64, 32] weight ``words`` -> 8 E4M3 A tiles, 8 wgmmas into fresh block
    sums, scaled into ``acc`` [64, 16]."""
    R: gl.constexpr = words.shape[0]
    sw = gl.load(ws_ptr + s_offs + i * 16).to(gl.float8e4nv, bitcast=True).to(gl.float32)
    sx = gl.load(xs_ptr + (win0 + i) * 16 + cols).to(gl.float8e4nv, bitcast=True)
    scale = sw * gl.expand_dims(sx.to(gl.float32) * 4096.0, 0)  # 2^12: both codes are * 2^-6
    v = gl.inline_asm_elementwise(_E4M3_BYTES, "=r,=r" + ",r" * 8, [_copies(words, 8)],
                                  dtype=gl.int8, is_pure=True, pack=8)
    # [R, word 16 h + 4 c + t, lohi j] -> 8 tiles (h, t) of [R, K slot 16 lohi + 4 c + j]
    v = v.reshape([R, 2, 4, 4, 2, 4]).permute((0, 4, 2, 5, 1, 3)).reshape([R, 32, 8])
    s0, s1, s2, s3, s4, s5, s6, s7 = _split8(v.to(gl.float8e4nv, bitcast=True))
    base = i * 8
    d = _mma(s0, b_smem, base, acc, False, a_l)
    d = _mma(s1, b_smem, base + 1, d, True, a_l)
    d = _mma(s2, b_smem, base + 2, d, True, a_l)
    d = _mma(s3, b_smem, base + 3, d, True, a_l)
    d = _mma(s4, b_smem, base + 4, d, True, a_l)
    d = _mma(s5, b_smem, base + 5, d, True, a_l)
    d = _mma(s6, b_smem, base + 6, d, True, a_l)
    d = _mma(s7, b_smem, base + 7, d, True, a_l)
    # (the 8-bit A tiles cannot be deps of the wait in Triton 3.6; nothing writes their
    # registers before it, and the compile test checks ptxas kept the wgmmas pipelined)
    d = warpgroup_mma_wait(0, deps=[d])
    return acc + d * scale


@gluon.jit
def _fp4_gemv_fp8_sm90_kernel(w_ptr, ws_ptr, xw_ptr, xs_ptr, out_ptr, N, KB, KW, alpha,
                              alpha_ptr, WINS: gl.constexpr, TP: gl.constexpr,
                              PARTIAL: gl.constexpr, ALPHA_PTR: gl.constexpr):
    """64 weight rows x WINS windows of 256 K per CTA (grid: row blocks x splits). w_ptr int32
    ``[N, K/8]`` code words; ws_ptr uint8 ``[N, K/16]``; xw_ptr int32 ``[K/8]``; xs_ptr uint8
    ``[K/16]``; KB = K/16, KW = K/8. PARTIAL: fp32 partials ``[splits, N]``, else
    ``alpha * y`` in out's dtype."""
    gl.static_assert(gl.num_warps() == 4, "one warpgroup: launch with num_warps=4")
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
    words = gl.load(w_ptr + w_offs)  # requested before B is built: the build hides its latency
    b_smem = _build_b(xw_ptr, win0, WINS, TP)

    rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, mma))
    cols = gl.arange(0, 16, layout=gl.SliceLayout(0, mma))
    s_offs = (gl.expand_dims(gl.minimum(rows, N - 1), 1).to(gl.int64) * KB
              + gl.expand_dims(cols, 0) + win0 * 16)
    acc = gl.zeros([_ROWS, 16], gl.float32, mma)
    for i in range(WINS):
        more = w_offs * 0 + i + 1 < WINS
        words_next = gl.load(w_ptr + w_offs + (i + 1) * 32, mask=more)
        acc = _window(acc, words, i, ws_ptr, s_offs, xs_ptr, win0, cols, b_smem, a_l)
        words = words_next
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [],
                              dtype=gl.int32, is_pure=False, pack=1)
    y = gl.sum(acc, axis=1)
    if PARTIAL:
        gl.store(out_ptr + gl.program_id(1) * N + rows, y, mask=rows < N)
    else:
        if ALPHA_PTR:
            alpha = alpha * gl.load(alpha_ptr)
        gl.store(out_ptr + rows, (y * alpha).to(out_ptr.dtype.element_ty), mask=rows < N)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------
def is_supported(device, M: int, K: int, *tensors: torch.Tensor) -> bool:
    """True where this kernel applies: Hopper, one token, K % 256 == 0, every operand contiguous
    with a 16-byte aligned base."""
    return (is_hopper(device) and M == MAX_M and K % WINDOW == 0
            and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in tensors))


def choose_split(N: int, K: int) -> int:
    """K slices (grid axis 1): the smallest divisor of the window count that leaves at most 8
    windows a CTA and at least 176 CTAs (4/3 per SM of an H100), else the largest divisor.
    Measured on an H100 (graph medians over eight decode shapes, every split;
    bench/results/2026-11-27-gemv-fp8-split-h100.json): the best split at 18432 x 3072 (2: 6
    windows, 576 CTAs), 8192 x 8192 (4), 14336 x 4096 (2), 28672 x 4096 (2) and 4096 x 4096
    (4); within 2-6% of it at 3072 x 3072, 5120 x 5120 and 4096 x 14336."""
    windows = K // WINDOW
    blocks = triton.cdiv(N, ROWS)
    divisors = [s for s in range(1, windows + 1) if windows % s == 0]
    return next((s for s in divisors if windows // s <= 8 and blocks * s >= 176), divisors[-1])


def gemv_fp8_sm90(x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor,
                  w_scales: torch.Tensor, alpha, out: torch.Tensor, *,
                  split: int | None = None) -> None:
    """``out = alpha * x @ W^T`` (written in place) for one NVFP4 token and NVFP4 weights.

    Args:
        x_q: uint8 ``(1, K/2)`` E2M1 codes; x_scales: uint8 / float8_e4m3fn ``(1, K/16)``.
        w_q: uint8 ``(N, K/2)`` codes; w_scales: uint8 / float8_e4m3fn ``(N, K/16)``. Both
            operands in the same nibble order (either: the product does not depend on it).
        alpha: fp32 factor: a float or a one-element float32 device tensor
            (``fp4mm.kernels.alpha``).
        out: contiguous ``(1, N)`` fp16/bf16/fp32.
        split: K slices, a divisor of K / 256 leaving at most MAX_WINDOWS windows a slice
            (default :func:`choose_split`, which leaves at most 8).
    The caller checks :func:`is_supported`; shapes and dtypes are validated by ``fp4mm.ops``.
    """
    N, K = w_q.shape[0], w_q.shape[1] * 2
    if x_q.shape[0] != MAX_M:
        raise ValueError(f"x_q: expected {MAX_M} row (token), got {x_q.shape[0]}")
    windows = K // WINDOW
    if K % WINDOW:
        raise ValueError(f"w_q: expected K (2 * columns) a multiple of {WINDOW}, got {K}")
    split = choose_split(N, K) if split is None else split
    if split < 1 or windows % split:
        raise ValueError(f"split: expected a divisor of K / {WINDOW} = {windows}, got {split}")
    if windows // split > MAX_WINDOWS:
        raise ValueError(f"split: {split} leaves {windows // split} windows of {WINDOW} K a CTA, "
                         f"more than its shared memory holds ({MAX_WINDOWS}); use a larger split")
    wins = windows // split
    dst = (torch.empty((split, 1, N), dtype=torch.float32, device=out.device) if split > 1
           else out)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    _fp4_gemv_fp8_sm90_kernel[(triton.cdiv(N, ROWS), split)](
        w_q.view(torch.int32), w_scales.view(torch.uint8), x_q.view(torch.int32),
        x_scales.view(torch.uint8), dst, N, K // 16, K // 8, a, alpha_ptr,
        WINS=wins, TP=triton.next_power_of_2(8 * wins), PARTIAL=split > 1,
        ALPHA_PTR=alpha_on_device and split == 1, num_warps=4, launch_pdl=True)
    if split > 1:
        from fp4mm.kernels.fp4_gemv import reduce_partials

        reduce_partials(dst, out, alpha, pdl=True)


def nvfp4_mm_gemv_fp8_sm90(x_q, x_scales, w_q, w_scales, alpha, order: str, out) -> None:
    """W4A4 with the signature of the other GEMVs' ``nvfp4_mm_*`` launchers (``order`` is not
    needed: the product does not depend on it when both operands share it)."""
    gemv_fp8_sm90(x_q, x_scales, w_q, w_scales, alpha, out)
