"""W4A4 decode at M = 1: the register-ring GEMV with the step's scale blocks as MMA columns
(``GemvSM90Config.block_columns``) against the shipped config.

Why: with L2-resident weights the W4A4 GEMV takes 16.7 us at M = 1, above the decode bar's
15.9 us, so its instruction count is the limit (docs/perf-log.md). With one token, 7 of the
MMA's 8 columns carried copies of it; now column n carries the token's x in scale block n only,
so the MMAs sum bare codes per block and the scales multiply fp32 block sums: no ``mul.f16x2``
per decoded pair. ptxas (CPU, two row tiles, split K): 647 SASS instructions per two-step loop
turn instead of 722 (-10%).

Measured no faster (session 17, bench/results/2026-11-27-gemv-block-columns-h100.json), so the
variant was reverted: this script runs at commit 3ab98f3, which has it.

Usage (sm_90, at 3ab98f3): ``python scripts/gpu_gemv_block_columns.py`` (writes $OUT or .): every config
checked against the fp32 oracle first, CUDA-graph medians over 4 weight copies.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

C = S.GemvSM90Config


def main():
    rows = []
    for N, K in ((18432, 3072), (8192, 8192), (3072, 3072), (28672, 4096)):
        p = Problem("nvfp4_mm", 1, N, K, copies=4)
        out = torch.empty((1, N), dtype=torch.float16, device="cuda")
        heur = S.choose_config(1, N, K, True)
        cfgs = {"shipped": heur}
        for nw in (1, 2):
            for rt in (1, 2):
                for split in (2, 3, 4, 6):
                    cfgs[f"blk w{nw} rt{rt} s{split}"] = C(nw, 1, split, 0, rt,
                                                         block_columns=True)
                    cfgs[f"ring w{nw} rt{rt} s{split}"] = C(nw, 1, split, 0, rt)
        res = {}
        for name, cfg in cfgs.items():
            o = torch.full((1, N), float("nan"), device="cuda")
            run_new(p, 0, o, cfg)
            if not close(o, p.reference(0))[0]:
                print("WRONG", N, K, cfg, flush=True)
                continue
            res[name] = time_graph([lambda i=i, cfg=cfg, p=p, out=out: run_new(p, i, out, cfg)
                                    for i in range(4)])[0]
        best = {k: min((v, n) for n, v in res.items() if n.startswith(k)) for k in ("blk", "ring")}
        print(f"{N}x{K} M=1: shipped {res['shipped']:6.2f} ({heur}) | best ring "
              f"{best['ring'][0]:6.2f} ({best['ring'][1]}) | best blk {best['blk'][0]:6.2f} "
              f"({best['blk'][1]})", flush=True)
        print("   " + " ".join(f"{n[4:]}:{v:.1f}" for n, v in res.items() if n.startswith("blk")),
              flush=True)
        rows.append(dict(M=1, N=N, K=K, heuristic_config=str(heur), **res))
    save_rows("gemv-block-columns", rows)


if __name__ == "__main__":
    main()
