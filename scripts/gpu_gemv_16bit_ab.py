# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""A/B on the GPU, op level, same process: the 16-bit-x decode GEMVs of this tree
(``fp4_decode``, ``fp4_gemv_sm90``, ``fp4_gemv_tma_sm90``) against the same modules as of an
earlier commit, through ``nvfp4_w4a16_mm`` and ``w4a16_mm`` with bf16 x (``CASES``: the decode
bar's rows, then 8-32 tokens of the TMA GEMV on four shapes, groups of 32 and 128).

Session 41 ran it at ``c59f57c`` (branch ``bf16-tables``, not merged: the bf16 decoder's two
byte tables held in per-thread registers, 10-13% fewer SASS instructions in every bf16 GEMV
loop) against ``a732f47``: 0.98-1.02x at all 14 cases
(bench/results/2026-11-28-gemv-bf16-tables-ab-h200.json; its variant "tables in registers" is
this tree there). Session 24 had found the same on the register ring (H100).

The old modules come from ``scripts/_<COMMIT>_<file>.py`` when present (the device's copy of
the tree may have stale git metadata), else from ``git show``; they are swapped into
``fp4mm.kernels`` for the old variant (the ops import those modules from the package at call
time). Every case: both variants on NaN-poisoned outputs, bit-identical to each other and close
to the fp32 oracle; then CUDA-graph medians over weight copies that fill 3x the L2, rotating
rounds.

Usage (sm_90): ``python scripts/gpu_gemv_16bit_ab.py --before COMMIT [--rounds 4]`` (JSON to
$OUT or .).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import close, patched_module, save_rows, time_graph  # noqa: E402
from gpu_gluon import gen  # noqa: E402

import fp4mm  # noqa: E402
import fp4mm.kernels as K  # noqa: E402
from fp4mm import reference  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_decode, fp4_gemv_sm90, fp4_gemv_tma_sm90  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
# (op, M, N, K, group): the decode bar's rows, then 9-32 tokens on the TMA GEMV
CASES = [("nvfp4", 1, 18432, 3072, 0), ("nvfp4", 4, 18432, 3072, 0),
         ("nvfp4", 16, 18432, 3072, 0), ("nvfp4", 1, 8192, 8192, 0),
         ("nvfp4", 8, 18432, 3072, 0), ("nvfp4", 12, 18432, 3072, 0),
         ("nvfp4", 24, 18432, 3072, 0), ("nvfp4", 32, 18432, 3072, 0),
         ("nvfp4", 16, 8192, 8192, 0), ("nvfp4", 16, 14336, 4096, 0),
         ("nvfp4", 16, 4096, 14336, 0),
         ("group", 4, 18432, 3072, 32), ("group", 16, 18432, 3072, 32),
         ("group", 16, 18432, 3072, 128)]


def old_modules(before):
    """(fp4_decode, fp4_gemv_sm90, fp4_gemv_tma_sm90) as of ``before``, as private modules."""
    def source(path):
        copy = os.path.join(ROOT, "scripts", f"_{before}_{os.path.basename(path)}")
        if os.path.exists(copy):
            return open(copy).read()
        return subprocess.run(["git", "show", f"{before}:{path}"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout

    dec = patched_module(f"old_fp4_decode_{before}", source("fp4mm/kernels/fp4_decode.py"))
    ring = patched_module(f"old_fp4_gemv_sm90_{before}", source(
        "fp4mm/kernels/fp4_gemv_sm90.py"), [("from fp4mm.kernels.fp4_decode import (",
                                             f"from {dec.__name__} import (")])
    tma = patched_module(f"old_fp4_gemv_tma_sm90_{before}", source(
        "fp4mm/kernels/fp4_gemv_tma_sm90.py"),
        [("from fp4mm.kernels import fp4_gemv_sm90\n",
          f"import {ring.__name__} as fp4_gemv_sm90\n"),
         ("from fp4mm.kernels.fp4_gemv_sm90 import (", f"from {ring.__name__} import (")])
    return dec, ring, tma


def use(mods):
    K.fp4_decode, K.fp4_gemv_sm90, K.fp4_gemv_tma_sm90 = mods


def problem(op, M, N, K_, group, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = (torch.randn(M, K_, device="cuda", generator=g) * 0.5).bfloat16()
    if op == "nvfp4":
        _, _, wq, ws = gen(1, N, K_, seed=seed)
        return x, wq, ws
    wq = torch.randint(0, 256, (N, K_ // 2), dtype=torch.uint8, device="cuda", generator=g)
    sc = (torch.rand((N, K_ // group), device="cuda", generator=g) * 0.1 + 0.01).bfloat16()
    return x, wq, sc


def call(op, group, x, w, s, out):
    if op == "nvfp4":
        return fp4mm.ops.nvfp4_w4a16_mm_alpha(x, w, s, 0.37, out=out)
    return fp4mm.w4a16_mm(x, w, s, group, out=out)


def oracle(op, group, x, w, s):
    if op == "nvfp4":
        return reference.nvfp4_w4a16_mm(x, w, s, 1.0 / 0.37)
    return reference.w4a16_mm(x, w, s, group)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    new = (fp4_decode, fp4_gemv_sm90, fp4_gemv_tma_sm90)
    old = old_modules(args.before)
    variants = {"before": old, "this tree": new}
    rows = []
    for op, M, N, K_, group in CASES:
        x, w, s = problem(op, M, N, K_, group, seed=M + N + group)
        ref = oracle(op, group, x, w, s)
        outs = {}
        for name, mods in variants.items():
            use(mods)
            o = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
            call(op, group, x, w, s, o)
            torch.cuda.synchronize()
            outs[name] = o
        use(new)
        ok = torch.equal(outs["before"], outs["this tree"]) and close(outs["this tree"], ref)
        print(("ok  " if ok else "FAIL"), op, M, N, K_, group, flush=True)
        if not ok:
            raise SystemExit("wrong results")
        copies = n_copies(w.numel() + s.numel() * s.element_size(), 50 * 2**20)
        ws = [(w, s)] + [problem(op, M, N, K_, group, seed=1000 + i)[1:] for i in range(copies - 1)]
        out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        res = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % 2:] + names[:r % 2]:
                use(variants[name])
                t = time_graph([lambda i=i: call(op, group, x, ws[i][0], ws[i][1], out)
                                for i in range(copies)])
                res[name].append(t[0])
                rows.append(dict(op=op, M=M, N=N, K=K_, group=group, variant=name, round=r,
                                 median_us=t[0], min_us=t[1], max_us=t[2], copies=copies))
        use(new)
        med = {k: sorted(v)[len(v) // 2] for k, v in res.items()}
        print(f"{op} g{group} M={M} {N}x{K_}: " + " | ".join(
            f"{k} {med[k]:.2f} (best {min(res[k]):.2f})" for k in names)
            + f" | speedup {med['before'] / med['this tree']:.3f}", flush=True)
    save_rows("gemv-16bit-ab", rows)


if __name__ == "__main__":
    main()
