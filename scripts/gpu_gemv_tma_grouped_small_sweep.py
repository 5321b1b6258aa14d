# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Configs of the TMA GEMV's group-scale form at 5-8 tokens (the 8-token tile), session 30.

Session 30 sent ``w4a16_mm`` with groups of 32 to ``fp4_gemv_tma_sm90`` from 5 tokens (was 9).
Its rule there (one warp of one row tile, 2 stages, split 2) was swept at 9-32 tokens (session 28);
at 6 tokens other configs were 2-14% faster on five of six shapes
(bench/results/2026-11-27-w4a16-grouped-small-dispatch-verify-h100.json). This sweep: 5 and 8
tokens, eight weight shapes, fp16 and bf16 x, warps 1/2/4 x split 1-4 (one row tile, 2 stages),
each config checked against the oracle (NaN-poisoned output) at a ragged small shape first,
then 3 rotating rounds of CUDA-graph medians over 4 weight copies.

Usage on an sm_90 machine: ``python -u scripts/gpu_gemv_tma_grouped_small_sweep.py`` (JSON to
$OUT). ``--verify``: the rule fitted to that sweep (``choose_config``) against the rule before it
(one warp, split 2) and the register ring, at 6 and 7 tokens on seven weight shapes not swept.
"""

from __future__ import annotations

import itertools
import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402

SHAPES = [(18432, 3072), (8192, 8192), (28672, 4096), (14336, 4096), (4096, 14336),
          (4096, 4096), (5120, 5120), (3072, 3072)]
CONFIGS = {f"w{w}_k{k}": T.GemvTMAConfig(1, 2, k, w) for w in (1, 2, 4) for k in (1, 2, 3, 4)}


def run(p, i, out, cfg):
    T.gemv_tma_sm90(p.x[0], *p.w[i], 1.0, "low_first", out, config=cfg, group_size=32)


def check():
    n = 0
    for (M, N, K), dt in itertools.product([(5, 77, 1280), (8, 130, 2048)],
                                           (torch.float16, torch.bfloat16)):
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt)
        ref = p.reference(0)
        for name, cfg in CONFIGS.items():
            check_poisoned(lambda o: run(p, 0, o, cfg), ref, dt, f"{name} {dt} {M}x{N}x{K}")
            n += 1
    print(f"correctness: {n} checks passed", flush=True)


def verify():
    rows = []
    shapes = [(11008, 4096), (4096, 11008), (13824, 5120), (5120, 13824), (16384, 4096),
              (6144, 6144), (24576, 3072)]
    for (N, K), M, dt in itertools.product(shapes, (6, 7), (torch.float16, torch.bfloat16)):
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        runs = {"rule": lambda i, o: run(p, i, o, None),
                "old_rule": lambda i, o: run(p, i, o, T.GemvTMAConfig(1, 2, 2, 1)),
                "ring": lambda i, o: fp4_gemv_sm90.gemv_sm90(p.x[0], None, *p.w[i], 1.0,
                                                             "low_first", o, group_size=32)}
        ref = p.reference(0)
        for name, fn in runs.items():
            check_poisoned(lambda o: fn(0, o), ref, dt, f"{name} {dt} {M}x{N}x{K}")
        got = rounds({name: (lambda fn=fn: time_graph(
            [lambda i=i: fn(i, out) for i in range(4)])[0]) for name, fn in runs.items()}, 3)
        med = {k: st.median(v) for k, v in got.items()}
        print(f"M={M} {N}x{K} {str(dt)[6:]:8s} {T.choose_config(M, N, K, 32)} "
              + " ".join(f"{k} {v:.2f}" for k, v in med.items()), flush=True)
        rows.append(dict(op="w4a16_mm", group=32, M=M, N=N, K=K, dtype=str(dt), rounds=got,
                         medians=med))
    save_rows("gemv-tma-grouped-small-verify", rows)


def main():
    if "--verify" in sys.argv:
        return verify()
    check()
    rows = []
    for (N, K), M, dt in itertools.product(SHAPES, (5, 8), (torch.float16, torch.bfloat16)):
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        fns = {"rule": None} | CONFIGS
        got = rounds({name: (lambda cfg=cfg: time_graph(
            [lambda i=i: run(p, i, out, cfg) for i in range(4)])[0])
            for name, cfg in fns.items()}, 3)
        med = {k: st.median(v) for k, v in got.items()}
        best = min(med, key=med.get)
        print(f"M={M} {N}x{K} {str(dt)[6:]:8s} rule {med['rule']:6.2f} best {best} "
              f"{med[best]:6.2f}  " + " ".join(f"{k} {v:.2f}" for k, v in med.items()
                                               if k != "rule"), flush=True)
        rows.append(dict(op="w4a16_mm", group=32, M=M, N=N, K=K, dtype=str(dt), rounds=got,
                         medians=med))
    save_rows("gemv-tma-grouped-small-sweep", rows)


if __name__ == "__main__":
    main()
