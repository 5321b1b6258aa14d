# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Session 39's decode split rules against the rules before them, at every (shape, case) where the
two pick different splits, on whatever card runs it:

- the register ring (``fp4_gemv_sm90.choose_config``): 16-bit x splits up to 8 ways where the warps
  rule wants twice its cap (``WIDE_SPLIT_WANT``; before: off), W4A4 at 9-16 tokens in splits of
  at least ``W4A4_16_MIN_STEPS`` = 4 steps (before: 8);
- the E4M3 GEMV (``fp4_gemv_fp8_sm90.choose_split``): at least ``MIN_WINDOWS`` = 2 windows a CTA
  on a one-wave grid (before: 1); at most ``SHORT_GRID_MAX_WINDOWS`` = 4 on a grid under half a
  wave (before: 8; ``--short-grid`` times this rule alone, on the shapes it changes).

The old rules are the same functions with those constants set back. Shapes: the sweep's 18 and
10 more that it did not see. Each point: both configs checked against the fp32 oracle with a
NaN-poisoned output, then CUDA-graph medians over 4 weight copies in 3 rotating rounds. Usage on an
sm_90 machine: ``python scripts/gpu_gemv_split_rules_ab.py [--part i/n]`` (JSON to $OUT or .).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_gemv_other_splits import WIDE_SHAPES, case_runner  # noqa: E402

UNSEEN = [(512, 4096), (1024, 3072), (1024, 8192), (1280, 5120), (2560, 2560), (3072, 8192),
          (2048, 5632), (4096, 11008), (11008, 4096), (5120, 13824)]
# (kernel, op, x dtype, tokens, group size)
CASES = [("fp8", "nvfp4_mm", None, 1, None), ("fp8", "nvfp4_mm", None, 2, None),
         ("fp8", "nvfp4_mm", None, 4, None),
         ("ring", "nvfp4_mm", None, 12, None), ("ring", "nvfp4_mm", None, 16, None),
         ("ring", "nvfp4_w4a16_mm", torch.bfloat16, 1, None),
         ("ring", "nvfp4_w4a16_mm", torch.float16, 2, None),
         ("ring", "nvfp4_w4a16_mm", torch.bfloat16, 3, None),
         ("ring", "w4a16_mm", torch.float16, 1, 32), ("ring", "w4a16_mm", torch.float16, 4, 32),
         ("ring", "w4a16_mm", torch.float16, 1, 64), ("ring", "w4a16_mm", torch.bfloat16, 1, 128),
         ("ring", "w4a16_mm", torch.float16, 4, 128)]
OLD = {S: dict(WIDE_SPLIT_WANT=10**9, W4A4_16_MIN_STEPS=8),
       F: dict(MIN_WINDOWS=1, SHORT_GRID_MAX_WINDOWS=10**9)}
# --short-grid: only the E4M3 GEMV's short-grid rule (SHORT_GRID_MAX_WINDOWS), old = without it
SHORT_GRID_OLD = {F: dict(SHORT_GRID_MAX_WINDOWS=10**9)}
SHORT_GRID_SHAPES = [(1536, 14336), (2048, 14336), (3072, 5120), (3072, 8192), (3584, 6144),
                     (3584, 8192), (4096, 5120), (4096, 6144), (4096, 8192), (4608, 6144),
                     (5120, 6144), (6144, 3072), (6144, 4096), (7168, 3072), (7168, 4096),
                     (8192, 3072), (8192, 4096)]


def _set(values):
    """Set the modules' constants ``{module: {name: value}}`` and drop the rules' caches."""
    for m, kv in values.items():
        for k, v in kv.items():
            setattr(m, k, v)
    S.choose_config.cache_clear()
    F.choose_split.cache_clear()


@contextlib.contextmanager
def old_rules(old=None):
    """The rules as they were: ``old`` (default ``OLD``) set for the block, then restored."""
    old = old or OLD
    keep = {m: {k: getattr(m, k) for k in kv} for m, kv in old.items()}
    try:
        _set(old)
        yield
    finally:
        _set(keep)


def pick(kernel, M, N, K, gs, dt):
    if kernel == "fp8":
        return F.choose_split(N, K, M)
    return S.choose_config(M, N, K, dt is None, gs, dt == torch.bfloat16)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="0/1", help="i/n: every n-th shape from the i-th")
    ap.add_argument("--short-grid", action="store_true")
    args = ap.parse_args()
    i, n = (int(v) for v in args.part.split("/"))
    short = args.short_grid
    path = gpu_decode.result_path("gemv-short-grid-ab" if short else "gemv-split-rules-ab")
    rows = []
    for N, K in (SHORT_GRID_SHAPES if short else WIDE_SHAPES + UNSEEN)[i::n]:
        for kernel, op, dt, M, gs in CASES[:3] if short else CASES:
            new = pick(kernel, M, N, K, gs, dt)
            with old_rules(SHORT_GRID_OLD if short else None):
                old = pick(kernel, M, N, K, gs, dt)
            if old == new:
                continue
            p, out, run = case_runner(kernel == "fp8", op, dt, M, N, K, gs)
            cfgs = {"old": old, "new": new}
            times, med = gpu_decode.checked_rounds(cfgs, run, out, p.reference(0),
                                                   f"{N}x{K} {op} M={M} g{gs}")
            split = {k: c if kernel == "fp8" else c.split_k for k, c in cfgs.items()}
            rows.append(dict(N=N, K=K, M=M, kernel=kernel, op=op, x=str(dt), group=gs,
                             seen=(N, K) in WIDE_SHAPES, old_split=split["old"],
                             new_split=split["new"], rounds_us=times, median_us=med,
                             speedup=med["old"] / med["new"]))
            print(f"{N:6d}x{K:5d} {kernel:4s} {op:15s} {str(dt)[6:]:8s} M={M:2d} g{gs} split "
                  f"{split['old']} -> {split['new']}: {med['old']:6.2f} -> {med['new']:6.2f} us "
                  f"(x{med['old'] / med['new']:.3f})", flush=True)
            gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
