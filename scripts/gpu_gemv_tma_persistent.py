"""Probe: a persistent TMA GEMV whose one-warp CTAs take (row block, K slice) items from a
global counter, the ring running on across items (session 15).

The timeline probe (`gpu_gemv_tma.py --timeline`) found the TMA GEMV's CTAs all start at once,
wait 2.75 us (median) for their first chunk, then run 9.75-14.75 us: the span is set by the
slowest CTAs of an SM. Here every warp keeps claiming small items until none are left, so a
warp that the scheduler starves simply takes fewer. M = 1, fp16 / bf16 x, N = 18432, K = 3072;
each variant is checked against the fp32 oracle, then timed in CUDA graphs beside the shipped
GEMV. The counter is zeroed by the reduce kernel's stream predecessor here (a torch.zeros per
call: a memset in the graph), which a real kernel would avoid.
Usage (sm_90): ``python scripts/gpu_gemv_tma_persistent.py`` (writes $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

_PLAIN8 = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=2)
_PLAIN16 = gl.constexpr(gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2))
_PLAIN32 = gl.constexpr(gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2))


@gluon.jit
def _issue(w_desc, s_desc, w_bufs, s_bufs, ready, s, item, j, SPLITS, CPI, live):
    """Stage s <- chunk j (256 K) of item (row block item // SPLITS, K slice item % SPLITS)."""
    BN: gl.constexpr = w_desc.block_type.shape[0]
    nbytes: gl.constexpr = w_desc.block_type.nbytes + s_desc.block_type.nbytes
    row0 = (item // SPLITS) * BN
    c = (item % SPLITS) * CPI + j
    mbarrier.expect(ready.index(s), nbytes, pred=live)
    tma.async_copy_global_to_shared(w_desc, [row0, c * 128], ready.index(s), w_bufs.index(s),
                                    pred=live)
    tma.async_copy_global_to_shared(s_desc, [row0, c * 16], ready.index(s), s_bufs.index(s),
                                    pred=live)


@gluon.jit
def _persistent_kernel(x_ptr, w_desc, s_desc, out_ptr, counter_ptr, M, N, ITEMS, SPLITS, CPI,
                       stride_xm, DTYPE: gl.constexpr, NT: gl.constexpr,
                       HIGH_FIRST: gl.constexpr):
    """Partials (SPLITS, M, N), unscaled fp32. One warp, 16 rows, a 2-stage ring; CPI >= 2
    chunks per item."""
    BN: gl.constexpr = 16
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1],
                                                  instr_shape=[16, 8])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    WL: gl.constexpr = S._operand_layouts(gl.to_linear_layout(a_l, [BN, 128]), False)
    XL: gl.constexpr = S._operand_layouts(gl.to_linear_layout(b_l, [128, NT]), True)
    W_WORDS: gl.constexpr = WL[0]
    W_SCALES: gl.constexpr = WL[1]
    X_PAIRS: gl.constexpr = XL[2]
    w_bufs = gl.allocate_shared_memory(gl.uint8, [2, BN, 128], w_desc.layout)
    s_bufs = gl.allocate_shared_memory(gl.uint8, [2, BN, 16], s_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(ready.index(i), count=1)
    fence_async_shared()

    ta = gl.minimum(gl.arange(0, NT, layout=gl.SliceLayout(1, X_PAIRS)), M - 1)
    xa_offs = gl.expand_dims(ta, 1) * stride_xm + gl.expand_dims(
        gl.arange(0, 64, layout=gl.SliceLayout(0, X_PAIRS)), 0)
    toks = gl.arange(0, NT, layout=gl.SliceLayout(0, mma))
    rr = gl.arange(0, BN, layout=gl.SliceLayout(1, mma))

    cur = gl.atomic_add(counter_ptr, 1)
    nxt = gl.atomic_add(counter_ptr, 1)
    _issue(w_desc, s_desc, w_bufs, s_bufs, ready, 0, cur, 0, SPLITS, CPI, cur < ITEMS)
    _issue(w_desc, s_desc, w_bufs, s_bufs, ready, 1, cur, 1, SPLITS, CPI, cur < ITEMS)
    t = cur * 0
    while cur < ITEMS:
        acc = gl.zeros([BN, NT], gl.float32, mma)
        c0 = (cur % SPLITS) * CPI
        for j in range(CPI):
            s = t % 2
            q = 2 * (c0 + j)
            xa0 = gl.load(x_ptr + xa_offs + q * 64)
            xa1 = gl.load(x_ptr + xa_offs + (q + 1) * 64)
            mbarrier.wait(ready.index(s), (t // 2) & 1)
            wv = w_bufs.index(s)._reinterpret(gl.int32, [BN, 32], _PLAIN32)
            sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _PLAIN16)
            wd0 = wv.slice(0, 16, dim=1).load(W_WORDS)
            sc0 = sv.slice(0, 4, dim=1).load(W_SCALES)
            wd1 = wv.slice(16, 16, dim=1).load(W_WORDS)
            sc1 = sv.slice(4, 4, dim=1).load(W_SCALES)
            gl.thread_barrier()
            fence_async_shared()
            if j + 2 < CPI:
                _issue(w_desc, s_desc, w_bufs, s_bufs, ready, s, cur, j + 2, SPLITS, CPI, True)
            else:
                _issue(w_desc, s_desc, w_bufs, s_bufs, ready, s, nxt, j + 2 - CPI, SPLITS, CPI,
                       nxt < ITEMS)
            acc = S._step(acc, wd0, sc0, xa0, xa0, False, HIGH_FIRST, DTYPE, gl.float16, BN,
                          NT, W_WORDS, W_WORDS, a_l, b_l, 128, 0)
            acc = S._step(acc, wd1, sc1, xa1, xa1, False, HIGH_FIRST, DTYPE, gl.float16, BN,
                          NT, W_WORDS, W_WORDS, a_l, b_l, 128, 0)
            t += 1
        rows = (cur // SPLITS) * BN + rr
        mask = gl.expand_dims(rows < N, 1) & gl.expand_dims(toks < M, 0)
        offs = gl.expand_dims(toks, 0) * N + gl.expand_dims(rows, 1)
        gl.store(out_ptr + (cur % SPLITS) * M * N + offs, acc, mask=mask)
        cur = nxt
        nxt = gl.atomic_add(counter_ptr, 1)
    for i in gl.static_range(2):
        mbarrier.invalidate(ready.index(i))


def gemv_persistent(x, w_q, w_scales, alpha, out, *, splits, ctas_per_sm):
    M, K = x.shape
    N = w_q.shape[0]
    chunks = K // 256
    assert chunks % splits == 0 and chunks // splits >= 2
    ws = w_scales.view(torch.uint8)
    w_desc = TensorDescriptor.from_tensor(w_q, [16, 128], _PLAIN8)
    s_desc = TensorDescriptor.from_tensor(ws, [16, 16], _PLAIN8)
    items = triton.cdiv(N, 16) * splits
    part = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)
    counter = torch.zeros((1,), dtype=torch.int32, device=x.device)
    grid = (min(items, 132 * ctas_per_sm),)
    _persistent_kernel[grid](x.view(torch.int32), w_desc, s_desc, part, counter, M, N, items,
                             splits, chunks // splits, K // 2, DTYPE=S._GL_DTYPE[x.dtype],
                             NT=S._token_tile(M), HIGH_FIRST=False, num_warps=1)
    reduce_partials(part, out, alpha)


def main():
    rows = []
    for dt in (torch.float16, torch.bfloat16):
        p = Problem("nvfp4_w4a16_mm", 1, 18432, 3072, dtype=dt, copies=4)
        out = torch.empty((1, 18432), dtype=torch.float16, device="cuda")
        t_old = time_graph([lambda i=i: run_new(p, i, out, None) for i in range(4)])[0]
        print(f"{str(dt)[6:]} shipped {t_old:6.2f} us", flush=True)
        rows.append(dict(dtype=str(dt), impl="shipped", us=t_old))
        z = time_graph([lambda: torch.zeros((1,), dtype=torch.int32, device="cuda")])[0]
        print(f"  a 4-byte torch.zeros alone: {z:5.2f} us", flush=True)
        for splits in (2, 3, 6):
            for cps in (16, 24, 31):
                o = torch.full((1, 18432), float("nan"), device="cuda")
                gemv_persistent(p.x[0], *p.w[0], p.alpha, o, splits=splits, ctas_per_sm=cps)
                ok, err = close(o, p.reference(0))
                if not ok:
                    print("  WRONG", splits, cps, err, flush=True)
                    continue
                t = time_graph([lambda i=i: gemv_persistent(p.x[0], *p.w[i], p.alpha, out,
                                                            splits=splits, ctas_per_sm=cps)
                                for i in range(4)])[0]
                print(f"  persistent splits {splits} CTAs/SM {cps}: {t:6.2f} us "
                      f"(incl. the counter memset)", flush=True)
                rows.append(dict(dtype=str(dt), impl="persistent", splits=splits,
                                 ctas_per_sm=cps, us=t))
    save_rows("gemv-tma-persistent", rows)


if __name__ == "__main__":
    main()
