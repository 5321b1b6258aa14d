"""PROBE (session 24): W4A4 decode for 5-64 tokens on fp16 ``wgmma``, x decoded once per CTA.

The register-ring GEMV (``fp4_gemv_sm90``) decodes x again in every warp at every K step: at
16 tokens that is a third to a half of its decode work. Here each CTA decodes its K range of x
once into shared memory (``e2m1 * e4m3`` in fp16, exact, in the ring's K-slot order), and the
weights go from global memory into the registers of a register-A fp16 ``wgmma`` (64 rows, one
warpgroup), decoded as in the ring (the same ``_decode``, both operands in the conversion's
element order, so no ``prmt``). Split K over grid axis 1, partials summed by ``fp4_gemv``'s
reduce kernel.
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

from fp4mm.kernels.alpha import alpha_args
from fp4mm.kernels.fp4_gemv_sm90 import (
    _DECODE_HIGH_UNORDERED,
    _DECODE_LOW_UNORDERED,
    KS,
    _decode,
    _epilogue,
    _join8,
    _load_w,
    _operand_layouts,
)

ROWS = 64
MAX_M = 64
_ROWS = gl.constexpr(ROWS)
_KSTEP = gl.constexpr(KS)


@gluon.constexpr_function
def _x_words_layout(NT: int, P: int):
    """[NT tokens, 16 P words] (P steps of 128 K; word 16 p + 4 c + w' of a step): a thread
    holds the four words c = 0..3 of one (token, p, w'), so its decoded pairs fill four 16-byte
    runs of B's K slots (32 w' + [0, 32)); lanes: w', p, then tokens; warps and any registers
    left: tokens."""
    nt_bits, p_bits = NT.bit_length() - 1, P.bit_length() - 1
    lane_tok = 5 - 2 - p_bits
    tok = [[1 << b, 0] for b in range(nt_bits)]
    lanes = [[0, 1], [0, 2]] + [[0, 16 << b] for b in range(p_bits)] + tok[:lane_tok]
    return gl.DistributedLinearLayout(reg_bases=[[0, 4], [0, 8]] + tok[lane_tok + 2:],
                                      lane_bases=lanes, warp_bases=tok[lane_tok:lane_tok + 2],
                                      block_bases=[], shape=[NT, 16 * P])


@gluon.jit
def _build_b_steps(x_ptr, xs_ptr, M, STEPS, i0, KW, KB, NT: gl.constexpr, P: gl.constexpr,
                   HIGH_FIRST: gl.constexpr, WL: gl.constexpr):
    """x (int32 words, K/8 a row = KW; int16 scale pairs, K/32 = KB) of steps i0 .. i0 + P - 1
    as B rows [(p, slot // 64, token), slot % 64] fp16: each
    value ``e2m1 * e4m3`` of its word's block, in the slot order of ``_decode`` (UNORDERED):
    word 4 c + w' of a step, output e of its decode, goes to slot
    32 w' + 16 (e // 4) + 8 ((e // 2) % 2) + 2 c + e % 2. Tokens past M and steps past STEPS
    are zero."""
    t = gl.expand_dims(gl.arange(0, NT, layout=gl.SliceLayout(1, WL)), 1)  # [NT, 1]
    q = gl.expand_dims(gl.arange(0, 16 * P, layout=gl.SliceLayout(0, WL)), 0)  # [1, 16 P]
    step = i0 + q // 16
    c = (q % 16) // 4
    w = q % 4
    live = (t < M) & (step < STEPS)
    words = gl.load(x_ptr + t * KW + step * 16 + 4 * c + w, mask=live, other=0)
    # the pair of scale bytes of blocks 2 c, 2 c + 1 (int16 view), then block 2 c + w' // 2's
    sp = gl.load(xs_ptr + t * KB + step * 4 + c, mask=live, other=0).to(gl.int32)
    sb = ((sp >> (8 * (w // 2))) & 0xFF).to(gl.uint8)
    # E4M3 scale * 2^6 in fp16 (exact), as an fp16x2 pair (s, s) in one int32
    sh = (sb.to(gl.float8e4nv, bitcast=True).to(gl.float16) * 64.0).to(gl.int16, bitcast=True)
    s32 = sh.to(gl.int32) & 0xFFFF
    s2 = s32 | (s32 << 16)
    w8 = _join8(words, words, words, words, words, words, words, words)
    s8 = _join8(s2, s2, s2, s2, s2, s2, s2, s2)
    if HIGH_FIRST:
        v = gl.inline_asm_elementwise(_DECODE_HIGH_UNORDERED, "=r,=r,=r,=r" + ",r" * 16,
                                      [w8, s8], dtype=gl.float16, is_pure=True, pack=8)
    else:
        v = gl.inline_asm_elementwise(_DECODE_LOW_UNORDERED, "=r,=r,=r,=r" + ",r" * 16,
                                      [w8, s8], dtype=gl.float16, is_pure=True, pack=8)
    # [t, p, c, w', e2, e1, e0] -> [p, t, w', e2, e1, c, e0]
    v = v.reshape([NT, P, 4, 4, 2, 2, 2]).permute((1, 0, 3, 4, 5, 2, 6))
    # [p, t, slot] -> rows (p, slot // 64, t) of 64 slots
    v = v.reshape([P, NT, 2, 64]).permute((0, 2, 1, 3))
    return v.reshape([P * 2 * NT, 64])


@gluon.jit
def _step_mma(acc, wd, sc, b_smem, tile, HIGH_FIRST: gl.constexpr, W_WORDS: gl.constexpr,
              a_l: gl.constexpr):
    """One 128-K step: the weights decoded into A [64, 128 slots], as two K halves against B
    tiles ``tile`` and ``tile + 1``; the previous step's MMAs retire under this one."""
    a = _decode(wd, sc, HIGH_FIRST, 64, W_WORDS, 128, gl.float16, True)
    lo, hi = gl.split(a.reshape([64, 2, 64]).permute((0, 2, 1)))
    acc = warpgroup_mma(gl.convert_layout(lo, a_l), b_smem.index(tile).permute((1, 0)), acc,
                        is_async=True)
    acc = warpgroup_mma(gl.convert_layout(hi, a_l), b_smem.index(tile + 1).permute((1, 0)),
                        acc, is_async=True)
    return warpgroup_mma_wait(num_outstanding=2, deps=(acc,))


@gluon.jit
def _fp4_gemv_wgmma_sm90_kernel(x_ptr, xs_ptr, w_ptr, ws_ptr, out_ptr, M, N, STEPS, alpha,
                                alpha_ptr, stride_om, NT: gl.constexpr, S: gl.constexpr,
                                HIGH_FIRST: gl.constexpr, PARTIAL: gl.constexpr,
                                ALPHA_PTR: gl.constexpr):
    """64 weight rows x S steps of 128 K x NT tokens per CTA (grid: row blocks x splits).
    x int32 (M, K/8) words, xs int16 (M, K/32) scale pairs; w int32 (N, K/8), ws int16
    (N, K/32). S is even; steps past STEPS load clamped addresses and zero x (exact zeros)."""
    gl.static_assert(gl.num_warps() == 4, "one warpgroup")
    gl.static_assert(S % 2 == 0, "S: whole turns of the two-slot ring")
    KSTEP: gl.constexpr = _KSTEP
    ROWS: gl.constexpr = _ROWS
    wg: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                 instr_shape=[16, NT, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=wg, k_width=2)
    WL: gl.constexpr = _operand_layouts(gl.to_linear_layout(a_l, [ROWS, KSTEP]), False)
    W_WORDS: gl.constexpr = WL[0]
    W_SCALES: gl.constexpr = WL[1]
    gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                              is_pure=False, pack=1)
    pid_n = gl.program_id(0)
    i_begin = gl.program_id(1) * S
    last = STEPS - 1
    rw = pid_n * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, W_WORDS))
    cw = gl.arange(0, KSTEP // 8, layout=gl.SliceLayout(0, W_WORDS))
    w_offs = gl.expand_dims(gl.minimum(rw, N - 1), 1) * (STEPS * 16) + gl.expand_dims(cw, 0)
    rs = gl.minimum(pid_n * ROWS + gl.arange(0, ROWS, layout=gl.SliceLayout(1, W_SCALES)), N - 1)
    cs = gl.arange(0, KSTEP // 32, layout=gl.SliceLayout(0, W_SCALES))
    s_offs = gl.expand_dims(rs, 1) * (STEPS * 4) + gl.expand_dims(cs, 0)
    wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin, last), True, False,
                       KSTEP, 0)
    wd1, sc1 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 1, last), True,
                       False, KSTEP, 0)

    # B: this CTA's x, decoded once, [S steps][NT tokens][128 K slots] fp16, P steps at a
    # time (a thread decodes 4 words and stores 4 runs of 16 bytes)
    P: gl.constexpr = max(1, 128 // (4 * NT))
    SB: gl.constexpr = (S + P - 1) // P * P  # steps built (those past S are unused)
    XW: gl.constexpr = _x_words_layout(NT, P)
    # B in tiles of [NT tokens, 64 K slots] (128-byte rows: with the 128-byte swizzle any run of
    # whole tiles is one row-major block), tile 2 s + h = slots 64 h .. 64 h + 63 of step s
    b_flat = gl.allocate_shared_memory(
        gl.float16, [SB * 2 * NT, 64],
        gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2))
    b_smem = b_flat._reinterpret(gl.float16, [SB * 2, NT, 64], b_flat.type.layout)
    b_build = b_flat._reinterpret(gl.float16, [SB // P, P * 2 * NT, 64], b_flat.type.layout)
    for s in range(0, SB, P):
        b_build.index(s // P).store(_build_b_steps(x_ptr, xs_ptr, M, STEPS, i_begin + s,
                                                   STEPS * 16, STEPS * 4, NT, P, HIGH_FIRST, XW))
    fence_async_shared()
    gl.thread_barrier()

    acc = gl.zeros([ROWS, NT], gl.float32, wg)
    for s in range(0, S, 2):
        i = i_begin + s
        acc = _step_mma(acc, wd0, sc0, b_smem, 2 * s, HIGH_FIRST, W_WORDS, a_l)
        wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i + 2, last), True, False,
                           KSTEP, 0)
        acc = _step_mma(acc, wd1, sc1, b_smem, 2 * s + 2, HIGH_FIRST, W_WORDS, a_l)
        wd1, sc1 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i + 3, last), True, False,
                           KSTEP, 0)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    _epilogue(acc, out_ptr, pid_n * ROWS, gl.program_id(1), M, N, alpha, alpha_ptr, stride_om,
              PARTIAL, True, ALPHA_PTR)


def _token_tile(M: int) -> int:
    return max(8, triton.next_power_of_2(M))


def choose_split(N: int, K: int, M: int) -> int:
    """Splits of an even step count each (probe rule: about 4 CTAs an SM of an H100)."""
    steps = K // KS
    blocks = triton.cdiv(N, ROWS)
    best = 1
    for s in range(1, steps + 1):
        per = triton.cdiv(steps, s)
        if per % 2 or per * s != steps:
            continue
        best = s
        if blocks * s >= 528:
            break
    return best


def gemv_wgmma_sm90(x_q, x_scales, w_q, w_scales, alpha, order: str, out, *,
                    split: int | None = None) -> None:
    M = x_q.shape[0]
    N, K = w_q.shape[0], w_q.shape[1] * 2
    if not 1 <= M <= MAX_M or K % (2 * KS):
        raise ValueError(f"probe: M 1-{MAX_M} and K % 256 == 0 (got M={M}, K={K})")
    steps = K // KS
    split = split or choose_split(N, K, M)
    per = triton.cdiv(steps, split)
    if per % 2 or per * split != steps:
        raise ValueError(f"split: {split} must leave an even step count in every split")
    partial = split > 1
    dst = (torch.empty((split, M, N), dtype=torch.float32, device=out.device) if partial
           else out)
    a, alpha_ptr, alpha_on_device = alpha_args(alpha, out)
    ws = w_scales.view(torch.uint8).view(torch.int16)
    _fp4_gemv_wgmma_sm90_kernel[(triton.cdiv(N, ROWS), split)](
        x_q.view(torch.int32), x_scales.view(torch.uint8).view(torch.int16), w_q.view(torch.int32),
        ws, dst, M, N, steps, a, alpha_ptr, N if partial else out.stride(0),
        NT=_token_tile(M), S=per, HIGH_FIRST=order == "high_first", PARTIAL=partial,
        ALPHA_PTR=alpha_on_device and not partial, num_warps=4, launch_pdl=True)
    if partial:
        from fp4mm.kernels.fp4_gemv import reduce_partials

        reduce_partials(dst, out, alpha, pdl=True)
