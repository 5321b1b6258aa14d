# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: W4A4 decode (M = 1) on E4M3 ``wgmma`` with register A, per-block sums as MMA columns.

The shipped GEMV decodes each 8-code word to four fp16x2 registers (7 bit ops, 4
``cvt.f16x2.e4m3x2``, 4 ``mul.f16x2`` by the scale) for fp16 ``mma.sync``: about 3 instructions
a code. An E2M1 code placed in an E4M3 byte (sign kept, the 3 other bits shifted left by 2) is
exactly ``e2m1 * 2^-6``, so 7 bit ops turn a word into the 8 bytes of an FP8 A fragment, with no
conversion and no scale multiply. E4M3 ``mma.sync`` is emulated on sm_90 (session 17), but
``wgmma`` takes an E4M3 A from registers. The block scales cannot ride in E4M3, so each MMA
column sums one 16-code block only: B (x, built once per CTA in shared memory) holds a
block's codes in that block's column and zeros elsewhere; 8 ``m64n16k32`` wgmmas cover a
256-K window (16 blocks, 16 columns), and the fp32 block sums are scaled by
``e4m3(w) * e4m3(x)`` (8 FFMA a thread per window) into a [64, 16] accumulator summed over
columns at the end. Each column sums 16 products of at most 12 significant bits, so the FP8
MMA's limited accumulation is exact; the oracle checks it.

Probe only: low_first order, M = 1, N % (16 num_warps) == 0, K % (256 split) == 0; one or two
warpgroups per CTA (64 rows each), split-K partials summed by the library's reduce kernel (split
1 writes alpha * y itself). Timed against the
shipped GEMV (``gemv_sm90``, its heuristic) in the same run, CUDA-graph medians over weight
copies that fill 3x the L2. Usage on an sm_90 machine:
``python scripts/gpu_gemv_fp8_wgmma.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    warpgroup_mma,
    warpgroup_mma_wait,
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402

# word (8 codes, low nibble first) -> $0: E4M3 bytes of codes 0, 2, 4, 6; $1: of codes 1, 3, 5, 7
_DECODE_E4M3 = gl.constexpr("""
{
.reg .b32 v4, t;
shl.b32 v4, $2, 4;
and.b32 t, v4, 0x70707070;
shr.b32 t, t, 2;
lop3.b32 $0, t, v4, 0x80808080, 0xF8;
and.b32 t, $2, 0x70707070;
shr.b32 t, t, 2;
lop3.b32 $1, t, $2, 0x80808080, 0xF8;
}
""")


@gluon.jit
def _copies(v, n: gl.constexpr):
    """``n`` (4 or 8) copies of ``v`` along a new last axis of n (an asm sees them as one
    pack: each join adds a register axis, last fastest)."""
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
    v = v.reshape([R, C, 2, 2, 2])
    a, b = gl.split(v)  # bit 0
    a0, a1 = gl.split(a)  # bit 1
    b0, b1 = gl.split(b)
    s0, s4 = gl.split(a0)  # bit 2
    s2, s6 = gl.split(a1)
    s1, s5 = gl.split(b0)
    s3, s7 = gl.split(b1)
    return s0, s1, s2, s3, s4, s5, s6, s7


@gluon.jit
def _window(acc, words, i, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l: gl.constexpr):
    """Window ``i``: decode ``words`` to 8 E4M3 A tiles, 8 wgmmas into fresh block sums, scale
    them into ``acc``."""
    R: gl.constexpr = words.shape[0]
    sw = gl.load(ws_ptr + s_offs + i * 16).to(gl.float8e4nv, bitcast=True).to(gl.float32)
    sx = gl.load(xs_ptr + (win0 + i) * 16 + cs).to(gl.float8e4nv, bitcast=True)
    # both operands are decoded as e2m1 * 2^-6: 2^12 restores the product
    scale = sw * gl.expand_dims(sx.to(gl.float32) * 4096.0, 0)
    v = gl.inline_asm_elementwise(_DECODE_E4M3, "=r,=r" + ",r" * 8, [_copies(words, 8)],
                                  dtype=gl.int8, is_pure=True,
                                  pack=8)  # [R, 32 words, 8]: lo bytes j, hi bytes j
    # (row, h, c, t, lohi, j) -> tiles (h, t) of [R, kslot = 16 lohi + 4 c + j]
    v = v.reshape([R, 2, 4, 4, 2, 4]).permute((0, 4, 2, 5, 1, 3)).reshape([R, 32, 8])
    s0, s1, s2, s3, s4, s5, s6, s7 = _split8(v.to(gl.float8e4nv, bitcast=True))
    a0 = gl.convert_layout(s0, a_l, assert_trivial=True)
    a1 = gl.convert_layout(s1, a_l, assert_trivial=True)
    a2 = gl.convert_layout(s2, a_l, assert_trivial=True)
    a3 = gl.convert_layout(s3, a_l, assert_trivial=True)
    a4 = gl.convert_layout(s4, a_l, assert_trivial=True)
    a5 = gl.convert_layout(s5, a_l, assert_trivial=True)
    a6 = gl.convert_layout(s6, a_l, assert_trivial=True)
    a7 = gl.convert_layout(s7, a_l, assert_trivial=True)
    base = i * 8
    d = warpgroup_mma(a0, b_smem.index(base).permute((1, 0)), acc, use_acc=False, is_async=True)
    d = warpgroup_mma(a1, b_smem.index(base + 1).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(a2, b_smem.index(base + 2).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(a3, b_smem.index(base + 3).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(a4, b_smem.index(base + 4).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(a5, b_smem.index(base + 5).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(a6, b_smem.index(base + 6).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma(a7, b_smem.index(base + 7).permute((1, 0)), d, is_async=True)
    d = warpgroup_mma_wait(0, deps=[d])  # (8-bit A tiles cannot be deps in Triton 3.6)
    return acc + d * scale


@gluon.jit
def _w4a4_fp8_gemv_kernel(w_ptr, ws_ptr, xw_ptr, xs_ptr, out_ptr, N, KB, KW, alpha,
                          WINS: gl.constexpr, TP: gl.constexpr, AHEAD: gl.constexpr,
                          PARTIAL: gl.constexpr):
    """num_warps / 4 warpgroups: R = 16 num_warps weight rows x WINS 256-K windows, AHEAD (1, 2
    or 4, dividing WINS) windows of weights loaded ahead; TP = WINS * 8 rounded up to a power of
    two. w_ptr int32 [N, K/8] code words; ws_ptr uint8 [N, K/16]; xw_ptr int32 [K/8]; xs_ptr
    uint8 [K/16]; out: PARTIAL fp32 [splits, N] partials, else [N] alpha * y (out's dtype)."""
    NW: gl.constexpr = gl.num_warps()
    R: gl.constexpr = 16 * NW
    pid_n = gl.program_id(0)
    pid_k = gl.program_id(1)
    row0 = pid_n * R
    win0 = pid_k * WINS
    # launched with PDL as the shipped GEMV is (x may come from the kernel before)
    gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                              is_pure=False, pack=1)
    SIGN: gl.constexpr = -0x7F7F7F80  # 0x80808080 as int32
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[NW, 1],
                                                  instr_shape=[16, 16, 32])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=4)
    # weight words of one window [R rows, 32 words]: word 16 h + 4 c + t of a row goes to lane
    # c (the A fragment's K group), registers t, h and row + 8 (so 16-byte loads per row half)
    w_l: gl.constexpr = gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 16], [8, 0]],
        lane_bases=[[0, 4], [0, 8], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16, 0], [32, 0]] + ([[64, 0]] if NW == 8 else []), block_bases=[],
        shape=[R, 32])

    rw = gl.arange(0, R, layout=gl.SliceLayout(1, w_l))
    cw = gl.arange(0, 32, layout=gl.SliceLayout(0, w_l))
    w_offs = gl.expand_dims(row0 + rw, 1).to(gl.int64) * KW + gl.expand_dims(cw, 0) + win0 * 32
    # the first windows' weights are requested before B is built, to overlap its latency
    words = gl.load(w_ptr + w_offs)
    if AHEAD >= 2:
        words_b = gl.load(w_ptr + w_offs + 32)
    if AHEAD == 4:
        words_c = gl.load(w_ptr + w_offs + 64)
        words_d = gl.load(w_ptr + w_offs + 96)

    # ---- B: x's codes as E4M3 in block columns, [WINS * 8 tiles, 16 cols, 32 kslots] --------
    # Tile 8 win + 4 h + t feeds the wgmma of word t of every thread's row half h in window
    # win; kslots 16 lohi + 4 c + j hold byte j of the lo / hi decode of x word 16 h + 4 c + t,
    # in column (block) 8 h + 2 c + t // 2 only. A thread builds whole 32-byte column rows.
    T: gl.constexpr = WINS * 8
    bw_l: gl.constexpr = gl.BlockedLayout([1, 1, 8], [2, 16, 1], [NW, 1, 1], [2, 1, 0])
    row_l: gl.constexpr = gl.SliceLayout(2, bw_l)
    tile = gl.expand_dims(gl.arange(0, TP, layout=gl.SliceLayout(1, row_l)), 1)  # [TP, 1]
    col = gl.expand_dims(gl.arange(0, 16, layout=gl.SliceLayout(0, row_l)), 0)  # [1, 16]
    win = tile // 8
    h = (tile // 4) % 2
    t = tile % 4
    off = col - 8 * h - t // 2  # = 2 c for the one c whose block is this column
    has = (off >= 0) & (off < 8) & (off % 2 == 0) & (tile < T)
    c = off // 2
    xword = gl.load(xw_ptr + (win0 + win) * 32 + 16 * h + 4 * c + t, mask=has, other=0)
    x4 = xword << 4
    # the decoder's bit ops in int32 (SIGN = 0x80808080; the 3-bit fields are masked before the
    # arithmetic shift, so no sign bit is shifted in)
    lo = gl.expand_dims(((x4 & 0x70707070) >> 2) | (x4 & SIGN), 2)
    hi = gl.expand_dims(((xword & 0x70707070) >> 2) | (xword & SIGN), 2)
    g8 = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(
        1, bw_l))), 0), 1)  # [1, 1, 8]
    c3 = gl.expand_dims(c, 2)
    bw = gl.where(g8 == c3, lo, gl.where(g8 == c3 + 4, hi, 0))  # [T, 16, 8] (0 where not has)
    bb = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r,r,r,r", [_copies(bw, 4)],
                                   dtype=gl.int8, is_pure=True, pack=4)  # [T, 16, 8, 4]
    bb = bb.reshape([TP * 16, 32]).to(gl.float8e4nv, bitcast=True)
    # 32-byte rows, 32-byte swizzle: every 16-row tile of the 2-D buffer is swizzled as a
    # [16, 32] tile on its own, so the 3-D view indexes tiles
    b_sl: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=8)
    b_flat = gl.allocate_shared_memory(gl.float8e4nv, [TP * 16, 32], b_sl, bb)
    b_smem = b_flat._reinterpret(gl.float8e4nv, [TP, 16, 32], b_sl)
    fence_async_shared()

    # ---- main loop over windows ---------------------------------------------------------------
    rs = gl.arange(0, R, layout=gl.SliceLayout(1, mma))
    cs = gl.arange(0, 16, layout=gl.SliceLayout(0, mma))
    s_offs = gl.expand_dims(row0 + rs, 1).to(gl.int64) * KB + gl.expand_dims(cs, 0) + win0 * 16
    acc = gl.zeros([R, 16], gl.float32, mma)
    if AHEAD == 1:
        for i in range(WINS):
            words_next = gl.load(w_ptr + w_offs + (i + 1) * 32, mask=w_offs * 0 + i + 1 < WINS)
            acc = _window(acc, words, i, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words = words_next
    elif AHEAD == 2:  # two slots, unrolled: a slot is reloaded right after its window is used
        for i in range(0, WINS, 2):
            acc = _window(acc, words, i, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words = gl.load(w_ptr + w_offs + (i + 2) * 32, mask=w_offs * 0 + i + 2 < WINS)
            acc = _window(acc, words_b, i + 1, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words_b = gl.load(w_ptr + w_offs + (i + 3) * 32, mask=w_offs * 0 + i + 3 < WINS)
    else:  # four slots
        for i in range(0, WINS, 4):
            acc = _window(acc, words, i, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words = gl.load(w_ptr + w_offs + (i + 4) * 32, mask=w_offs * 0 + i + 4 < WINS)
            acc = _window(acc, words_b, i + 1, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words_b = gl.load(w_ptr + w_offs + (i + 5) * 32, mask=w_offs * 0 + i + 5 < WINS)
            acc = _window(acc, words_c, i + 2, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words_c = gl.load(w_ptr + w_offs + (i + 6) * 32, mask=w_offs * 0 + i + 6 < WINS)
            acc = _window(acc, words_d, i + 3, ws_ptr, s_offs, xs_ptr, win0, cs, b_smem, a_l)
            words_d = gl.load(w_ptr + w_offs + (i + 7) * 32, mask=w_offs * 0 + i + 7 < WINS)
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [],
                              dtype=gl.int32, is_pure=False, pack=1)
    y = gl.sum(acc, axis=1)
    if PARTIAL:
        gl.store(out_ptr + pid_k * N + row0 + rs, y)
    else:
        gl.store(out_ptr + row0 + rs, (y * alpha).to(out_ptr.dtype.element_ty))


def gemv_fp8(xq, xs, wq, ws, alpha, out, split, ahead=1, num_warps=4):
    N, K = wq.shape[0], wq.shape[1] * 2
    rows = 16 * num_warps
    wins = K // 256 // split
    assert N % rows == 0 and K % (256 * split) == 0 and xq.shape[0] == 1 and wins % ahead == 0
    dst = (torch.empty((split, 1, N), dtype=torch.float32, device=out.device) if split > 1
           else out)
    _w4a4_fp8_gemv_kernel[(N // rows, split)](
        wq.view(torch.int32), ws.view(torch.uint8), xq.view(torch.int32), xs.view(torch.uint8),
        dst, N, K // 16, K // 8, alpha, WINS=wins, TP=triton.next_power_of_2(wins * 8),
        AHEAD=ahead, PARTIAL=split > 1, num_warps=num_warps, launch_pdl=True)
    if split > 1:
        reduce_partials(dst, out, alpha, pdl=True)


def main():
    from gpu_decode import save_rows, time_graph
    from gpu_gluon import check, gen

    from fp4mm.bench.cases import n_copies
    from fp4mm.kernels import fp4_gemv_sm90 as v

    order, alpha = "low_first", 1 / 64
    rows = []
    # K / (256 split) windows per CTA must be a power of two (the B build's aranges)
    for N, K, splits in ((18432, 3072, (1, 2, 3, 4, 6)), (8192, 8192, (1, 2, 4, 8)),
                         (3072, 3072, (2, 3, 4, 6, 12))):
        xq, xs, wq0, ws0 = gen(1, N, K, seed=N + K)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=200 + i)[2:] for i in range(copies - 1)]
        res = {}
        cands = [("shipped", None)] + [
            (f"fp8wgmma/split{s}/ahead{a}/nw{nw}", (s, a, nw))
            for s in splits for a in (1, 2) for nw in (4,)
            if K // 256 // s % a == 0]
        for name, cfg in cands:
            def run(i, o):
                w, s = wl[i]
                if cfg is None:
                    v.gemv_sm90(xq, xs, w, s, alpha, order, o)
                else:
                    gemv_fp8(xq, xs, w, s, alpha, o, *cfg)
            try:
                ok = True
                for odt in (torch.float32, torch.float16):
                    o = torch.full((1, N), float("nan"), dtype=odt, device="cuda")
                    run(0, o)
                    torch.cuda.synchronize()
                    ok = ok and check(o, xq, xs, wq0, ws0, alpha, order)[0]
                if not ok:
                    print(f"FAIL (not timed) {N}x{K} {name}", flush=True)
                    rows.append(dict(M=1, N=N, K=K, variant=name, correct=False))
                    continue
                out = torch.empty((1, N), dtype=torch.float16, device="cuda")
                t = time_graph([lambda i=i: run(i, out) for i in range(copies)])
            except Exception as e:  # noqa: BLE001
                print(f"ERROR {N}x{K} {name}: {type(e).__name__}: {str(e)[:400]}", flush=True)
                continue
            res[name] = t[0]
            gbs = (N * K // 2 + N * K // 16) / t[0] / 1e3
            rows.append(dict(M=1, N=N, K=K, variant=name, median_us=t[0], min_us=t[1],
                             max_us=t[2], gb_per_s=gbs, copies=copies, correct=True))
        best = sorted(res.items(), key=lambda r: r[1])
        print(f"{N}x{K} M=1: shipped {res.get('shipped', float('nan')):.2f} | "
              + "  ".join(f"{n} {t:.2f}" for n, t in best[:8]), flush=True)
    save_rows("gemv-fp8-wgmma", rows)


if __name__ == "__main__":
    main()
