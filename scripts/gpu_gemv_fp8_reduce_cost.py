# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""What the split-K reduce costs ``fp4_gemv_fp8_sm90``: the whole call (GEMV + reduce kernel)
against the GEMV kernel alone writing its partials, same run (an upper bound for summing the
slices inside the GEMV). CUDA-graph medians over weight copies that fill 3x the L2, three
rounds; the full call is checked against the oracle first. Usage on an sm_90 machine:
``python scripts/gpu_gemv_fp8_reduce_cost.py`` (JSON to $OUT or .)."""

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

SHAPES = ((18432, 3072), (8192, 8192), (14336, 4096), (3072, 3072))


def kernel_only(xq, xs, wq, ws, dst, split):
    """The GEMV's launch from ``gemv_fp8_sm90`` without the reduce (partials into ``dst``)."""
    N, K, M = wq.shape[0], wq.shape[1] * 2, xq.shape[0]
    wins = K // F.WINDOW // split
    F._fp4_gemv_fp8_sm90_kernel[(triton.cdiv(N, F.ROWS), split)](
        wq.view(torch.int32), ws, xq.view(torch.int32), xs, dst, M, N, K // 16, K // 8, 1.0,
        dst, WINS=wins, TP=triton.next_power_of_2(8 * wins), T=F.tokens_per_cta(M),
        PARTIAL=True, ALPHA_PTR=False, num_warps=4, launch_pdl=True)


def main():
    alpha, order = 1 / 64, "low_first"
    rows = []
    for M in (1, 2, 4):
        for N, K in SHAPES:
            xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
            copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
            wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
            split = F.choose_split(N, K, M)
            o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
            F.gemv_fp8_sm90(xq, xs, wq0, ws0, alpha, o, split=split)
            if not check(o, xq, xs, wq0, ws0, alpha, order)[0]:
                raise SystemExit(f"FAIL M={M} {N}x{K}")
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            dst = torch.empty((split, M, N), dtype=torch.float32, device="cuda")
            variants = {
                "call": lambda i: F.gemv_fp8_sm90(xq, xs, wl[i][0], wl[i][1], alpha, out,
                                                  split=split),
                "gemv_only": lambda i: kernel_only(xq, xs, wl[i][0], wl[i][1], dst, split),
            }
            res = {}
            for name, fn in variants.items():
                ts = [time_graph([lambda i=i: fn(i) for i in range(copies)]) for _ in range(3)]
                res[name] = min(t[0] for t in ts)
                rows.append(dict(M=M, N=N, K=K, variant=name, split=split,
                                 median_us=[t[0] for t in ts], min_us=min(t[1] for t in ts),
                                 max_us=max(t[2] for t in ts), copies=copies))
            print(f"M={M} {N}x{K} split {split}: call {res['call']:.2f} | gemv only "
                  f"{res['gemv_only']:.2f} | reduce share {res['call'] - res['gemv_only']:.2f}",
                  flush=True)
    save_rows("gemv-fp8-reduce-cost", rows)


if __name__ == "__main__":
    main()
