# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""The plain-Triton GEMV (``fp4_gemv``, the decode kernel off Hopper) with its weight words
loaded evict-first, as the Gluon GEMVs do since session 25: a patched copy against the shipped
module on the H100 (the only card lent; the hint's effect elsewhere is not measured).
Oracle checks with a NaN-poisoned output and bit-for-bit against the shipped kernel first, then
CUDA-graph medians over 4 weight copies, 4 rotating rounds. Usage on a CUDA machine:
``python scripts/gpu_gemv_triton_evict.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402

from fp4mm.kernels import fp4_gemv as V0  # noqa: E402

PATCHES = [
    ("wb = tl.load(w_ptrs, mask=n_ok[:, None] & live, other=0)",
     'wb = tl.load(w_ptrs, mask=n_ok[:, None] & live, other=0, eviction_policy="evict_first")'),
    ("wb = tl.load(w_ptrs, mask=n_ok[:, None] & (kw[None, :] < (k_end - k0) // 8), other=0)",
     "wb = tl.load(w_ptrs, mask=n_ok[:, None] & (kw[None, :] < (k_end - k0) // 8), other=0, "
     'eviction_policy="evict_first")'),
]
CASES = [("nvfp4_mm", torch.float16, 1), ("nvfp4_mm", torch.float16, 4),
         ("nvfp4_w4a16_mm", torch.bfloat16, 1), ("w4a16_mm", torch.float16, 1),
         ("nvfp4_mm", torch.float16, 16)]


def call(mod, p, i, out):
    p.gemv(i, out, None, mod)


def main():
    V1 = patched_module("fp4_gemv_evict_first", open(V0.__file__).read(), PATCHES)
    mods = {"shipped": V0, "evict_first": V1}
    rows = []
    for op, dt, M in CASES:
        for N, K in ((4099, 1056), (18432, 3072)):
            p = Problem(op, M, N, K, group=32 if op == "w4a16_mm" else 16, dtype=dt, copies=4)
            outs = {}
            for name, mod in mods.items():
                o = torch.full((M, N), float("nan"), dtype=dt, device="cuda")
                call(mod, p, 0, o)
                outs[name] = o
                if not close(o, p.reference(0))[0]:
                    raise SystemExit(f"FAIL {op} M={M} {N}x{K} {name}")
            if not torch.equal(outs["shipped"], outs["evict_first"]):
                raise SystemExit(f"not bit-identical: {op} M={M} {N}x{K}")
        out = torch.empty((M, N), dtype=dt, device="cuda")
        res = {k: [] for k in mods}
        names = list(mods)
        for r in range(4):
            for name in names[r % 2:] + names[:r % 2]:
                t = time_graph([lambda i=i: call(mods[name], p, i, out) for i in range(4)])
                res[name].append(t[0])
                rows.append(dict(op=op, x=str(dt), M=M, N=N, K=K, variant=name, round=r,
                                 median_us=t[0], min_us=t[1], max_us=t[2]))
        print(f"{op} {dt} M={M} {N}x{K}: " + " | ".join(
            f"{k} {sorted(v)[2]:.2f} ({min(v):.2f}-{max(v):.2f})" for k, v in res.items()),
            flush=True)
    save_rows("gemv-triton-evict-first", rows)


if __name__ == "__main__":
    main()
