# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""W4A4 decode at 5-32 tokens on fp16 ``wgmma`` with x decoded once per CTA
(``fp4mm/kernels/fp4_gemv_wgmma_sm90.py``, a probe) against the dispatched ``nvfp4_mm`` (the
register ring there), same run. Oracle checks first (NaN-poisoned output, ragged N, both
orders), then CUDA-graph medians over weight copies that fill 3x the L2, rotating rounds.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_wgmma_probe.py`` (JSON to $OUT or .), with
``fp4mm/kernels/fp4_gemv_wgmma_sm90.py`` of commit ``48599b2`` (removed: 15-20% slower than the
ring at 8-32 tokens; perf-log, ``fp4_gemv_sm90``, session 24).
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
from fp4mm.kernels import fp4_gemv_wgmma_sm90 as W  # noqa: E402

# (M, N, K, order, split): ragged N, token tiles 8-32, both nibble orders, split and unsplit
CHECKS = ((5, 4099, 3072, "low_first", None), (16, 130, 1024, "high_first", 2),
          (12, 18432, 3072, "low_first", None), (32, 200, 2048, "low_first", 4),
          (8, 8192, 8192, "high_first", None), (16, 64, 256, "low_first", 1))


SHAPES = ((8, 18432, 3072), (16, 18432, 3072), (16, 8192, 8192), (32, 18432, 3072))
SPLIT_MAX = int(os.environ.get("SPLIT_MAX", "8"))  # run 2: 16, the three largest splits


def main():
    alpha, rows, bad = 1 / 64, [], 0
    for M, N, K, order, split in CHECKS:
        xq, xs, wq, ws = gen(M, N, K, seed=M + N)
        o = torch.full((M, N), float("nan"), dtype=torch.float16, device="cuda")
        W.gemv_wgmma_sm90(xq, xs, wq, ws, alpha, order, o, split=split)
        ok = check(o, xq, xs, wq, ws, alpha, order)[0]
        print(("ok  " if ok else "FAIL"), M, N, K, order, split, flush=True)
        bad += not ok
    if bad:
        raise SystemExit("wrong results")
    for M, N, K in SHAPES:
        xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        steps = K // 128
        nt = W._token_tile(M)
        splits = [s for s in range(1, SPLIT_MAX + 1) if steps % s == 0
                  and (steps // s) % 2 == 0 and (steps // s) * nt * 256 <= 100 * 1024]
        splits = splits[:3] if SPLIT_MAX == 8 else splits[-3:]  # B: at most 100 KB
        variants = {"dispatched": lambda i: fp4mm.nvfp4_mm(xq, xs, wl[i][0], wl[i][1], alpha,
                                                           out=out)}
        for s in splits:
            variants[f"wgmma split {s}"] = (lambda s: lambda i: W.gemv_wgmma_sm90(
                xq, xs, wl[i][0], wl[i][1], alpha, "low_first", out, split=s))(s)
        res = {k: [] for k in variants}
        names = list(variants)
        for r in range(3):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn = variants[name]
                t = time_graph([lambda i=i: fn(i) for i in range(copies)])
                res[name].append(t[0])
                rows.append(dict(M=M, N=N, K=K, variant=name, round=r, median_us=t[0],
                                 min_us=t[1], max_us=t[2], copies=copies))
        print(f"M={M} {N}x{K}: " + " | ".join(f"{k} {sorted(v)[1]:.2f}" for k, v in res.items()),
              flush=True)
    save_rows("gemv-wgmma-probe", rows)


if __name__ == "__main__":
    main()
