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
    KS,
    _decode,
    _epilogue,
    _load_w,
    _operand_layouts,
)

ROWS = 64
MAX_M = 64
_ROWS = gl.constexpr(ROWS)
_KSTEP = gl.constexpr(KS)


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
    # x is decoded by the same helper in a register layout of the ring's B operand (only which
    # thread decodes what; the store to shared memory places it)
    mma2: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1],
                                                   instr_shape=[16, 8])
    b2: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma2, k_width=2)
    XL: gl.constexpr = _operand_layouts(gl.to_linear_layout(b2, [KSTEP, NT]), True)
    X_WORDS: gl.constexpr = XL[0]
    X_SCALES: gl.constexpr = XL[1]

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

    # B: this CTA's x, decoded once, [S steps][NT tokens][128 K slots] fp16
    ta = gl.minimum(gl.arange(0, NT, layout=gl.SliceLayout(1, X_WORDS)), M - 1)
    xa_offs = gl.expand_dims(ta, 1) * (STEPS * 16) + gl.expand_dims(
        gl.arange(0, KSTEP // 8, layout=gl.SliceLayout(0, X_WORDS)), 0)
    tl_ = gl.arange(0, NT, layout=gl.SliceLayout(1, X_WORDS))
    tb = gl.minimum(gl.arange(0, NT, layout=gl.SliceLayout(1, X_SCALES)), M - 1)
    xb_offs = gl.expand_dims(tb, 1) * (STEPS * 4) + gl.expand_dims(
        gl.arange(0, KSTEP // 32, layout=gl.SliceLayout(0, X_SCALES)), 0)
    tbl = gl.arange(0, NT, layout=gl.SliceLayout(1, X_SCALES))
    b_layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16,
                                                  rank=2)
    flat = gl.allocate_shared_memory(gl.float16, [S * NT, KSTEP], b_layout)
    b_smem = flat._reinterpret(gl.float16, [S, NT, KSTEP], b_layout)
    for s in range(S):
        i = i_begin + s
        live_a = gl.expand_dims(tl_ < M, 1) & (xa_offs * 0 + i < STEPS)
        live_b = gl.expand_dims(tbl < M, 1) & (xb_offs * 0 + i < STEPS)
        xa = gl.load(x_ptr + xa_offs + gl.minimum(i, last) * (KSTEP // 8), mask=live_a, other=0)
        xb = gl.load(xs_ptr + xb_offs + gl.minimum(i, last) * (KSTEP // 32), mask=live_b,
                     other=0)
        b_smem.index(s).store(_decode(xa, xb, HIGH_FIRST, NT, X_WORDS, KSTEP, gl.float16, True))
    fence_async_shared()
    gl.thread_barrier()

    acc = gl.zeros([ROWS, NT], gl.float32, wg)
    for s in range(0, S, 2):
        i = i_begin + s
        a0 = gl.convert_layout(_decode(wd0, sc0, HIGH_FIRST, ROWS, W_WORDS, KSTEP, gl.float16,
                                       True), a_l)
        acc = warpgroup_mma(a0, b_smem.index(s).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
        wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i + 2, last), True, False,
                           KSTEP, 0)
        a1 = gl.convert_layout(_decode(wd1, sc1, HIGH_FIRST, ROWS, W_WORDS, KSTEP, gl.float16,
                                       True), a_l)
        acc = warpgroup_mma(a1, b_smem.index(s + 1).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
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
