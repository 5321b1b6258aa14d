# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The TMA decode GEMV (``fp4_gemv_tma_sm90``) reading its NVFP4 stages through 128-byte-swizzled,
bank-conflict-free views, against an earlier copy of the module (session 28).

Why: ncu at 16 tokens of 18432 x 3072 (bf16 x, the four-warp rule) counted 10.3 shared-memory
wavefronts per 16-byte load instead of 4 (68% of them bank conflicts), and a per-CTA timeline
(``scripts/gpu_gemv_tma_timeline.py``) showed the CTAs compute-bound after their first chunk
(0.3 us of later waits, 10.5 us of K loop), with the SMs that hold four CTAs ending 4 us after
those that hold three.

Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_swizzle.py OLD_SOURCE.py`` (the old
module as a file, e.g. ``git show REV:fp4mm/kernels/fp4_gemv_tma_sm90.py``; JSON to $OUT).
1. Both modules' heuristic configs and seven configs (warps 1/2/4, row tiles 1/2, stages 2-4,
   split 1-4) checked against the oracle with NaN-poisoned outputs (fp32 and 16-bit) at ragged
   shapes, both nibble orders, fp16 and bf16 x; any failure stops the run.
2. Each decode shape timed old / new with each module's heuristic config, 3 rotating rounds of
   CUDA-graph medians over 4 weight copies.
"""

from __future__ import annotations

import itertools
import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as NEW  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, rounds, save_rows, time_graph  # noqa: E402

C = NEW.GemvTMAConfig
CHECKED = [C(2, 2, 3, 4), C(2, 3, 1, 4), C(1, 2, 3, 4), C(2, 3, 2, 1), C(2, 2, 2, 2),
           C(1, 3, 1, 1), C(2, 4, 4, 2)]
SHAPES = [(M, 18432, 3072, torch.bfloat16) for M in (9, 12, 16, 24, 32)] + [
    (16, 18432, 3072, torch.float16), (16, 8192, 8192, torch.bfloat16),
    (32, 8192, 8192, torch.bfloat16), (16, 28672, 4096, torch.bfloat16),
    (16, 14336, 4096, torch.bfloat16), (16, 4096, 4096, torch.bfloat16),
    (16, 3072, 3072, torch.bfloat16)]


def check(mods):
    n = 0
    for (M, N, K), dt in itertools.product([(9, 200, 512), (16, 77, 1280), (13, 300, 3072),
                                            (32, 130, 768), (25, 1000, 2048)],
                                           (torch.float16, torch.bfloat16)):
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt)
        for order in ("low_first", "high_first"):
            p.order = order
            ref = p.reference(0)
            for name, mod in mods.items():
                cfgs = [None] + (CHECKED if order == "low_first" else CHECKED[:1])
                for j, cfg in enumerate(cfgs):
                    c = None if cfg is None else mod.GemvTMAConfig(
                        cfg.row_tiles, cfg.stages, cfg.split_k, cfg.warps)
                    for odt in (torch.float32, dt) if j % 3 == 0 else (torch.float32,):
                        o = torch.full((M, N), float("nan"), dtype=odt, device="cuda")
                        mod.gemv_tma_sm90(p.x[0], *p.w[0], p.alpha, order, o, config=c)
                        ok, err = close(o, ref)
                        n += 1
                        if not ok:
                            raise SystemExit(f"FAIL {name} {dt} M={M} N={N} K={K} {order} {c} "
                                             f"{odt}: rel err {err}")
    print(f"correctness: {n} checks passed", flush=True)


def main():
    old = patched_module("old_fp4_gemv_tma_sm90", open(sys.argv[1]).read())
    mods = {"old": old, "new": NEW}
    check(mods)
    rows = []
    for M, N, K, dt in SHAPES:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        fns = {name: (lambda mod=mod: time_graph(
            [lambda i=i: mod.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", out)
             for i in range(4)])[0]) for name, mod in mods.items()}
        got = rounds(fns, 3)
        med = {k: st.median(v) for k, v in got.items()}
        cfg = NEW.choose_config(M, N, K)
        print(f"{str(dt)[6:]:8s} M={M:2d} {N}x{K}  old {med['old']:6.2f}  new {med['new']:6.2f} "
              f" ({100 * (med['new'] / med['old'] - 1):+.1f}%)  {cfg}  rounds {got}",
              flush=True)
        rows.append(dict(M=M, N=N, K=K, dtype=str(dt), config=str(cfg), old_us=got["old"],
                         new_us=got["new"], old_med=med["old"], new_med=med["new"]))
    save_rows("gemv-tma-swizzle", rows)


if __name__ == "__main__":
    main()
