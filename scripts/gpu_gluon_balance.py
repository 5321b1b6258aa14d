# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Balanced split-K (``SM90Config.BALANCE``) against the heuristic, W4A4 calls (x pre-pass +
GEMM, prepacked weights), CUDA-graph timed on an H100, beside cuBLAS bf16 in the same run.

Usage: ``python scripts/gpu_gluon_balance.py [--out DIR]``. Every config is checked against the
oracle (output poisoned) before it is timed."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.harness import graph_timer  # noqa: E402
from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402

DEV = "cuda"


def balanced(bn, stages):
    return g.SM90Config(BN=bn, STAGES=stages, PERSISTENT=False, SPLIT=2, BALANCE=True)


CONFIGS = {
    (128, 3072, 3072): [balanced(128, 6), balanced(64, 6)],
    (1024, 3072, 3072): [balanced(256, 4), balanced(128, 6)],
    (2048, 3072, 3072): [balanced(256, 4), balanced(128, 6)],
    (4096, 3072, 3072): [balanced(256, 4)],
    (128, 18432, 3072): [balanced(128, 6)],
    (1024, 18432, 3072): [balanced(256, 4)],
    (2048, 18432, 3072): [],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    print(dev, torch.__version__, flush=True)
    rows = []
    order, alpha = "high_first", 1 / 64
    sms = g._sm_count(DEV)
    for (M, N, K), extra in CONFIGS.items():
        xq, xs, wq, ws = gen(M, N, K, seed=1)
        ncopy = max(2, int(3 * 50e6 // (wq.numel() + ws.numel())) + 1)
        packs = [g.prepack_weight_sm90(wq.clone(), ws.clone(), order) for _ in range(ncopy)]
        wd = dequantize_nvfp4_blocks(wq, ws, order).bfloat16()
        wds = [wd.clone() for _ in range(max(2, int(3 * 50e6 // (wd.numel() * 2)) + 1))]
        xb = dequantize_nvfp4_blocks(xq, xs, order).bfloat16()
        out = torch.empty((M, N), dtype=torch.float16, device=DEV)
        outb = torch.empty((M, N), dtype=torch.bfloat16, device=DEV)
        i = [0]

        def nxt(lst):
            i[0] += 1
            return lst[i[0] % len(lst)]

        def add(name, fn, base=None):
            med, lo, hi = graph_timer(fn, False)
            us = med * 1e3
            ratio = base / us if base else 1.0
            rows.append(dict(M=M, N=N, K=K, impl=name, us=us, min_us=lo * 1e3, max_us=hi * 1e3,
                             ratio_vs_cublas_bf16=ratio))
            print(f"{M:>5}x{N}x{K} {name:<78} {us:8.1f} us {ratio:6.3f}x", flush=True)
            return us

        base = add("cublas_bf16", lambda: torch.matmul(xb, nxt(wds).T, out=outb))
        heur = g.choose_config(M, N, K, torch.float16, sms)
        for cfg in [None] + extra:
            c = cfg or heur
            sc = g.schedule(M, N, K, c, sms)
            label = (f"{c}{' (heuristic)' if cfg is None else ''} units {sc.num_units} "
                     f"slices {sc.k_per_split}/{sc.k_tiles - sc.k_per_split}")
            o = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
            g.fp4_gemm_sm90(xq, xs, None, None, alpha, order, o, prepacked=packs[0], config=cfg)
            ok, rel, _ = check(o, xq, xs, wq, ws, alpha, order)
            if not ok:
                print(f"{label}: WRONG (rel {rel:.2e}), not timed", flush=True)
                rows.append(dict(M=M, N=N, K=K, impl=label, correct=False))
                continue
            add(label, lambda: g.fp4_gemm_sm90(xq, xs, None, None, alpha, order, out,
                                               prepacked=nxt(packs), config=cfg), base)
    res = dict(device=dev, torch=torch.__version__, date=datetime.datetime.now().isoformat(),
               git_commit=os.environ.get("FP4MM_GIT_COMMIT", ""), timer="graph", rows=rows)
    with open(os.path.join(args.out, "gluon_balance.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
