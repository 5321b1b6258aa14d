# ruff: noqa: B023  (closures are used inside their loop iteration)
"""Probe (session 32, written for a consumer-side fix of the PDL pile-up): the TMA GEMV holding
extra shared memory so that an SM takes at most its fair share of the grid's CTAs.

``gpu_pdl_timeline.py`` found that CTAs launched at the start of the kernel before them pile
onto the SMs that kernel leaves free (4096 x 14336 behind the W4A4 pre-pass: 128 CTAs on 23 SMs,
6 on the busiest). Session 32 moved two producers' triggers after their stores. A consumer that
caps its CTAs per SM at ``ceil(grid / SMs)`` (padding its shared memory; a probe-only ``PAD``
constexpr, in KB, allocated at the start and touched at the end so that it stays live) would be
safe behind any producer and keep the early launch. Variants, each checked against the oracle
with a NaN-poisoned output, then CUDA-graph medians over 4 weight copies, 3 rotating rounds:

- W4A4 through the pre-pass and the TMA GEMV (16 tokens): ``early`` (the pre-pass lets
  the GEMV launch at its start), ``early_fair`` (the same, the GEMV padded to its fair share),
  ``late`` (shipped: after the pre-pass's stores), ``late_fair``;
- bf16 x on NVFP4 weights, back to back (16 and 32 tokens): ``op`` (the reduce's early
  trigger), ``fair`` (padded), ``reduce_late``.

Usage on an sm_90 machine: ``python -u scripts/gpu_fair_share.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as shipped_tma  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402
from scripts.gpu_decode import Problem, patched_module, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402

BITS = range(2, 8)  # pad pieces of 4 .. 128 KB, all live to the kernel's end (so they add up)
_ALLOC = "".join(
    f"    if (PAD >> {b}) & 1:  # probe: {1 << b} KB of shared memory held to the end\n"
    f"        pad{b} = gl.allocate_shared_memory(gl.int8, [{1 << b}, 1024], "
    f"gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))\n" for b in BITS)
_TOUCH = "".join(
    f"    if (PAD >> {b}) & 1:\n"
    f"        pad{b}.slice(0, 1, dim=0).store(gl.zeros([1, 1024], gl.int8, gl.BlockedLayout("
    f"[1, 8], [1, 32], [1, gl.num_warps()], [1, 0])))\n" for b in BITS)
PATCHES = [
    ("    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0,\n):",
     "    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0, PAD: gl.constexpr = 0,\n):"),
    ("    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())\n",
     "    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())\n"
     + _ALLOC),
    (_END := "    for i in gl.static_range(STAGES):\n        mbarrier.invalidate(ready.index(i))\n",
     _END + _TOUCH),
    ("        X_ROWS=xr,\n",
     "        X_ROWS=xr, PAD=fair_pad_kb(cfg, nt, N, split, group_size),\n"),
    ("MAX_M = 32  # tokens", '''FAIR = [False]
SMEM_PER_SM = 228 * 1024  # H100: shared memory per SM (1 KB of it reserved per CTA)


def fair_pad_kb(cfg, nt, N, split, group_size):
    """KB of padding that caps an SM at ceil(CTAs / SMs) of this launch's CTAs (0 unless
    FAIR[0]); the CTA's own shared memory estimated from the ring's stages."""
    if not FAIR[0]:
        return 0
    bn = 16 * cfg.row_tiles * cfg.warps
    own = cfg.stages * (bn * 128 + (0 if group_size else bn * 16) + nt * 256 * 2) + 64
    ctas = triton.cdiv(N, bn) * split
    fair = triton.cdiv(ctas, torch.cuda.get_device_properties(0).multi_processor_count)
    room = SMEM_PER_SM // fair - 1024 - own
    return max(0, min(room // 1024, 252))


MAX_M = 32  # tokens'''),
]


def main():
    src = open(shipped_tma.__file__).read()
    T = patched_module("fp4_gemv_tma_fair", src, PATCHES)
    shipped_reduce = fp4_gemv.reduce_partials

    def late_reduce(part, out, alpha, *, pdl=False, pdl_late=False):
        return shipped_reduce(part, out, alpha, pdl=pdl, pdl_late=True)

    def variant(fn, fair=False, reduce_late=False):
        def run(*a):
            T.FAIR[0] = fair
            if reduce_late:
                fp4_gemv.reduce_partials = late_reduce
            try:
                return fn(*a)
            finally:
                T.FAIR[0] = False
                fp4_gemv.reduce_partials = shipped_reduce
        return run

    rows = []
    shapes = ((4096, 14336), (8192, 8192), (14336, 4096), (18432, 3072))
    for (N, K), M, w4a4 in ([(s, m, True) for s in shapes for m in (16,)]
                            + [(s, m, False) for s in shapes for m in (16, 32)]):
        if w4a4:
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            xq, xs = p.x

            def pair(i, o, late):
                x16 = dequant_nvfp4(xq, xs, dtype=torch.float16, pdl=True, pdl_late=late)
                T.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o)

            odt = torch.float16
            runs = {"early": variant(lambda i, o: pair(i, o, False)),
                    "early_fair": variant(lambda i, o: pair(i, o, False), fair=True),
                    "late": variant(lambda i, o: pair(i, o, True)),
                    "late_fair": variant(lambda i, o: pair(i, o, True), fair=True)}
        else:
            p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
            odt = torch.bfloat16

            def one(i, o):
                T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o)

            runs = {"op": variant(one), "fair": variant(one, fair=True),
                    "reduce_late": variant(one, reduce_late=True)}
        for name, run in runs.items():
            check_poisoned(lambda o, run=run: run(0, o), p.reference(0), odt, f"{name} {N}x{K}")
        out = torch.empty((M, N), dtype=odt, device="cuda")
        got = rounds({n: (lambda r=r: time_graph([lambda i=i: r(i, out) for i in range(4)])[0])
                      for n, r in runs.items()}, 3)
        med = {n: st.median(v) for n, v in got.items()}
        rows.append(dict(kind="w4a4 route" if w4a4 else "bf16 x", N=N, K=K, M=M, rounds=got,
                         medians=med))
        print(f"{'w4a4 route' if w4a4 else 'bf16 x':10s} {N:5d}x{K:5d} M={M:2d} "
              + "  ".join(f"{n} {v:6.2f}" for n, v in med.items()), flush=True)
    save_rows("fair-share", rows)


if __name__ == "__main__":
    main()
