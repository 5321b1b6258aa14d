# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""The split-K reduce kernel's block size and warps, timed inside the whole W4A4 decode call
through ``fp4mm.nvfp4_mm`` (1-4 tokens: ``fp4_gemv_fp8_sm90``, 16: the register ring; both +
``fp4_gemv._splitk_reduce_kernel``; shipped: 1024 values, 4 warps).
The reduce is re-launched here exactly as ``fp4_gemv.reduce_partials`` does, with other
(BLOCK, num_warps); every variant is checked against the oracle first (NaN-poisoned output).
CUDA-graph medians over weight copies that fill 3x the L2, three rounds. Usage on an sm_90
machine: ``python scripts/gpu_reduce_block.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv  # noqa: E402
from fp4mm.kernels.alpha import alpha_args  # noqa: E402

VARIANTS = ((1024, 4), (256, 2), (512, 4), (2048, 4), (1024, 8), (4096, 8), (512, 2))


def reduce_with(block, warps):
    def reduce_partials(part, out, alpha, *, pdl=False):
        splits, M, N = part.shape
        a, alpha_ptr, on_device = alpha_args(alpha, part)
        fp4_gemv._splitk_reduce_kernel[(triton.cdiv(M * N, block),)](
            part, out, M, N, a, alpha_ptr, out.stride(0), SPLIT_K=splits, BLOCK=block,
            ALPHA_PTR=on_device, num_warps=warps, PDL=True, launch_pdl=True)
    return reduce_partials


def main():
    alpha, order, rows = 1 / 64, "low_first", []
    shipped = fp4_gemv.reduce_partials
    for M, N, K in ((1, 18432, 3072), (2, 18432, 3072), (4, 18432, 3072), (1, 8192, 8192),
                    (4, 8192, 8192), (4, 14336, 4096), (16, 18432, 3072)):
        xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        res = {}
        for block, warps in VARIANTS:
            fp4_gemv.reduce_partials = reduce_with(block, warps)
            o = torch.full((M, N), float("nan"), dtype=torch.float16, device="cuda")
            fp4mm.nvfp4_mm(xq, xs, wq0, ws0, alpha, out=o)
            if not check(o, xq, xs, wq0, ws0, alpha, order)[0]:
                raise SystemExit(f"FAIL M={M} {N}x{K} block {block} warps {warps}")
            fn = lambda i: fp4mm.nvfp4_mm(xq, xs, wl[i][0], wl[i][1], alpha, out=out)
            ts = [time_graph([lambda i=i: fn(i) for i in range(copies)]) for _ in range(3)]
            res[(block, warps)] = min(t[0] for t in ts)
            rows.append(dict(M=M, N=N, K=K, block=block, warps=warps,
                             median_us=[t[0] for t in ts],
                             min_us=min(t[1] for t in ts), max_us=max(t[2] for t in ts),
                             copies=copies))
        fp4_gemv.reduce_partials = shipped
        print(f"M={M} {N}x{K}: " + " | ".join(f"{b}/{w} {t:.2f}" for (b, w), t in res.items()),
              flush=True)
    save_rows("reduce-block", rows)


if __name__ == "__main__":
    main()
