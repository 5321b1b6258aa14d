# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Config sweep of the register-ring GEMV at the decode-bar rows after its weight loads became
evict-first (session 25): does ``choose_config`` still pick the best config?

Cases (18432 x 3072): ``nvfp4_w4a16_mm`` with bf16 x at M = 1 and 4, ``w4a16_mm`` group 32 fp16
at M = 1 and 4, W4A4 at M = 16. Every config (warps, split, row tiles, prefetch) is checked
against the oracle with a NaN-poisoned output, timed once (CUDA-graph medians over 4 weight
copies), then the heuristic's config and the best three are timed again in 3 rotating rounds.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_sm90_resweep.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402

C = S.GemvSM90Config
CASES = [("nvfp4_w4a16_mm", torch.bfloat16, 1), ("nvfp4_w4a16_mm", torch.bfloat16, 4),
         ("w4a16_mm", torch.float16, 1), ("w4a16_mm", torch.float16, 4), ("nvfp4_mm", None, 16)]
N, K = 18432, 3072


def configs(grouped, w4a4):
    splits = (1, 2, 3, 4, 6) + ((8,) if w4a4 else ())
    warps = (1, 2) if grouped else (1, 2, 4)  # grouped: two warps a CTA were 21-70% slower
    return [C(nw, pf, sp, 0, rt) for nw in warps for sp in splits for pf in (1, 2)
            for rt in ((1,) if grouped else (1, 2))]


def short(c):
    return f"w{c.num_warps}s{c.split_k}r{c.row_tiles}p{c.prefetch}"


def main():
    rows = []
    for op, dt, M in CASES:
        gs = 32 if op == "w4a16_mm" else None
        p = Problem(op, M, N, K, group=gs or 16, dtype=dt or torch.float16, copies=4)
        xs = p.x[1] if op == "nvfp4_mm" else None
        al = 1.0 if gs else p.alpha
        out = torch.empty((M, N), dtype=dt or torch.float16, device="cuda")
        heur = S.choose_config(M, N, K, xs is not None, gs)

        def run(cfg, i, o):
            S.gemv_sm90(p.x[0], xs, *p.w[i], al, "low_first", o, config=cfg, group_size=gs)

        def timed(cfg):
            return time_graph([lambda i=i: run(cfg, i, out) for i in range(4)])[0]

        res = []
        for cfg in configs(gs is not None, xs is not None):
            o = torch.full_like(out, float("nan"))
            try:
                run(cfg, 0, o)
                ok = close(o, p.reference(0))[0]
            except Exception as e:  # noqa: BLE001  (a config that does not compile: skip it)
                print(f"skip {op} M={M} {short(cfg)}: {str(e).splitlines()[0][:80]}")
                continue
            if not ok:
                raise SystemExit(f"FAIL {op} M={M} {cfg}")
            res.append((timed(cfg), cfg))
        res.sort(key=lambda r: r[0])
        finals = [heur] + [c for _, c in res[:3] if c != heur]
        again = {short(c): [] for c in finals}
        for r in range(3):
            for c in finals[r % len(finals):] + finals[:r % len(finals)]:
                again[short(c)].append(timed(c))
        for t, c in res:
            rows.append(dict(op=op, x=str(dt), group=gs, M=M, N=N, K=K, config=str(c),
                             heuristic=c == heur, median_us=t,
                             rounds_us=again.get(short(c))))
        print(f"{op:15s} {str(dt):14s} M={M:2d}: heuristic {short(heur)}; rounds "
              + "  ".join(f"{k} {sorted(v)[1]:.2f}" for k, v in again.items())
              + " | sweep top 5: " + "  ".join(f"{short(c)} {t:.2f}" for t, c in res[:5]),
              flush=True)
        save_rows("gemv-sm90-resweep", rows)  # after every case: a cut-short run keeps its rows


if __name__ == "__main__":
    main()
