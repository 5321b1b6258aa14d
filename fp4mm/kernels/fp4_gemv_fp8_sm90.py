"""W4A4 decode on Hopper's E4M3 ``wgmma``, in Gluon: ``out[M, N] = alpha * x @ W^T``, M <= 4.

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
  two ``2^-6``), and the row sums of ``acc`` are the output. Each token has its own 16 columns
  (``m64n{16 NT}k32``, NT = M rounded up to a power of two).
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
- **Pipeline.** Each CTA builds its slice of B (``x`` words -> zero-padded E4M3 columns, a few
  instructions a thread) after requesting its first weight window, then runs the windows with
  the next window's weights in flight (one ahead: deeper rings measured slower). Split K over
  grid axis 1: fp32 partials ``(splits, M, N)`` summed in a fixed order by ``fp4_gemv``'s
  reduce kernel. Both launch with programmatic dependent launch, as the register-ring GEMV does:
  the GEMV waits for the kernel before it before touching memory and lets the reduce launch
  once its windows are done.

H100, graph-timed, same run as the register-ring GEMV (perf-log, ``fp4_gemv_fp8_sm90``), one
token: 18432 x 3072 15.7 us against 18.0, 8192 x 8192 17.8 against 20.2, 3072 x 3072 5.4
against 7.2; 10-27% faster at all eight decode shapes measured. With more tokens the columns,
B's build and the scale tile grow with them, and the register ring is faster from two tokens on
the wide weights, so the ops send one token here (``fp4mm.ops.dispatch.GEMV_FP8_SM90_MAX_M``).

Requirements (``is_supported``; the ops use the register-ring GEMV otherwise): 1 to MAX_M
tokens, K % 256 == 0, contiguous operands with 16-byte aligned bases, and a split whose B fits
in shared memory (``split_is_valid``). N is free (rows past N are clamped for loads and not
stored).
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

# tokens a launch takes: 16 block columns a token on the MMA's N side (at 8, 250 registers and a
# spill). The ops use it for one token only (``fp4mm.ops.dispatch.GEMV_FP8_SM90_MAX_M``: with
# more, the columns, B's build and the scale tile grow with the tokens and the register ring
# wins)
MAX_M = 4
WINDOW = 256  # K per window: 8 wgmmas of K 32, 16 scale blocks
ROWS = 64  # weight rows per CTA: one warpgroup, wgmma M
_ROWS = gl.constexpr(ROWS)  # the same, for the jit functions
# A CTA's B takes 4 KB of shared memory per window and token of the tile (8 tiles of 16 columns
# a token, 32 bytes a column); at most this much (of the H100's 227 KB a CTA)
B_SMEM_LIMIT = 192 * 1024

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
def _build_b(xw_ptr, M, stride_xw, win0, WINS: gl.constexpr, NT: gl.constexpr):
    """This CTA's B in shared memory, ``[8 WINS tiles, 16 NT columns, 32 K slots]`` E4M3:
    tile ``8 w + 4 h + t`` feeds wgmma ``4 h + t`` of window ``w``. Column ``16 tok + 8 h + 2 c
    + t // 2`` (token tok's block of that word) holds, in slots ``16 lohi + 4 c + j``, byte j of
    the low / high nibble bytes of the token's x word ``16 h + 4 c + t`` of the window; every
    other byte is zero, and so are the columns of tokens past M."""
    NW: gl.constexpr = gl.num_warps()
    C: gl.constexpr = 16 * NT
    layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=8)
    b_smem = gl.allocate_shared_memory(gl.float8e4nv, [WINS * 8, C, 32], layout)
    # [8 tiles, C columns, 8 four-byte groups of K slots]: the tile axis in registers, so the
    # 8 tiles split off without moving data; a thread owns one (column, group) of each tile
    bw_l: gl.constexpr = gl.BlockedLayout([8, 1, 1], [1, 4, 8], [1, NW, 1], [0, 2, 1])
    tile = gl.arange(0, 8, layout=gl.SliceLayout(1, gl.SliceLayout(2, bw_l)))
    tile = gl.expand_dims(gl.expand_dims(tile, 1), 2)  # [8, 1, 1]
    col = gl.arange(0, C, layout=gl.SliceLayout(0, gl.SliceLayout(2, bw_l)))
    col = gl.expand_dims(gl.expand_dims(col, 0), 2)  # [1, C, 1]
    g8 = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, bw_l)))
    g8 = gl.expand_dims(gl.expand_dims(g8, 0), 1)  # [1, 1, 8]
    c = g8 % 4
    h = tile // 4
    t = tile % 4
    has = (col % 16 == 8 * h + 2 * c + t // 2) & (col // 16 < M)  # this column's block?
    word_offs = (col // 16) * stride_xw + 16 * h + 4 * c + t
    for w in gl.static_range(WINS):
        word = gl.load(xw_ptr + word_offs + (win0 + w) * 32, mask=has, other=0)
        lo, hi = gl.inline_asm_elementwise(_E4M3_BYTES, "=r,=r,r", [word],
                                           dtype=(gl.int32, gl.int32), is_pure=True, pack=1)
        words = gl.where(g8 < 4, lo, hi).permute((1, 2, 0))  # [C, 8, 8 tiles]
        t0, t1, t2, t3, t4, t5, t6, t7 = _split8(words)
        _store_tile(b_smem.index(8 * w + 0), t0)
        _store_tile(b_smem.index(8 * w + 1), t1)
        _store_tile(b_smem.index(8 * w + 2), t2)
        _store_tile(b_smem.index(8 * w + 3), t3)
        _store_tile(b_smem.index(8 * w + 4), t4)
        _store_tile(b_smem.index(8 * w + 5), t5)
        _store_tile(b_smem.index(8 * w + 6), t6)
        _store_tile(b_smem.index(8 * w + 7), t7)
    fence_async_shared()
    return b_smem


@gluon.jit
def _store_tile(dst, words):
    """[C, 8] int32 (four E4M3 bytes each, in K-slot order) -> the [C, 32] E4M3 tile ``dst``."""
    C: gl.constexpr = words.shape[0]
    b = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r,r,r,r", [_copies(words, 4)],
                                  dtype=gl.int8, is_pure=True, pack=4)  # [C, 8, 4]
    dst.store(b.reshape([C, 32]).to(gl.float8e4nv, bitcast=True))


@gluon.jit
def _window(acc, words, i, ws_ptr, s_offs, xs_ptr, xs_offs, x_live, b_smem,
            a_l: gl.constexpr):
    """Window ``i``: the [64, 32] weight ``words`` -> 8 E4M3 A tiles, 8 wgmmas into fresh block
    sums, scaled into ``acc`` [64, 16 NT]."""
    R: gl.constexpr = words.shape[0]
    sw = gl.load(ws_ptr + s_offs + i * 16).to(gl.float8e4nv, bitcast=True).to(gl.float32)
    sx = gl.load(xs_ptr + xs_offs + i * 16, mask=x_live, other=0).to(gl.float8e4nv,
                                                                     bitcast=True)
    scale = sw * gl.expand_dims(sx.to(gl.float32) * 4096.0, 0)  # 2^12: both codes are * 2^-6
    v = gl.inline_asm_elementwise(_E4M3_BYTES, "=r,=r" + ",r" * 8, [_copies(words, 8)],
                                  dtype=gl.int8, is_pure=True, pack=8)
    # [R, word 16 h + 4 c + t, lohi j] -> 8 tiles (h, t) of [R, K slot 16 lohi + 4 c + j]
    v = v.reshape([R, 2, 4, 4, 2, 4]).permute((0, 4, 2, 5, 1, 3)).reshape([R, 32, 8])
    s0, s1, s2, s3, s4, s5, s6, s7 = _split8(v.to(gl.float8e4nv, bitcast=True))
    base = i * 8
    d = warpgroup_mma(gl.convert_layout(s0, a_l, assert_trivial=True),
                      b_smem.index(base).permute((1, 0)), acc, use_acc=False, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s1, a_l, assert_trivial=True),
                      b_smem.index(base + 1).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s2, a_l, assert_trivial=True),
                      b_smem.index(base + 2).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s3, a_l, assert_trivial=True),
                      b_smem.index(base + 3).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s4, a_l, assert_trivial=True),
                      b_smem.index(base + 4).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s5, a_l, assert_trivial=True),
                      b_smem.index(base + 5).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s6, a_l, assert_trivial=True),
                      b_smem.index(base + 6).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(gl.convert_layout(s7, a_l, assert_trivial=True),
                      b_smem.index(base + 7).permute((1, 0)), d, is_async=True)
    # (the 8-bit A tiles cannot be deps of the wait in Triton 3.6; nothing writes their
    # registers before it, and the compile test checks ptxas kept the wgmmas pipelined)
    d = warpgroup_mma_wait(0, deps=[d])
    return acc + d * scale


@gluon.jit
def _fp4_gemv_fp8_sm90_kernel(w_ptr, ws_ptr, xw_ptr, xs_ptr, out_ptr, M, N, KB, KW, alpha,
                              alpha_ptr, stride_om, WINS: gl.constexpr, NT: gl.constexpr,
                              PARTIAL: gl.constexpr, ALPHA_PTR: gl.constexpr):
    """64 weight rows x NT tokens x WINS windows of 256 K per CTA (grid: row blocks x splits).
    w_ptr int32 ``[N, K/8]`` code words; ws_ptr uint8 ``[N, K/16]``; xw_ptr int32 ``[M, K/8]``;
    xs_ptr uint8 ``[M, K/16]``; KB = K/16, KW = K/8. PARTIAL: fp32 partials ``[splits, M, N]``,
    else ``alpha * y`` in out's dtype (row stride ``stride_om``)."""
    gl.static_assert(gl.num_warps() == 4, "one warpgroup: launch with num_warps=4")
    # PDL: x (and alpha) may come from the kernel before; wait for it before any memory access
    gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                              is_pure=False, pack=1)
    C: gl.constexpr = 16 * NT
    row0 = gl.program_id(0) * _ROWS
    win0 = gl.program_id(1) * WINS
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, C, 32])
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
    b_smem = _build_b(xw_ptr, M, KW, win0, WINS, NT)

    rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, mma))
    cols = gl.arange(0, C, layout=gl.SliceLayout(0, mma))  # token cols // 16, block cols % 16
    s_offs = (gl.expand_dims(gl.minimum(rows, N - 1), 1).to(gl.int64) * KB
              + gl.expand_dims(cols % 16, 0) + win0 * 16)
    xs_offs = (cols // 16) * KB + cols % 16 + win0 * 16
    x_live = cols // 16 < M
    acc = gl.zeros([_ROWS, C], gl.float32, mma)
    for i in range(WINS):
        more = w_offs * 0 + i + 1 < WINS
        words_next = gl.load(w_ptr + w_offs + (i + 1) * 32, mask=more)
        acc = _window(acc, words, i, ws_ptr, s_offs, xs_ptr, xs_offs, x_live, b_smem, a_l)
        words = words_next
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [],
                              dtype=gl.int32, is_pure=False, pack=1)
    y = gl.sum(acc.reshape([_ROWS, NT, 16]), axis=2)  # [64 rows, NT tokens]
    y_rows = row0 + gl.arange(0, _ROWS, layout=gl.SliceLayout(1, y.type.layout))
    y_toks = gl.arange(0, NT, layout=gl.SliceLayout(0, y.type.layout))
    live = gl.expand_dims(y_rows < N, 1) & gl.expand_dims(y_toks < M, 0)
    if PARTIAL:
        offs = gl.program_id(1) * M * N + gl.expand_dims(y_toks, 0) * N + gl.expand_dims(y_rows, 1)
        gl.store(out_ptr + offs, y, mask=live)
    else:
        if ALPHA_PTR:
            alpha = alpha * gl.load(alpha_ptr)
        offs = gl.expand_dims(y_toks, 0) * stride_om + gl.expand_dims(y_rows, 1)
        gl.store(out_ptr + offs, (y * alpha).to(out_ptr.dtype.element_ty), mask=live)


# ----------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------
def token_tile(M: int) -> int:
    """Tokens per CTA (NT: the MMA's N side is 16 NT block columns)."""
    return triton.next_power_of_2(M)


def is_supported(device, M: int, K: int, *tensors: torch.Tensor) -> bool:
    """True where this kernel applies: Hopper, 1 <= M <= MAX_M tokens, K % 256 == 0, every
    operand contiguous with a 16-byte aligned base."""
    return (is_hopper(device) and 1 <= M <= MAX_M and K % WINDOW == 0
            and all(t.is_contiguous() and t.data_ptr() % 16 == 0 for t in tensors))


def b_smem_bytes(windows_per_cta: int, M: int) -> int:
    """Shared memory of a CTA's B (x as E4M3 block columns)."""
    return windows_per_cta * 8 * 16 * token_tile(M) * 32


def split_is_valid(split: int, M: int, K: int) -> bool:
    """``split`` divides the window count and leaves B within ``B_SMEM_LIMIT``."""
    windows = K // WINDOW
    return (split >= 1 and windows % split == 0
            and b_smem_bytes(windows // split, M) <= B_SMEM_LIMIT)


def choose_split(N: int, K: int, M: int = 1) -> int:
    """K slices (grid axis 1): the smallest divisor of the window count that leaves at most
    8 / token_tile(M) windows a CTA (B takes 4 KB of shared memory per window and token) and at
    least 176 CTAs (4/3 per SM of an H100), else the largest divisor.
    Measured at M = 1 on an H100 (graph medians over eight shapes, docs/perf-log.md,
    ``fp4_gemv_fp8_sm90``): the best split at 18432 x 3072 (2), 8192 x 8192 (4), 14336 x 4096
    (2), 28672 x 4096 (2) and 4096 x 4096 (4); within 2-6% of it at 3072 x 3072, 5120 x 5120 and
    4096 x 14336."""
    windows = K // WINDOW
    blocks = triton.cdiv(N, ROWS)
    most = max(1, 8 // token_tile(M))
    valid = [s for s in range(1, windows + 1) if split_is_valid(s, M, K)]
    return next((s for s in valid if windows // s <= most and blocks * s >= 176), valid[-1])


def gemv_fp8_sm90(x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor,
                  w_scales: torch.Tensor, alpha, out: torch.Tensor, *,
                  split: int | None = None) -> None:
    """``out = alpha * x @ W^T`` (written in place) for NVFP4 tokens and NVFP4 weights.

    Args:
        x_q: uint8 ``(M, K/2)`` E2M1 codes, 1 <= M <= MAX_M; x_scales: uint8 / float8_e4m3fn
            ``(M, K/16)``.
        w_q: uint8 ``(N, K/2)`` codes; w_scales: uint8 / float8_e4m3fn ``(N, K/16)``. Both
            operands in the same nibble order (either: the product does not depend on it).
        alpha: fp32 factor: a float or a one-element float32 device tensor
            (``fp4mm.kernels.alpha``).
        out: contiguous ``(M, N)`` fp16/bf16/fp32.
        split: K slices, a divisor of K / 256 that :func:`split_is_valid` accepts (default
            :func:`choose_split`).
    The caller checks :func:`is_supported`; shapes and dtypes are validated by ``fp4mm.ops``.
    """
    M, N, K = x_q.shape[0], w_q.shape[0], w_q.shape[1] * 2
    if not 1 <= M <= MAX_M:
        raise ValueError(f"x_q: expected 1 to {MAX_M} rows (tokens), got {M}")
    windows = K // WINDOW
    if K % WINDOW:
        raise ValueError(f"w_q: expected K (2 * columns) a multiple of {WINDOW}, got {K}")
    split = choose_split(N, K, M) if split is None else split
    if split < 1 or windows % split:
        raise ValueError(f"split: expected a divisor of K / {WINDOW} = {windows}, got {split}")
    if not split_is_valid(split, M, K):
        raise ValueError(f"split: {split} leaves {windows // split} windows a CTA, whose x tiles "
                         f"({token_tile(M)} tokens) need {b_smem_bytes(windows // split, M)} "
                         f"bytes of shared memory, more than {B_SMEM_LIMIT}; use a larger split")
    dst = (torch.empty((split, M, N), dtype=torch.float32, device=out.device) if split > 1
           else out)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    _fp4_gemv_fp8_sm90_kernel[(triton.cdiv(N, ROWS), split)](
        w_q.view(torch.int32), w_scales.view(torch.uint8), x_q.view(torch.int32),
        x_scales.view(torch.uint8), dst, M, N, K // 16, K // 8, a, alpha_ptr, out.stride(0),
        WINS=windows // split, NT=token_tile(M), PARTIAL=split > 1,
        ALPHA_PTR=alpha_on_device and split == 1, num_warps=4, launch_pdl=True)
    if split > 1:
        from fp4mm.kernels.fp4_gemv import reduce_partials

        reduce_partials(dst, out, alpha, pdl=True)


def nvfp4_mm_gemv_fp8_sm90(x_q, x_scales, w_q, w_scales, alpha, order: str, out) -> None:
    """W4A4 with the signature of the other GEMVs' ``nvfp4_mm_*`` launchers (``order`` is not
    needed: the product does not depend on it when both operands share it)."""
    gemv_fp8_sm90(x_q, x_scales, w_q, w_scales, alpha, out)
