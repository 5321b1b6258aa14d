"""Decode at M = 1-16: four 16-row MMA tiles per warp in the register-ring GEMV (fp4_gemv_sm90).

Why: with L2-resident weights the W4A4 GEMV takes 16.7 us at M = 1 (fp16 x 13.8), above the
decode bar's 15.9, so its instruction count is the limit (docs/perf-log.md, "What stands
between"). A W4A4 warp decodes x (8 padded tokens x 128 K per step) for every row tile group:
with two tiles that is a fifth of its decode work, with four a ninth. Four tiles compile without
spills (CPU, ptxas: W4A4 NT 8 228 registers, 16-bit x NT 8 240; two tiles 125-126), so half the
resident warps, the same bytes in flight per SM.

The kernel takes ``row_tiles`` = 4 as is (its layouts follow BN = 16 ROW_TILES num_warps); only
``config_is_valid`` refuses it, and this probe lifts that. Usage (sm_90):
``python scripts/gpu_gemv_row_tiles4.py`` (writes $OUT or .): every config checked against the
fp32 oracle first, CUDA-graph medians over 4 weight copies, beside the shipped heuristic.
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
S.config_is_valid = lambda cfg: True  # row_tiles 4: the probe's point


def main():
    rows = []
    for op in ("nvfp4_mm", "nvfp4_w4a16_mm"):
        for N, K in ((18432, 3072), (8192, 8192)):
            for M in (1, 4, 16):
                if op == "nvfp4_w4a16_mm" and M > 8:
                    continue  # 16-bit x at 9-32 tokens takes the TMA GEMV
                p = Problem(op, M, N, K, copies=4)
                out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                heur = S.choose_config(M, N, K, op == "nvfp4_mm")
                cfgs = {"heuristic": heur}
                for nw in (1, 2):
                    for split in (2, 3, 4, 6, 8):
                        cfgs[f"rt4 w{nw} s{split}"] = C(nw, 1, split, 0, 4)
                res = {}
                for name, cfg in cfgs.items():
                    o = torch.full((M, N), float("nan"), device="cuda")
                    run_new(p, 0, o, cfg)
                    if not close(o, p.reference(0))[0]:
                        print("WRONG", op, M, N, K, cfg, flush=True)
                        continue
                    res[name] = time_graph(
                        [lambda i=i, cfg=cfg, p=p, out=out: run_new(p, i, out, cfg)
                         for i in range(4)])[0]
                best = min((v, k) for k, v in res.items() if k.startswith("rt4"))
                print(f"{op} {N}x{K} M={M}: heuristic {res['heuristic']:6.2f} | best rt4 "
                      f"{best[0]:6.2f} ({best[1]}) | "
                      + " ".join(f"{k[4:]}:{v:.1f}" for k, v in res.items() if k.startswith("rt4")),
                      flush=True)
                rows.append(dict(op=op, M=M, N=N, K=K, heuristic_config=str(heur), **res))
    save_rows("gemv-row-tiles4", rows)


if __name__ == "__main__":
    main()
