# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe (session 19): the group-scale GEMM (``w4a16_mm``, revision 1) with each consumer
warpgroup in its own partition.

Session 10 tried this and measured no gain. Session 19 found that a third warpgroup in a worker
partition made ptxas serialise every wgmma (C7512, ``scripts/ptx_worker_loop_patch.py``), so
this probe asked whether session 10's variant had been serialised too. It was not: this kernel
compiles pipelined as Triton emits it (the patch hook is installed but finds nothing to edit),
and it times within noise of the shipped kernel (docs/perf-log.md, session 19). Why it might
have paid: in the shipped kernel both warpgroups share the partition-wide ``bar.sync`` before
each stage release (4 per two K tiles), the top stall in session 10's ncu; split, each
warpgroup waits only for its own four warps.

Kernel: default partition = rows 0-63 of the 128-row tile, worker 1 = rows 64-127 (4 warps, 240
registers), worker 2 = the shipped TMA producer; ``empty`` counts two arrivals; each warpgroup
stores its own [BN, 64] output box. Whole tiles only (no split-K), group 32, 16-bit x.

Usage (H100): ``python scripts/gpu_gemm_grouped_wgsplit.py [--out DIR]``: oracle checks first
(output poisoned, ragged M and N, both nibble orders, fp16/bf16), then CUDA-graph medians of the
shipped kernel and this one at the revision-1 case and two more shapes, cuBLAS fp16 beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptx_worker_loop_patch  # noqa: E402

from fp4mm.bench.harness import graph_timer  # noqa: E402
from fp4mm.formats import dequantize_fp4_groupwise  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402
from fp4mm.kernels.fp4_gemm_sm90 import _after, _producer, _unit  # noqa: E402

KERNEL = "_grouped_wgsplit_kernel"
_HALF = gl.constexpr(64)
# The thread-ordered [16, 256] code tile's rows 8p .. 8p + 7 belong to warps 4p .. 4p + 3, i.e.
# to consumer warpgroup p (module docstring of fp4_gemm_sm90): its half as a 4-warp layout.
_W_LOAD_HALF = gl.constexpr(gl.DistributedLinearLayout(
    reg_bases=[[0, 1], [0, 2], [0, 4], [0, 8]],
    lane_bases=[[0, 16], [0, 32], [0, 64], [0, 128], [1, 0]],
    warp_bases=[[2, 0], [4, 0]], block_bases=[], shape=[8, 256]))


@gluon.jit
def _half_codes(w_half, DTYPE: gl.constexpr, A_LAYOUT: gl.constexpr, P_LAYOUT: gl.constexpr):
    """A warpgroup's 64 x 64 codes (unscaled, exact) as two [64, 32] register-A operands."""
    p = w_half.load(_W_LOAD_HALF)
    p = p.reshape([4, 8, 4, 8, 2]).permute((0, 4, 1, 3, 2)).reshape([_HALF, 32])
    p = gl.convert_layout(p, P_LAYOUT, assert_trivial=True)
    a = gl.convert_layout(gl.fp4_to_fp(p, DTYPE, 1), A_LAYOUT, assert_trivial=True)
    lo, hi = a.reshape([_HALF, 2, 32]).permute((0, 2, 1)).split()
    return (gl.convert_layout(lo, A_LAYOUT, assert_trivial=True),
            gl.convert_layout(hi, A_LAYOUT, assert_trivial=True))


@gluon.jit
def _consumer_half(y_desc, w_bufs, s_bufs, x_bufs, y_smem, ready, empty, num_units, num_full,
                   split, k_per_split, num_m_tiles, k_tiles, BN: gl.constexpr,
                   STAGES: gl.constexpr, DTYPE: gl.constexpr, PART: gl.constexpr):
    """Rows 64 PART .. 64 PART + 63 of every tile: the shipped group-32 schedule (two
    alternating partials, one group's FMAs under the next group's MMA), for one warpgroup."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                  instr_shape=[16, BN, 16])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=1)
    row: gl.constexpr = gl.SliceLayout(1, mma)
    it = 0
    for u in range(gl.program_id(0), num_units, gl.num_programs(0)):
        pid_m, pid_n, k0, k1, slot, t = _unit(u, num_full, split, k_per_split, k_tiles,
                                              num_m_tiles)
        acc = gl.zeros([_HALF, BN], gl.float32, mma)
        p_a = gl.zeros([_HALF, BN], gl.float32, mma)
        p_b = gl.zeros([_HALF, BN], gl.float32, mma)
        for _j in range(k0, k1, 2):
            st = it % STAGES
            mbarrier.wait(ready.index(st), (it // STAGES) & 1)
            e_lo, e_hi = _half_codes(w_bufs.index(st).slice(8 * PART, 8), DTYPE, a_layout,
                                     p_layout)
            xs = x_bufs.index(st)
            ss = s_bufs.index(st)
            p_a = warpgroup_mma(e_lo, xs.slice(0, 32, dim=1).permute((1, 0)), p_a,
                                use_acc=False, is_async=True)
            p_b = warpgroup_mma(e_hi, xs.slice(32, 32, dim=1).permute((1, 0)), p_b,
                                use_acc=False, is_async=True)
            s_lo = ss.slice(PART * 64, 64).load(row)
            s_hi = ss.slice(128 + PART * 64, 64).load(row)
            p_a, p_b, e_lo = warpgroup_mma_wait(num_outstanding=1, deps=(p_a, p_b, e_lo))
            acc += p_a * gl.expand_dims(s_lo, 1)
            p_a = _after(p_a, acc)
            st_o = (it + 1) % STAGES
            mbarrier.wait(ready.index(st_o), ((it + 1) // STAGES) & 1)
            o_lo, o_hi = _half_codes(w_bufs.index(st_o).slice(8 * PART, 8), DTYPE, a_layout,
                                     p_layout)
            xo = x_bufs.index(st_o)
            so = s_bufs.index(st_o)
            p_a = warpgroup_mma(o_lo, xo.slice(0, 32, dim=1).permute((1, 0)), p_a,
                                use_acc=False, is_async=True)
            p_b, p_a, e_hi = warpgroup_mma_wait(num_outstanding=1, deps=(p_b, p_a, e_hi))
            acc += p_b * gl.expand_dims(s_hi, 1)
            p_b = _after(p_b, acc)
            mbarrier.arrive(empty.index(st))
            p_b = warpgroup_mma(o_hi, xo.slice(32, 32, dim=1).permute((1, 0)), p_b,
                                use_acc=False, is_async=True)
            s_lo = so.slice(PART * 64, 64).load(row)
            s_hi = so.slice(128 + PART * 64, 64).load(row)
            p_a, p_b, o_lo = warpgroup_mma_wait(num_outstanding=1, deps=(p_a, p_b, o_lo))
            acc += p_a * gl.expand_dims(s_lo, 1)
            p_b, o_hi = warpgroup_mma_wait(num_outstanding=0, deps=(p_b, o_hi))
            acc += p_b * gl.expand_dims(s_hi, 1)
            mbarrier.arrive(empty.index(st_o))
            it += 2
        tma.store_wait(0)  # the previous tile's store has finished reading y_smem
        gl.thread_barrier()
        y_smem.permute((1, 0)).store(acc.to(y_desc.dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(y_desc, [pid_m * BN, pid_n * 128 + PART * 64], y_smem)
    tma.store_wait(0)


@gluon.jit
def _grouped_wgsplit_kernel(w_desc, s_desc, x_desc, y_desc, num_units, num_full, split,
                            k_per_split, num_m_tiles, k_tiles, BN: gl.constexpr,
                            STAGES: gl.constexpr, DTYPE: gl.constexpr):
    gl.static_assert(gl.num_warps() == 4, "the default partition is one warpgroup")
    w_bufs = gl.allocate_shared_memory(gl.uint8, [STAGES, 16, 256], w_desc.layout)
    s_bufs = gl.allocate_shared_memory(s_desc.dtype, [STAGES] + s_desc.block_type.shape,
                                       s_desc.layout)
    x_bufs = gl.allocate_shared_memory(DTYPE, [STAGES, BN, 64], x_desc.layout)
    y0 = gl.allocate_shared_memory(y_desc.dtype, [BN, _HALF], y_desc.layout)
    y1 = gl.allocate_shared_memory(y_desc.dtype, [BN, _HALF], y_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrival per consumer warpgroup
    fence_async_shared()
    gl.warp_specialize(
        [(_consumer_half, (y_desc, w_bufs, s_bufs, x_bufs, y0, ready, empty, num_units,
                           num_full, split, k_per_split, num_m_tiles, k_tiles, BN, STAGES,
                           DTYPE, 0)),
         (_consumer_half, (y_desc, w_bufs, s_bufs, x_bufs, y1, ready, empty, num_units,
                           num_full, split, k_per_split, num_m_tiles, k_tiles, BN, STAGES,
                           DTYPE, 1)),
         (_producer, (w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, empty, num_units,
                      num_full, split, k_per_split, num_m_tiles, k_tiles, BN, STAGES, 32))],
        [4, 1], [240, 24])
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
        mbarrier.invalidate(empty.index(i))


def wgsplit_mm(x, packed, out, bn=128, stages=4):
    """``out = x @ (e2m1(w) * scales)^T`` through the split kernel (whole tiles only)."""
    M = x.shape[0]
    sms = g.sm_count(x.device)
    cfg = g.SM90Config(BN=bn, STAGES=stages)
    sc = g._schedule(M, packed, cfg, sms)
    assert sc.split == 1 and packed.group_k == 32 and out.shape[1] % 8 == 0
    x_desc = TensorDescriptor(x, list(x.shape), list(x.stride()), [bn, 64],
                              g._nvmma_layout(bn, 64, x.dtype))
    y_desc = TensorDescriptor(out, list(out.shape), list(out.stride()), [bn, 64],
                              g._nvmma_layout(bn, 64, out.dtype))
    _grouped_wgsplit_kernel[(min(sc.num_units, sms),)](
        packed.w_desc, packed.s_desc, x_desc, y_desc, sc.num_units, sc.num_full, sc.split,
        sc.k_per_split, triton.cdiv(M, bn), sc.k_tiles, BN=bn, STAGES=stages,
        DTYPE=g._GL_DTYPE[x.dtype], num_warps=4)


def install_patch():
    """The worker-loop PTX edit for this probe's kernel only."""
    from triton import knobs

    def hook(backend, stages, options, language, capability):
        orig = stages["cubin"]

        def cubin(src, metadata):
            if metadata.get("name") == KERNEL and os.environ.get("WGSPLIT_PATCH", "1") == "1":
                src = ptx_worker_loop_patch.patch(src)
            return orig(src, metadata)
        stages["cubin"] = cubin
    knobs.runtime.add_stages_inspection_hook = hook


def gen(M, N, K, dtype, seed):
    gen_ = torch.Generator(device="cuda").manual_seed(seed)
    x = (0.5 * torch.randn((M, K), device="cuda", generator=gen_)).to(dtype)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen_)
    s = (0.1 * torch.rand((N, K // 32), device="cuda", generator=gen_) + 0.01).to(dtype)
    return x, wq, s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    install_patch()
    dev = torch.cuda.get_device_name()
    print(dev, torch.__version__, flush=True)
    rows, ok_all = [], True
    for M, N, K, dt, order in [(300, 1000, 1024, torch.float16, "low_first"),
                               (2048, 8192, 3072, torch.float16, "high_first"),
                               (130, 392, 640, torch.bfloat16, "low_first"),
                               (1024, 3072, 3072, torch.bfloat16, "high_first")]:
        x, wq, s = gen(M, N, K, dt, M + N)
        packed = g.prepack_grouped_sm90(wq, s, 32, order)
        shipped = torch.full((M, N), float("nan"), dtype=dt, device="cuda")
        g.fp4_gemm_sm90_grouped(x, None, None, 32, order, shipped, prepacked=packed,
                                config=g.SM90Config(BN=128, STAGES=4))
        out = torch.full((M, N), float("nan"), dtype=dt, device="cuda")
        wgsplit_mm(x, packed, out)
        ref = x.float() @ dequantize_fp4_groupwise(wq, s, 32, order).T
        err = ((out.float() - ref).abs() / (ref.abs() + 1e-3)).max().item()
        same = torch.equal(out, shipped)  # same products, same order per group: same bits
        ok = same and not torch.isnan(out).any().item()
        ok_all &= ok
        print(f"check {M}x{N}x{K} {dt} {order}: equal to shipped {same}, max rel err vs fp32 "
              f"{err:.2e} -> {'PASS' if ok else 'FAIL'}", flush=True)
        rows.append(dict(kind="check", M=M, N=N, K=K, dtype=str(dt), order=order,
                         equal_shipped=same, max_rel=err, passed=ok))
    print("ptx patched kernels:", len(ptx_worker_loop_patch.PATCHED), flush=True)
    if ok_all:
        for M, N, K in [(2048, 8192, 3072), (4096, 8192, 3072), (2048, 18432, 3072)]:
            x, wq, s = gen(M, N, K, torch.float16, 1)
            ncopy = max(2, int(3 * 50e6 // (wq.numel() + s.numel() * 2)) + 1)
            packs = [g.prepack_grouped_sm90(wq.clone(), s.clone(), 32, "high_first")
                     for _ in range(ncopy)]
            wd = dequantize_fp4_groupwise(wq, s, 32, "high_first").half()
            wds = [wd.clone() for _ in range(max(2, int(3 * 50e6 // (wd.numel() * 2)) + 1))]
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            i = [0]

            def nxt(lst):
                i[0] += 1
                return lst[i[0] % len(lst)]

            res = {}
            for name, fn in [
                ("cublas_fp16", lambda: torch.matmul(x, nxt(wds).T, out=out)),
                ("shipped", lambda: g.fp4_gemm_sm90_grouped(
                    x, None, None, 32, "high_first", out, prepacked=nxt(packs))),
                ("wgsplit_s4", lambda: wgsplit_mm(x, nxt(packs), out, stages=4)),
                ("wgsplit_s3", lambda: wgsplit_mm(x, nxt(packs), out, stages=3)),
                ("shipped_again", lambda: g.fp4_gemm_sm90_grouped(
                    x, None, None, 32, "high_first", out, prepacked=nxt(packs))),
            ]:
                med, lo, hi = graph_timer(fn, False)
                res[name] = med * 1e3
                ratio = res["cublas_fp16"] / res[name]
                print(f"{M}x{N}x{K} g32 {name:<14} {res[name]:8.1f} us  {ratio:5.3f}x cuBLAS fp16",
                      flush=True)
                rows.append(dict(kind="time", M=M, N=N, K=K, impl=name, us=med * 1e3,
                                 min_us=lo * 1e3, max_us=hi * 1e3, ratio_vs_cublas_fp16=ratio))
    with open(os.path.join(args.out, "grouped_wgsplit.json"), "w") as f:
        json.dump(dict(device=dev, torch=torch.__version__,
                       date=datetime.datetime.now().isoformat(),
                       git_commit=os.environ.get("FP4MM_GIT_COMMIT", ""), timer="graph",
                       rows=rows), f, indent=1)
    sys.exit(0 if ok_all else 1)


if __name__ == "__main__":
    main()
