# ruff: noqa: B023  (closures are used inside their loop iteration)
"""Probe (session 32): does the split-K reduce's early PDL trigger slow the next call's GEMV?

``gpu_pdl_timeline.py`` found that CTAs launched at the start of the kernel before them pile onto
the SMs that kernel leaves free. Back-to-back decode calls (the benchmark's CUDA graphs, and
consecutive matmuls in a model where nothing else sits between) run GEMV -> split-K reduce ->
the next GEMV, and the reduce (``fp4_gemv.reduce_partials``, M * N / 1024 CTAs: 18 at one token
of 18432 rows) let the next kernel launch at its start. This times each public op as shipped
(``op``) against the same op with every reduce's trigger after its stores (``reduce_late``), at
the decode-bar rows and a few one-wave grids. Since the sweep (below) W4A4 on the register ring
triggers late from 5 tokens (``fp4_gemv_sm90.REDUCE_PDL_LATE_MIN_M_W4A4``); ``--rule`` checks that
against the reduce forced early (``reduce_early``) at 4-16 tokens on six shapes. Each
variant is checked against the oracle with a NaN-poisoned output first; CUDA-graph medians over 4
weight copies, 3 rotating rounds. ``--sweep``: W4A4 and bf16-x NVFP4 weights on eight shapes
(N = 1024-28672) at 1-32 tokens, with the shipped reduce's partials shape and grid per case.
Usage on an sm_90 machine: ``python -u scripts/gpu_reduce_trigger.py [--sweep | --rule]``
(JSON to $OUT or .).
"""

from __future__ import annotations

import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv  # noqa: E402
from scripts.gpu_decode import Problem, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402


def main():
    shipped = fp4_gemv.reduce_partials

    def forced(fn, late):  # fn with every PDL reduce's trigger forced early or late
        def reduce(part, out, alpha, *, pdl=False, pdl_late=False):
            return shipped(part, out, alpha, pdl=pdl, pdl_late=late)

        def run(*a):
            fp4_gemv.reduce_partials = reduce
            try:
                return fn(*a)
            finally:
                fp4_gemv.reduce_partials = shipped
        return run

    cases = [("nvfp4_mm", 18432, 3072, M) for M in (1, 4, 16)]
    cases += [("nvfp4_w4a16_mm", 18432, 3072, M) for M in (1, 4, 16)]
    cases += [("w4a16_mm", 18432, 3072, M) for M in (1, 4, 16)]
    cases += [(op, 8192, 8192, 1) for op in ("nvfp4_mm", "nvfp4_w4a16_mm", "w4a16_mm")]
    cases += [("nvfp4_mm", N, K, M) for N, K in ((14336, 4096), (4096, 14336)) for M in (8, 16)]
    if "--sweep" in sys.argv:  # where the late trigger should be the rule
        cases = [(op, N, K, M) for op in ("nvfp4_mm", "nvfp4_w4a16_mm")
                 for N, K in ((1024, 4096), (2048, 4096), (4096, 4096), (4096, 14336),
                              (14336, 4096), (8192, 8192), (28672, 4096), (18432, 3072))
                 for M in (1, 4, 8, 16, 32)]
    if "--rule" in sys.argv:  # with REDUCE_PDL_LATE_MIN_M_W4A4 shipped: W4A4 around it
        cases = [("nvfp4_mm", N, K, M) for N, K in ((4096, 14336), (8192, 8192), (4096, 4096),
                                                    (18432, 3072), (14336, 4096), (1024, 4096))
                 for M in (4, 5, 6, 8, 12, 16)]
    seen = []  # the partials' shapes of the shipped reduce, per case

    def spy(part, *a, **k):
        seen.append(tuple(part.shape))
        return shipped(part, *a, **k)
    rows = []
    for op, N, K, M in cases:
        dt = torch.bfloat16 if op == "nvfp4_w4a16_mm" else torch.float16
        p = Problem(op, M, N, K, group=32 if op == "w4a16_mm" else 16, dtype=dt, copies=4)
        odt = torch.bfloat16 if op == "nvfp4_w4a16_mm" else torch.float16

        def call(i, o):
            w = p.w[i]
            if op == "nvfp4_mm":
                return fp4mm.nvfp4_mm(*p.x, *w, p.alpha, out=o)
            if op == "w4a16_mm":
                return fp4mm.w4a16_mm(p.x[0], *w, 32, out=o)
            return fp4mm.nvfp4_w4a16_mm(p.x[0], *w, 1.0 / p.alpha, out=o)  # gs: the encode scale

        runs = {"op": call, "reduce_late": forced(call, True)}
        if "--rule" in sys.argv:
            runs["reduce_early"] = forced(call, False)
        seen.clear()
        fp4_gemv.reduce_partials = spy
        try:
            call(0, torch.empty((M, N), dtype=odt, device="cuda"))
        finally:
            fp4_gemv.reduce_partials = shipped
        partials = seen[0] if seen else None
        for name, run in runs.items():
            check_poisoned(lambda o, run=run: run(0, o), p.reference(0), odt, f"{name} {op}")
        out = torch.empty((M, N), dtype=odt, device="cuda")
        got = rounds({n: (lambda r=r: time_graph([lambda i=i: r(i, out) for i in range(4)])[0])
                      for n, r in runs.items()}, 3)
        med = {n: st.median(v) for n, v in got.items()}
        grid = -(-partials[1] * partials[2] // 1024) if partials else 0
        rows.append(dict(op=op, N=N, K=K, M=M, partials=partials, reduce_ctas=grid, rounds=got,
                         medians=med))
        print(f"{op:15s} {N:5d}x{K:5d} M={M:2d} reduce {str(partials):15s} {grid:4d} CTAs "
              + "  ".join(f"{n} {v:6.2f}" for n, v in med.items()), flush=True)
    save_rows("reduce-trigger" + ("-sweep" if "--sweep" in sys.argv else "")
              + ("-rule" if "--rule" in sys.argv else ""), rows)


if __name__ == "__main__":
    main()
