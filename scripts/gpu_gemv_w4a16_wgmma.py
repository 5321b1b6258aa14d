# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: NVFP4 weights x one fp16/bf16 token on 16-bit register-A ``wgmma`` with block columns
(the ``fp4_gemv_fp8_sm90`` scheme for 16-bit x).

16-bit x is not E4M3, so both operands stay 16-bit: the weight codes decode to fp16
``e2m1 * 2^-6`` (7 bit ops and 4 ``cvt.f16x2.e4m3x2`` a word, without the register ring's 2
element-order ``prmt`` and 4 ``mul.f16x2`` by the scale) or to exact bf16 ``e2m1`` (the byte-table
decoder, without its 4 ``mul.bf16x2``); B (x, built once per CTA in shared memory) holds each
16-value block of x in that block's column, so 16 ``m64n16k16`` wgmmas give a 256-K window's
16 block sums, which the E4M3 scales multiply in fp32. Exact: each product is exact in fp32 and
the sums are fp32.

Probe only: M = 1, N % 64 == 0, K % (256 split) == 0, low_first. Timed against the register-ring
GEMV (``gemv_sm90``, its heuristic) in the same run, CUDA-graph medians over distinct weight
copies that fill 3x the L2, three rounds; every variant checked against the oracle first.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_w4a16_wgmma.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    warpgroup_mma_wait,
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from fp4mm.kernels.fp4_decode import (  # noqa: E402
    BF16_PAIR_SELECTORS,
    E2M1_WORD_BF16_PTX,
    E2M1_WORD_PTX,
)
from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402
from fp4mm.kernels.fp4_gemv_fp8_sm90 import _mma, _split8  # noqa: E402

_ORDER = """prmt.b32 p0, FIRST, SECOND, 0x5140;
prmt.b32 p1, FIRST, SECOND, 0x7362;
mov.b32 {h0, h1}, p0;
mov.b32 {h2, h3}, p1;"""
_STORE4 = "mov.b32 $0, q0;\nmov.b32 $1, q1;\nmov.b32 $2, q2;\nmov.b32 $3, q3;"
# fp16 e2m1 * 2^-6, pairs (c0, c2), (c4, c6), (c1, c3), (c5, c7) (no element-order prmt)
_CODES_F16 = gl.constexpr(
    E2M1_WORD_PTX.replace(_ORDER, "mov.b32 {h0, h1}, lo;\nmov.b32 {h2, h3}, hi;")
    .replace("IN", "$4").replace("OUTPUT", "").replace("STORE", _STORE4))
# exact bf16 e2m1, pairs in element order (c0, c1), (c2, c3), (c4, c5), (c6, c7)
_CODES_BF16 = gl.constexpr(
    E2M1_WORD_BF16_PTX.replace("P01", BF16_PAIR_SELECTORS["low_first"][0])
    .replace("P23", BF16_PAIR_SELECTORS["low_first"][1]).replace("IN", "$4")
    .replace("OUTPUT", "").replace("STORE", _STORE4))


@gluon.jit
def _split16(v):
    """[R, C, 16] -> its 16 slices [R, C] along the last axis, in index order."""
    R: gl.constexpr = v.shape[0]
    C: gl.constexpr = v.shape[1]
    ev, od = gl.split(v.reshape([R, C, 8, 2]))  # index bit 0
    e0, e1, e2, e3, e4, e5, e6, e7 = _split8(ev)
    o0, o1, o2, o3, o4, o5, o6, o7 = _split8(od)
    return e0, o0, e1, o1, e2, o2, e3, o3, e4, o4, e5, o5, e6, o6, e7, o7


@gluon.jit
def _window(acc, words, i, ws_ptr, s_offs, b_smem, a_l: gl.constexpr, DTYPE: gl.constexpr):
    R: gl.constexpr = words.shape[0]
    sw = gl.load(ws_ptr + s_offs + i * 16).to(gl.float8e4nv, bitcast=True).to(gl.float32)
    if DTYPE == gl.float16:
        v = gl.inline_asm_elementwise(_CODES_F16, "=r,=r,=r,=r" + ",r" * 8,
                                      [gl.join(gl.join(gl.join(words, words),
                                                       gl.join(words, words)),
                                               gl.join(gl.join(words, words),
                                                       gl.join(words, words)))
                                       .reshape([R, 32, 8])],
                                      dtype=gl.float16, is_pure=True, pack=8)
        scale = sw * 64.0  # the codes are e2m1 * 2^-6
    else:
        v = gl.inline_asm_elementwise(_CODES_BF16, "=r,=r,=r,=r" + ",r" * 8,
                                      [gl.join(gl.join(gl.join(words, words),
                                                       gl.join(words, words)),
                                               gl.join(gl.join(words, words),
                                                       gl.join(words, words)))
                                       .reshape([R, 32, 8])],
                                      dtype=gl.bfloat16, is_pure=True, pack=8)
        scale = sw
    # [R, word 16 h + 4 c + t, half 2 j + e], j = 2 u + jj -> tiles 8 h + 2 t + u of
    # [R, K slot 8 jj + 2 c + e]
    v = v.reshape([R, 2, 4, 4, 2, 2, 2]).permute((0, 5, 2, 6, 1, 3, 4)).reshape([R, 16, 16])
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15 = _split16(v)
    base = i * 16
    d = _mma(s0, b_smem, base, acc, False, a_l)
    d = _mma(s1, b_smem, base + 1, d, True, a_l)
    d = _mma(s2, b_smem, base + 2, d, True, a_l)
    d = _mma(s3, b_smem, base + 3, d, True, a_l)
    d = _mma(s4, b_smem, base + 4, d, True, a_l)
    d = _mma(s5, b_smem, base + 5, d, True, a_l)
    d = _mma(s6, b_smem, base + 6, d, True, a_l)
    d = _mma(s7, b_smem, base + 7, d, True, a_l)
    d = _mma(s8, b_smem, base + 8, d, True, a_l)
    d = _mma(s9, b_smem, base + 9, d, True, a_l)
    d = _mma(s10, b_smem, base + 10, d, True, a_l)
    d = _mma(s11, b_smem, base + 11, d, True, a_l)
    d = _mma(s12, b_smem, base + 12, d, True, a_l)
    d = _mma(s13, b_smem, base + 13, d, True, a_l)
    d = _mma(s14, b_smem, base + 14, d, True, a_l)
    d = _mma(s15, b_smem, base + 15, d, True, a_l)
    d = warpgroup_mma_wait(0, deps=[d])
    return acc + d * scale


@gluon.jit
def _kernel(w_ptr, ws_ptr, x_ptr, out_ptr, N, KB, KW, alpha, WINS: gl.constexpr,
            TP: gl.constexpr, PARTIAL: gl.constexpr, DTYPE: gl.constexpr):
    gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                              is_pure=False, pack=1)
    row0 = gl.program_id(0) * 64
    win0 = gl.program_id(1) * WINS
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, 16, 16])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    w_l: gl.constexpr = gl.DistributedLinearLayout(
        reg_bases=[[0, 1], [0, 2], [0, 16], [8, 0]],
        lane_bases=[[0, 4], [0, 8], [1, 0], [2, 0], [4, 0]],
        warp_bases=[[16, 0], [32, 0]], block_bases=[], shape=[64, 32])
    rows_w = row0 + gl.arange(0, 64, layout=gl.SliceLayout(1, w_l))
    w_offs = (gl.expand_dims(rows_w, 1).to(gl.int64) * KW
              + gl.expand_dims(gl.arange(0, 32, layout=gl.SliceLayout(0, w_l)), 0) + win0 * 32)
    words = gl.load(w_ptr + w_offs)

    # ---- B: [TP tiles, 16 columns, 16 K slots] of x; tile 16 w + 8 h + 2 t + u, column
    # 8 h + 2 c + t // 2, slots 8 jj + 2 c + e <- x at K 8 (16 h + 4 c + t) + code(2 u + jj, e)
    T: gl.constexpr = WINS * 16
    bw_l: gl.constexpr = gl.BlockedLayout([1, 1, 8], [2, 16, 1], [4, 1, 1], [2, 1, 0])
    tile = gl.arange(0, TP, layout=gl.SliceLayout(1, gl.SliceLayout(2, bw_l)))
    tile = gl.expand_dims(gl.expand_dims(tile, 1), 2)  # [TP, 1, 1]
    col = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, bw_l)))
    col = gl.expand_dims(gl.expand_dims(col, 0), 2)  # [1, 16, 1]
    ps = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, bw_l)))
    ps = gl.expand_dims(gl.expand_dims(ps, 0), 1)  # [1, 1, 8]
    w = tile // 16
    h = (tile // 8) % 2
    t = (tile // 2) % 4
    u = tile % 2
    jj = ps // 4
    c = ps % 4
    j = 2 * u + jj
    has = (col == 8 * h + 2 * c + t // 2) & (tile < T)
    k0 = (win0 + w) * 256 + 8 * (16 * h + 4 * c + t)
    if DTYPE == gl.float16:  # pairs (c0, c2), (c4, c6), (c1, c3), (c5, c7)
        code0 = 4 * (j % 2) + j // 2
        code1 = code0 + 2
    else:  # element order
        code0 = 2 * j
        code1 = code0 + 1
    lo = gl.load(x_ptr + k0 + code0, mask=has, other=0).to(gl.int32) & 0xFFFF
    hi = gl.load(x_ptr + k0 + code1, mask=has, other=0).to(gl.int32)
    pair = lo | (hi << 16)  # [TP, 16, 8]
    if DTYPE == gl.float16:
        b = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r,r", [gl.join(pair, pair)],
                                      dtype=gl.float16, is_pure=True, pack=2)
    else:
        b = gl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r,r", [gl.join(pair, pair)],
                                      dtype=gl.bfloat16, is_pure=True, pack=2)
    layout: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=32, element_bitwidth=16)
    flat = gl.allocate_shared_memory(DTYPE, [TP * 16, 16], layout, b.reshape([TP * 16, 16]))
    fence_async_shared()
    b_smem = flat._reinterpret(DTYPE, [TP, 16, 16], layout)

    rows = row0 + gl.arange(0, 64, layout=gl.SliceLayout(1, mma))
    cols = gl.arange(0, 16, layout=gl.SliceLayout(0, mma))
    s_offs = gl.expand_dims(rows, 1).to(gl.int64) * KB + gl.expand_dims(cols, 0) + win0 * 16
    acc = gl.zeros([64, 16], gl.float32, mma)
    for i in range(WINS):
        more = w_offs * 0 + i + 1 < WINS
        words_next = gl.load(w_ptr + w_offs + (i + 1) * 32, mask=more)
        acc = _window(acc, words, i, ws_ptr, s_offs, b_smem, a_l, DTYPE)
        words = words_next
    gl.inline_asm_elementwise("griddepcontrol.launch_dependents; // $0", "=r", [],
                              dtype=gl.int32, is_pure=False, pack=1)
    y = gl.sum(acc, axis=1)
    if PARTIAL:
        gl.store(out_ptr + gl.program_id(1) * N + rows, y)
    else:
        gl.store(out_ptr + rows, (y * alpha).to(out_ptr.dtype.element_ty))


def gemv_w4a16_wgmma(x, wq, ws, alpha, out, split):
    N, K = wq.shape[0], wq.shape[1] * 2
    assert N % 64 == 0 and K % (256 * split) == 0 and x.shape[0] == 1
    wins = K // 256 // split
    dst = torch.empty((split, 1, N), dtype=torch.float32, device=out.device) if split > 1 else out
    dt = gl.float16 if x.dtype == torch.float16 else gl.bfloat16
    _kernel[(N // 64, split)](wq.view(torch.int32), ws.view(torch.uint8), x.view(torch.int16),
                              dst, N, K // 16, K // 8, alpha, WINS=wins,
                              TP=triton.next_power_of_2(16 * wins), PARTIAL=split > 1, DTYPE=dt,
                              num_warps=4, launch_pdl=True)
    if split > 1:
        reduce_partials(dst, out, alpha, pdl=True)


def main():
    from gpu_decode import close, save_rows, time_graph
    from gpu_gluon import gen

    from fp4mm.bench.cases import n_copies
    from fp4mm.formats import dequantize_nvfp4_blocks
    from fp4mm.kernels import fp4_gemv_sm90 as V

    rows = []
    # (at 6 windows a CTA the one-tensor B build takes 219 registers; 4: 159)
    for N, K, splits in ((18432, 3072, (3, 4, 6, 12)), (8192, 8192, (4, 8, 16)),
                         (3072, 3072, (4, 6, 12))):
        _, _, wq0, ws0 = gen(1, N, K, seed=N + K)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=600 + i)[2:] for i in range(copies - 1)]
        for dt in (torch.float16, torch.bfloat16):
            x = (torch.randn((1, K), device="cuda") * 0.5).to(dt)
            ref = x.float() @ dequantize_nvfp4_blocks(wq0, ws0, "low_first").T * 0.37
            kernels = {"ring": lambda w, s, o: V.gemv_sm90(x, None, w, s, 0.37, "low_first", o)}
            for sp in splits:
                kernels[f"wgmma/split{sp}"] = (
                    lambda w, s, o, sp=sp: gemv_w4a16_wgmma(x, w, s, 0.37, o, sp))
            ok = {}
            for name, k in kernels.items():
                o = torch.full((1, N), float("nan"), dtype=torch.float32, device="cuda")
                try:
                    k(wq0, ws0, o)
                    torch.cuda.synchronize()
                    ok[name] = close(o, ref)[0]
                except Exception as e:  # noqa: BLE001
                    print(f"ERROR {N}x{K} {dt} {name}: {type(e).__name__}: {str(e)[:300]}",
                          flush=True)
                    ok[name] = False
                if not ok[name]:
                    print(f"FAIL (not timed) {N}x{K} {dt} {name} err {close(o, ref)[1]:.3g}",
                          flush=True)
            live = {n: k for n, k in kernels.items() if ok[n]}
            out = torch.empty((1, N), dtype=torch.float16, device="cuda")
            res = {n: [] for n in live}
            for _ in range(3):
                for name, k in live.items():
                    res[name].append(time_graph([lambda i=i: k(*wl[i], out)
                                                 for i in range(copies)])[0])
            for name, ts in res.items():
                rows.append(dict(M=1, N=N, K=K, x=str(dt), variant=name, median_us=ts))
            print(f"{N}x{K} {dt}: " + "  ".join(f"{n} {min(t):.2f}-{max(t):.2f}"
                                                for n, t in res.items()), flush=True)
    save_rows("gemv-w4a16-wgmma", rows)


if __name__ == "__main__":
    main()
