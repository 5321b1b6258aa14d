# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Split sweep for ``fp4_gemv_fp8_sm90`` (W4A4) against the register-ring GEMV.

For each decode shape and token count (``--tokens 1,2,4``, default 1): every split that divides
the window count (at most 16 windows a CTA),
the rule's pick (``choose_split``) and the register-ring GEMV (``fp4_gemv_sm90``, its own
heuristic), each checked against the oracle with a NaN-poisoned output first, then CUDA-graph
medians over weight copies that fill 3x the L2, two rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_fp8_split.py`` (JSON to $OUT or .)."""

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
from fp4mm.kernels import fp4_gemv_sm90 as V  # noqa: E402

SHAPES = ((18432, 3072), (8192, 8192), (3072, 3072), (14336, 4096), (4096, 14336),
          (28672, 4096), (4096, 4096), (5120, 5120))


def main():
    order, alpha = "low_first", 1 / 64
    tokens = [int(t) for t in (sys.argv[sys.argv.index("--tokens") + 1].split(",")
                               if "--tokens" in sys.argv else ["1"])]
    rows = []
    for (N, K), M in ((s, m) for m in tokens for s in SHAPES):
        xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
        windows = K // F.WINDOW
        pick = F.choose_split(N, K, M)
        cands = [("ring", None)] + [(f"fp8/split{s}", s) for s in range(1, windows + 1)
                                    if windows % s == 0 and windows // s <= min(16, F.MAX_WINDOWS)]
        res = {}
        for name, split in cands:
            def run(i, o):
                w, s = wl[i]
                if split is None:
                    V.gemv_sm90(xq, xs, w, s, alpha, order, o)
                else:
                    F.gemv_fp8_sm90(xq, xs, w, s, alpha, o, split=split)
            o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
            run(0, o)
            torch.cuda.synchronize()
            if not check(o, xq, xs, wq0, ws0, alpha, order)[0]:
                print(f"FAIL (not timed) M={M} {N}x{K} {name}", flush=True)
                rows.append(dict(M=M, N=N, K=K, variant=name, correct=False))
                continue
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            ts = [time_graph([lambda i=i: run(i, out) for i in range(copies)]) for _ in range(2)]
            res[name] = min(t[0] for t in ts)
            rows.append(dict(M=M, N=N, K=K, variant=name, median_us=[t[0] for t in ts],
                             min_us=min(t[1] for t in ts), max_us=max(t[2] for t in ts),
                             copies=copies, correct=True, rule=split == pick))
        best = min((t, n) for n, t in res.items() if n != "ring")
        print(f"M={M} {N}x{K}: ring {res['ring']:.2f} | rule split{pick} "
              f"{res[f'fp8/split{pick}']:.2f} | best {best[1]} {best[0]:.2f} | "
              + "  ".join(f"{n} {t:.2f}" for n, t in res.items() if n != "ring"), flush=True)
    save_rows("gemv-fp8-split", rows)


if __name__ == "__main__":
    main()
