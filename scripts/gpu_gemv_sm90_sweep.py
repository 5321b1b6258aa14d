"""Config sweep of the Gluon decode GEMV for its heuristic (``choose_config``), every op and x
dtype at the decode shapes; each config checked against the oracle before it is timed
(CUDA-graph medians over 4 weight copies). Usage on an sm_90 machine:
``python scripts/gpu_gemv_sm90_sweep.py`` (writes JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402

C = S.GemvSM90Config
CASES = [(op, dt, M, N, K) for op, dt in (("nvfp4_mm", None), ("nvfp4_w4a16_mm", torch.float16),
                                          ("nvfp4_w4a16_mm", torch.bfloat16),
                                          ("w4a16_mm", torch.float16), ("w4a16_mm", torch.bfloat16))
         for M, N, K in ((1, 18432, 3072), (4, 18432, 3072), (16, 18432, 3072), (1, 8192, 8192))]


def main():
    rows = []
    for op, dt, M, N, K in CASES:
        g = 32 if op == "w4a16_mm" else 16
        p = Problem(op, M, N, K, group=g, dtype=dt or torch.float16, copies=4)
        gs = g if op == "w4a16_mm" else None
        xs = p.x[1] if op == "nvfp4_mm" else None
        al = 1.0 if gs else p.alpha
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        heur = S.choose_config(M, N, K, xs is not None, gs)
        res = []
        for cfg in [C(nw, 1, sp, 0, rt) for nw in (1, 2, 4) for sp in (1, 2, 3, 4)
                    for rt in ((1, 2) if not gs else (1,))]:
            o = torch.full_like(out, float("nan"))
            S.gemv_sm90(p.x[0], xs, *p.w[0], al, "low_first", o, config=cfg, group_size=gs)
            if not close(o, p.reference(0))[0]:
                print(f"FAIL (not timed) {op} {dt} M={M} {cfg}")
                continue
            t = time_graph([lambda i=i, cfg=cfg: S.gemv_sm90(p.x[0], xs, *p.w[i], al, "low_first",
                                                              out, config=cfg, group_size=gs)
                            for i in range(4)])
            res.append((t[0], cfg))
            rows.append(dict(op=op, x=str(dt), group=gs, M=M, N=N, K=K, config=str(cfg),
                             heuristic=cfg == heur, median_us=t[0], min_us=t[1], max_us=t[2]))
        res.sort(key=lambda r: r[0])
        h = [t for t, c in res if c == heur]
        print(f"{op:15s} {str(dt):14s} M={M:2d} N={N} K={K}: heuristic "
              f"s{heur.split_k}w{heur.num_warps}r{heur.row_tiles} {h[0] if h else float('nan'):6.2f}; "
              + "  ".join(f"s{c.split_k}w{c.num_warps}r{c.row_tiles} {t:.2f}" for t, c in res[:5]),
              flush=True)
    save_rows("gemv_sm90_sweep", rows)


if __name__ == "__main__":
    main()
