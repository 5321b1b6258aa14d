# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: ``fp4_gemv_fp8_sm90`` compiled with a register cap, so that more CTAs fit on an SM.

Uncapped, the kernel takes 105-109 registers (4 CTAs of 128 threads an SM: 528 slots on an H100,
so the 576 CTAs of 18432 x 3072 split 2 run in 1.09 waves); ``maxnreg=96`` compiles to 95 without
spills (5 CTAs an SM, 660 slots) and 88 to 88 (CPU compile; 80 spills). Every variant checked
against the oracle first; CUDA-graph medians over distinct weight copies filling 3x the L2, the
variants alternating for three rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_fp8_maxnreg.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402
from fp4mm.kernels.alpha import alpha_args  # noqa: E402
from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402


def launch(xq, xs, wq, ws, alpha, out, split, maxnreg):
    """``F.gemv_fp8_sm90`` with ``maxnreg`` (None: uncapped)."""
    N, K = wq.shape[0], wq.shape[1] * 2
    wins = K // F.WINDOW // split
    dst = torch.empty((split, 1, N), dtype=torch.float32, device=out.device) if split > 1 else out
    a, alpha_ptr, on_dev = alpha_args(alpha, out)
    extra = {"maxnreg": maxnreg} if maxnreg else {}
    F._fp4_gemv_fp8_sm90_kernel[(triton.cdiv(N, F.ROWS), split)](
        wq.view(torch.int32), ws.view(torch.uint8), xq.view(torch.int32), xs.view(torch.uint8),
        dst, N, K // 16, K // 8, a, alpha_ptr, WINS=wins, TP=triton.next_power_of_2(8 * wins),
        PARTIAL=split > 1, ALPHA_PTR=on_dev and split == 1, num_warps=4, launch_pdl=True,
        **extra)
    if split > 1:
        reduce_partials(dst, out, alpha, pdl=True)


def main():
    rows = []
    for N, K in ((18432, 3072), (8192, 8192), (3072, 3072), (14336, 4096)):
        xq, xs, wq0, ws0 = gen(1, N, K, seed=N + K)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=500 + i)[2:] for i in range(copies - 1)]
        rule = F.choose_split(N, K)
        windows = K // F.WINDOW
        splits = sorted({s for s in (rule, rule * 2) if windows % s == 0})
        variants = [(s, m) for s in splits for m in (None, 96, 88)]
        for s, m in variants:
            o = torch.full((1, N), float("nan"), dtype=torch.float32, device="cuda")
            launch(xq, xs, wq0, ws0, 1 / 64, o, s, m)
            torch.cuda.synchronize()
            assert check(o, xq, xs, wq0, ws0, 1 / 64, "low_first")[0], (N, K, s, m)
        out = torch.empty((1, N), dtype=torch.float16, device="cuda")
        res = {v: [] for v in variants}
        for _ in range(3):
            for s, m in variants:
                res[(s, m)].append(time_graph([lambda i=i: launch(xq, xs, *wl[i], 1 / 64, out, s, m)
                                               for i in range(copies)])[0])
        for (s, m), ts in res.items():
            rows.append(dict(M=1, N=N, K=K, split=s, maxnreg=m, median_us=ts))
        print(f"{N}x{K}: " + "  ".join(f"s{s}/r{m or '-'} {min(t):.2f}-{max(t):.2f}"
                                       for (s, m), t in res.items()), flush=True)
    save_rows("gemv-fp8-maxnreg", rows)


if __name__ == "__main__":
    main()
