# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Why ``fp4mm bench`` times the dispatched W4A4 decode call 0.3-0.6 us under the same kernel
forced (``fp4mm_gemv_fp8_sm90``, measured after it) at 1-4 tokens: the two timed alternately
in one process, six rounds each, with their own weight copies as the bench builds them.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_fp8_dispatch_ab.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402


def main():
    alpha, rows = 1 / 64, []
    for M in (1, 4):
        N, K = 18432, 3072
        xq, xs, wq0, ws0 = gen(M, N, K, seed=7 + M)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        sets = {name: [(wq0.clone(), ws0.clone())] + [gen(1, N, K, seed=300 + i + 50 * j)[2:]
                                                     for i in range(copies - 1)]
                for j, name in enumerate(("dispatched", "forced"))}
        outs = {name: [torch.empty((M, N), dtype=torch.float16, device="cuda")
                       for _ in range(copies)] for name in sets}
        calls = {
            "dispatched": lambda i: fp4mm.nvfp4_mm(xq, xs, *sets["dispatched"][i], alpha,
                                                   out=outs["dispatched"][i]),
            "forced": lambda i: F.nvfp4_mm_gemv_fp8_sm90(xq, xs, *sets["forced"][i], alpha,
                                                         "low_first", outs["forced"][i]),
        }
        for name, fn in calls.items():
            outs[name][0].fill_(float("nan"))
            fn(0)
            if not check(outs[name][0], xq, xs, *sets[name][0], alpha, "low_first")[0]:
                raise SystemExit(f"FAIL {name} M={M}")
        res = {name: [] for name in calls}
        for r in range(6):
            order = list(calls) if r % 2 == 0 else list(calls)[::-1]
            for name in order:
                fn = calls[name]
                t = time_graph([lambda i=i: fn(i) for i in range(copies)])
                res[name].append(t[0])
                rows.append(dict(M=M, N=N, K=K, variant=name, round=r, median_us=t[0],
                                 min_us=t[1], max_us=t[2], copies=copies))
        for n, v in res.items():
            print(f"M={M} {n}: best {min(v):.2f}, rounds " + ", ".join(f"{x:.2f}" for x in v),
                  flush=True)
    save_rows("gemv-fp8-dispatch-ab", rows)


if __name__ == "__main__":
    main()
