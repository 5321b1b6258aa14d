# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The register-ring GEMV's split rule with and without session 38's long-K splits
(``fp4_gemv_sm90.LONG_K_STEPS``: with 16-bit x, split K up to 8 ways until no CTA streams more
than 32 128-K steps), at every (shape, case) where the two differ, on whatever card runs it.

Cases: bf16 x at 1 token, fp16 x at 2, groups of 32 (fp16 x) at 1 and 4, groups of 64 at 1.
Each point: both configs checked against the fp32 oracle with a NaN-poisoned output, then
CUDA-graph medians over 4 weight copies in 3 rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_ring_long_k.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem  # noqa: E402

SHAPES = [(5120, 27648), (8192, 28672), (3584, 18944), (4096, 14336), (2048, 8192)]
CASES = [("nvfp4_w4a16_mm", torch.bfloat16, 1, None), ("nvfp4_w4a16_mm", torch.float16, 2, None),
         ("w4a16_mm", torch.float16, 1, 32), ("w4a16_mm", torch.float16, 4, 32),
         ("w4a16_mm", torch.float16, 1, 64)]


def rules(M, N, K, gs, dt):
    args = (M, N, K, False, gs, dt == torch.bfloat16)
    new = S.choose_config(*args)
    keep, S.LONG_K_STEPS = S.LONG_K_STEPS, 10**9
    S.choose_config.cache_clear()
    try:
        old = S.choose_config(*args)
    finally:
        S.LONG_K_STEPS = keep
        S.choose_config.cache_clear()
    return old, new


def main():
    path = gpu_decode.result_path("gemv-ring-long-k")
    rows = []
    for N, K in SHAPES:
        for op, dt, M, gs in CASES:
            old, new = rules(M, N, K, gs, dt)
            if old == new:
                continue
            p = Problem(op, M, N, K, group=gs or 16, dtype=dt, copies=4)
            out = torch.empty((M, N), dtype=dt, device="cuda")
            al = 1.0 if gs else p.alpha
            cfgs = {"old": old, "new": new}

            def run(c, i, o):
                S.gemv_sm90(p.x[0], None, *p.w[i], al, "low_first", o, config=c, group_size=gs)

            times, med = gpu_decode.checked_rounds(cfgs, run, out, p.reference(0),
                                                   f"{N}x{K} {op} M={M} g{gs}")
            rows.append(dict(N=N, K=K, M=M, op=op, x=str(dt), group=gs,
                             old_split=old.split_k, new_split=new.split_k, rounds_us=times,
                             median_us=med, speedup=med["old"] / med["new"]))
            print(f"{N:6d}x{K:5d} {op:15s} {str(dt)[6:]:8s} M={M} g{gs} split {old.split_k} -> "
                  f"{new.split_k}: {med['old']:6.2f} -> {med['new']:6.2f} us "
                  f"(x{med['old'] / med['new']:.3f})", flush=True)
            gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
