# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Split sweep of the TMA GEMV (``fp4_gemv_tma_sm90``) at long-K, narrow weights (the models'
down projections: K from 2x to 5x N), where its split rule leaves one or two CTAs an SM
(4096 x 14336: 64 row blocks x split 2 = 128 CTAs on 132 SMs), 4-32 tokens, on whatever card
runs it (session 41).

Per (shape, tokens, kind): every split from 1 to 16 that divides the 256-K chunks into
non-empty slices, checked against the fp32 oracle with a NaN-poisoned output (x's dtype out),
timed once (CUDA-graph median over 4 weight copies); then the rule's split and the three best in
3 rotating rounds. Kinds: NVFP4 weights with bf16 x (``nvfp4_w4a16_mm``'s kernel at 4-32 tokens,
and the W4A4 layer's 16-bit-x route at 9-32), groups of 32 with fp16 x (``w4a16_mm`` from 5).
Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_long_k.py [--part i/n]``
(JSON to $OUT or .).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

SHAPES = [(4096, 14336), (8192, 28672), (4096, 11008), (5120, 13824), (3584, 18944),
          (2048, 8192), (5120, 27648), (1024, 4096)]  # (N, K)
TOKENS = (4, 8, 12, 16, 24, 32)
KINDS = ("nvfp4_bf16", "g32_fp16")


def splits(chunks):
    """Every split of 1-16 whose slices (``per`` chunks each, as the launcher cuts them) are all
    non-empty and distinct from a smaller split's."""
    seen, out = set(), []
    for s in range(1, 17):
        per = -(-chunks // s)
        real = -(-chunks // per)
        if real not in seen:
            seen.add(real)
            out.append(real)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="0/1", help="i/n: every n-th shape from the i-th")
    args = ap.parse_args()
    i, n = (int(v) for v in args.part.split("/"))
    path = gpu_decode.result_path(f"gemv-tma-long-k-part{i}")
    rows = []
    for N, K in SHAPES[i::n]:
        for kind in KINDS:
            group = 32 if kind == "g32_fp16" else None
            for M in TOKENS:
                if group and M < 5:
                    continue
                if group:
                    p = Problem("w4a16_mm", M, N, K, group=32, dtype=torch.float16, copies=4)
                    alpha = 1.0
                else:
                    p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
                    alpha = p.alpha
                rule = T.choose_config(M, N, K, group)
                chunks = K // T.KCHUNK  # the rule's split as the launcher cuts it
                rule = T.GemvTMAConfig(rule.row_tiles, rule.stages,
                                       -(-chunks // -(-chunks // rule.split_k)), rule.warps)
                out = torch.empty((M, N), dtype=p.x[0].dtype, device="cuda")
                ref = p.reference(0)
                cfgs = {s: T.GemvTMAConfig(rule.row_tiles, rule.stages, s, rule.warps)
                        for s in splits(chunks)}

                def run(cfg, i, o):
                    T.gemv_tma_sm90(p.x[0], *p.w[i], alpha, "low_first", o, config=cfg,
                                    group_size=group)

                for s, cfg in cfgs.items():
                    o = torch.full_like(out, float("nan"))
                    run(cfg, 0, o)
                    if not close(o, ref)[0]:
                        raise SystemExit(f"FAIL {N}x{K} M={M} {kind} split {s}")
                once = {s: time_graph([lambda i=i: run(cfg, i, out) for i in range(4)])[0]
                        for s, cfg in cfgs.items()}
                top = sorted(once, key=once.get)[:3]
                pick = sorted(set(top) | {rule.split_k})
                times = gpu_decode.rounds({s: lambda s=s: time_graph(
                    [lambda i=i: run(cfgs[s], i, out) for i in range(4)])[0] for s in pick})
                med = {s: sorted(v)[1] for s, v in times.items()}
                best = min(med, key=med.get)
                rows.append(dict(N=N, K=K, M=M, kind=kind, rule_split=rule.split_k,
                                 warps=rule.warps, once_us=once, rounds_us=times,
                                 median_us=med, best=best,
                                 speedup=med[rule.split_k] / med[best]))
                print(f"{N:5d}x{K:5d} {kind:10s} M={M:2d} rule {rule.split_k} "
                      f"{med[rule.split_k]:6.2f} best {best} {med[best]:6.2f} "
                      f"x{med[rule.split_k] / med[best]:.3f}  once "
                      + " ".join(f"{s}:{t:.1f}" for s, t in once.items()), flush=True)
                gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
