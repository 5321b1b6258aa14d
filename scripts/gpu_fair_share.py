# ruff: noqa: B023  (closures are used inside their loop iteration)
"""Probe (session 32): the TMA GEMV holding extra shared memory so that an SM takes at most its
fair share of the grid's CTAs (``fp4_gemv_tma_sm90.fair_share_pad``), against the same kernel
unpadded.

``gpu_pdl_timeline.py`` found that CTAs launched at the start of the kernel before them (PDL)
pile onto the SMs that kernel leaves free (4096 x 14336 behind the W4A4 pre-pass: 128 CTAs on 23
SMs, 6 on the busiest). A consumer that caps its CTAs per SM at ``ceil(grid / SMs)`` is safe
behind any producer and keeps the early launch. The first run of this probe patched the cap into
a copy of the kernel (``bench/results/2026-11-28-fair-share-probe-h100.json``): behind the
pre-pass's early trigger, 16 tokens, 63.5 -> 23.2 us at 4096 x 14336 (the late trigger 23.7);
bf16 x back to back 8192 x 8192 M=32 27.45 -> 22.88, 18432 x 3072 M=16 19.68 -> 19.08. The cap
then shipped for E4M3 weight scales; this version times the public ops as shipped (``op``)
against ``fair_share_pad`` returning zeros (``unpadded``), each checked against the oracle with
a NaN-poisoned output first, CUDA-graph medians over 4 weight copies, 3 rotating rounds:
bf16-x ``nvfp4_w4a16_mm`` at 4-32 tokens and W4A4 at 17-32 (the route through the pre-pass),
back to back.

``--route`` (written in session 32, not yet run): :func:`route`, whether the W4A4 route should
go back to the pre-pass's early trigger now that the GEMV can refuse to pile up.

Usage on an sm_90 machine: ``python -u scripts/gpu_fair_share.py [--route]`` (JSON to $OUT or
.).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, save_rows  # noqa: E402
from scripts.gpu_tma_dispatch import compare  # noqa: E402


def route():
    """``--route``: W4A4 at 17-32 tokens (the route through the x pre-pass): the op as shipped
    (the pre-pass triggers after its stores; the GEMV not padded) against the pre-pass's early
    trigger with the GEMV padded to its fair share (``early_fair``: 0.1-0.8 us ahead of the late
    trigger at 16 tokens in the first run) and the late trigger padded (``late_fair``)."""
    from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4

    rows = []
    for (N, K), M in [(s, m) for s in ((18432, 3072), (14336, 4096), (28672, 4096), (12288, 4096),
                                       (16384, 2048), (8192, 8192), (4096, 14336))
                      for m in (17, 24, 32)]:
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        xq, xs = p.x

        def pair(i, o, late):
            x16 = dequant_nvfp4(xq, xs, dtype=torch.float16, pdl=True, pdl_late=late)
            T.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o, fair_share=True)

        runs = {"op": lambda i, o: fp4mm.nvfp4_mm(*p.x, *p.w[i], p.alpha, out=o),
                "early_fair": lambda i, o: pair(i, o, False),
                "late_fair": lambda i, o: pair(i, o, True)}
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        rows.append(compare(runs, p.reference(0), out, torch.float16,
                            f"W4A4 route {N:5d}x{K:5d} M={M:2d}",
                            dict(op="nvfp4_mm", N=N, K=K, M=M)))
    save_rows("fair-share-route", rows)


def main():
    if "--route" in sys.argv:
        return route()
    shipped = T.fair_share_pad

    def unpadded(fn):
        def run(*a):
            T.fair_share_pad = lambda *args: (0, 0, 0)
            try:
                return fn(*a)
            finally:
                T.fair_share_pad = shipped
        return run

    cases = [("nvfp4_w4a16_mm", N, K, M) for N, K in ((18432, 3072), (8192, 8192), (4096, 14336))
             for M in (4, 8, 16, 32)]
    cases += [("nvfp4_mm", N, K, M) for N, K in ((4096, 14336), (8192, 8192), (18432, 3072))
              for M in (17, 32)]
    rows = []
    for op, N, K, M in cases:
        if op == "nvfp4_mm":
            p = Problem(op, M, N, K, copies=4)
            odt = torch.float16

            def call(i, o):
                return fp4mm.nvfp4_mm(*p.x, *p.w[i], p.alpha, out=o)
        else:
            p = Problem(op, M, N, K, dtype=torch.bfloat16, copies=4)
            odt = torch.bfloat16

            def call(i, o):  # the global scale is the encode scale: 1 / alpha
                return fp4mm.nvfp4_w4a16_mm(p.x[0], *p.w[i], 1.0 / p.alpha, out=o)

        out = torch.empty((M, N), dtype=odt, device="cuda")
        rows.append(compare({"op": call, "unpadded": unpadded(call)}, p.reference(0), out, odt,
                            f"{op:15s} {N:5d}x{K:5d} M={M:2d}", dict(op=op, N=N, K=K, M=M)))
    save_rows("fair-share", rows)


if __name__ == "__main__":
    main()
