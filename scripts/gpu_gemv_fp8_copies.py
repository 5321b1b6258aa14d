# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Why the fp8 GEMV timed 15.7 us in the split sweep and 17.0 in ``fp4mm bench`` (W4A4,
18432 x 3072, one token): the same kernel over weight copies that are distinct random draws (the
probes) or clones of one draw (the bench), each timed by the probes' ``time_graph`` and by the
bench's ``graph_timer``, alternating, three rounds; the register-ring GEMV beside it.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_fp8_copies.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import gen  # noqa: E402

from fp4mm.bench.harness import graph_timer  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as V  # noqa: E402


def main():
    N, K, copies = 18432, 3072, 5
    xq, xs, wq, ws = gen(1, N, K, seed=1)
    sets = {"distinct": [(wq, ws)] + [gen(1, N, K, seed=50 + i)[2:] for i in range(copies - 1)],
            "clones": [(wq, ws)] + [(wq.clone(), ws.clone()) for _ in range(copies - 1)]}
    outs = [torch.empty((1, N), dtype=torch.float16, device="cuda") for _ in range(copies)]
    rows = []
    for rnd in range(3):
        for kind, wl in sets.items():
            for name in ("fp8", "ring"):
                def call(i):
                    w, s = wl[i]
                    if name == "fp8":
                        F.gemv_fp8_sm90(xq, xs, w, s, 1 / 64, outs[i])
                    else:
                        V.gemv_sm90(xq, xs, w, s, 1 / 64, "low_first", outs[i])
                t_probe = time_graph([lambda i=i: call(i) for i in range(copies)])[0]
                it = [0]

                def cycling():
                    call(it[0] % copies)
                    it[0] += 1
                t_bench = graph_timer(cycling, False)[0] * 1e3
                rows.append(dict(round=rnd, weights=kind, kernel=name, probe_us=t_probe,
                                 bench_us=t_bench))
                print(f"round {rnd} {kind:8s} {name:4s} time_graph {t_probe:.2f}  "
                      f"graph_timer {t_bench:.2f}", flush=True)
    save_rows("gemv-fp8-copies", rows)


if __name__ == "__main__":
    main()
