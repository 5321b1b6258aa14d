# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Is the register ring's group-scale rule (one MMA chain per 32-group) mistuned at 9-16 tokens
on some shapes? (session 27)

The TMA GEMV with group scales (one warp) beat the ring's rule at 16 tokens on 8192 x 8192
(25.9 vs 29.3 us), 28672 x 4096 (43.1 vs 56.6) and 3072 x 3072 (7.7 vs 9.0) but not on 18432 x
3072 (25.5 vs 24.1; bench/results/2026-11-27-gemv-tma-grouped-h100.json). This sweeps the ring's
configs (warps 1-2, prefetch 1-2, split 1-4) at those shapes, group 32, fp16 x, 9 and 16 tokens,
each config oracle-checked first (NaN-poisoned output), then times the rule, the best three and
the TMA GEMV's rule in 3 rotating rounds (CUDA-graph medians over 4 weight copies).
Usage on an sm_90 machine: ``python scripts/gpu_gemv_grouped_ring_resweep.py`` (JSON to $OUT).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, rounds, time_graph  # noqa: E402
from scripts.gpu_gemv_group_cols import short, sweep  # noqa: E402

C = S.GemvSM90Config
RING = [C(nw, pf, sp, 0, 1) for nw in (1, 2) for pf in (1, 2) for sp in (1, 2, 3, 4)]


def main():
    rows = []
    for M in (16, 9):
        for N, K in ((18432, 3072), (8192, 8192), (28672, 4096), (3072, 3072)):
            p = Problem("w4a16_mm", M, N, K, group=32, dtype=torch.float16, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")

            def ring(cfg, i, o):
                S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o, config=cfg,
                            group_size=32)

            res = sweep(p, out, ring, RING, f"ring M={M} {N}x{K}")
            rule = S.choose_config(M, N, K, False, 32)
            fns = {"rule " + short(rule): lambda: time_graph(
                [lambda i=i: ring(rule, i, out) for i in range(4)])[0]}
            for _, c in [r for r in res if r[1] != rule][:3]:
                fns[short(c)] = (lambda c=c: time_graph(
                    [lambda i=i: ring(c, i, out) for i in range(4)])[0])
            tma = T.choose_config(M, N, K, 32)
            fns["tma"] = lambda: time_graph([lambda i=i: T.gemv_tma_sm90(
                p.x[0], *p.w[i], 1.0, "low_first", out, config=tma, group_size=32)
                for i in range(4)])[0]
            got = rounds(fns)
            med = {k: sorted(v)[1] for k, v in got.items()}
            rows.append(dict(M=M, N=N, K=K, sweep=[(t, short(c)) for t, c in res], rounds=got,
                             us=med))
            with open(os.path.join(os.environ.get("OUT", "."), "gemv-grouped-ring-resweep.json"),
                      "w") as f:
                json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                               rows=rows), f, indent=1)
            print(f"M={M:2d} {N:5d}x{K:<5d} " + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()),
                  flush=True)


if __name__ == "__main__":
    main()
