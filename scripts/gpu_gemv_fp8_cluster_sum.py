# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Split-K slices of ``fp4_gemv_fp8_sm90`` summed inside the kernel through distributed shared
memory (the slices of a row block launched as one thread-block cluster; ``cluster=True``)
against the shipped call (GEMV + reduce kernel), same run. Each variant is checked first:
against the oracle (NaN-poisoned output), bit for bit against the reduce kernel, over 50 calls
in a row, and in a graph replayed 3 times. Then CUDA-graph medians over weight copies that fill
3x the L2, three rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_fp8_cluster_sum.py`` (JSON to $OUT or .), with the kernel of commit
``2b96231`` (reverted: no gain where it ties, slower elsewhere; perf-log, session 24).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402

SHAPES = ((18432, 3072), (8192, 8192), (14336, 4096), (3072, 3072), (28672, 4096))
# (M, N, K, split): ragged N, 2-8 slices, every token count
CHECKS = ((1, 4099, 3072, 2), (1, 130, 8192, 4), (2, 4099, 3072, 3), (2, 8192, 8192, 4),
          (3, 18432, 3072, 2), (4, 4099, 3072, 2), (4, 130, 8192, 8), (4, 8192, 8192, 4),
          (4, 18432, 3072, 3))


def verify(M, N, K, split, mode, alpha, order):
    xq, xs, wq, ws = gen(M, N, K, seed=N + K + M + split)
    ref = torch.full((M, N), float("nan"), dtype=torch.float16, device="cuda")
    F.gemv_fp8_sm90(xq, xs, wq, ws, alpha, ref, split=split, cluster=False)
    o = torch.full((M, N), float("nan"), dtype=torch.float16, device="cuda")
    F.gemv_fp8_sm90(xq, xs, wq, ws, alpha, o, split=split, cluster=bool(mode))
    ok, *_ = check(o, xq, xs, wq, ws, alpha, order)
    same = torch.equal(o, ref)
    runs = 0
    for _ in range(50):
        o.fill_(float("nan"))
        F.gemv_fp8_sm90(xq, xs, wq, ws, alpha, o, split=split, cluster=bool(mode))
        runs += torch.equal(o, ref)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        F.gemv_fp8_sm90(xq, xs, wq, ws, alpha, o, split=split, cluster=bool(mode))
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        F.gemv_fp8_sm90(xq, xs, wq, ws, alpha, o, split=split, cluster=bool(mode))
        F.gemv_fp8_sm90(xq, xs, wq, ws, alpha, o, split=split, cluster=bool(mode))
    graph_ok = 0
    for _ in range(3):
        o.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        graph_ok += torch.equal(o, ref)
    return bool(ok), same, runs, graph_ok


def main():
    alpha, order = 1 / 64, "low_first"
    rows, bad = [], []
    # correctness first: every variant, ragged N, several splits and token counts
    for M, N, K, split in CHECKS:
        for mode in (1,):
            r = verify(M, N, K, split, mode, alpha, order)
            if r != (True, True, 50, 3):
                bad.append((M, N, K, split, mode, r))
                print("FAIL", M, N, K, split, mode, r, flush=True)
    print(f"checks done, {len(bad)} failures", flush=True)
    if bad:
        save_rows("gemv-fp8-cluster-sum-fail", [dict(case=str(b)) for b in bad])
        raise SystemExit(1)
    for M in (1, 2, 4):
        for N, K in SHAPES:
            xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
            copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
            wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
            split = F.choose_split(N, K, M)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            w = K // F.WINDOW
            variants = [("reduce", split, False), ("cluster", split, True)]
            variants += [(f"cluster split {s2}", s2, True) for s2 in (2 * split, split // 2)
                         if 2 <= s2 <= 8 and w % s2 == 0]
            res = {}
            for name, s2, cl in variants:
                fn = lambda i: F.gemv_fp8_sm90(xq, xs, wl[i][0], wl[i][1], alpha, out,
                                               split=s2, cluster=cl)
                ts = [time_graph([lambda i=i: fn(i) for i in range(copies)]) for _ in range(3)]
                res[name] = min(t[0] for t in ts)
                rows.append(dict(M=M, N=N, K=K, variant=name, split=s2,
                                 median_us=[t[0] for t in ts], min_us=min(t[1] for t in ts),
                                 max_us=max(t[2] for t in ts), copies=copies))
            print(f"M={M} {N}x{K} split {split}: " + " | ".join(
                f"{k} {v:.2f}" for k, v in res.items()), flush=True)
    save_rows("gemv-fp8-cluster-sum", rows)


if __name__ == "__main__":
    main()
