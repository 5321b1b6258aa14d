"""W4A4 decode at 33-64 tokens: the register-ring Gluon GEMV (fp4_gemv_sm90) with one or two
16-row tiles per warp at its 64-token tile, against the plain-Triton GEMV that serves this range
(``GEMV_SM90_MAX_M["nvfp4_mm"]`` = 32). Session 15's W4A4 decode change made the ring (two row
tiles, 112-128 B of spill) beat it at M = 64 (48.46 vs 51.49 us); one row tile compiles without
spill and is untimed. This script decides whether the ring's range can grow to 64.

Usage (sm_90): ``python scripts/gpu_gemv_w4a4_wide.py`` (writes $OUT or .). N = 18432 and
8192, K = 3072 and 8192; every config checked against the fp32 oracle first; CUDA-graph medians
over 4 weight copies.
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
    for N, K in ((18432, 3072), (8192, 8192)):
        for M in (33, 40, 48, 56, 64):
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            res = {}
            t = time_graph([lambda i=i: p.gemv(i, out, None) for i in range(4)])[0]
            res["triton"] = t
            for nw in (1, 2, 4):
                for rt in (1, 2):
                    for split in (1, 2, 4):
                        cfg = C(nw, 1, split, 0, rt)
                        o = torch.full((M, N), float("nan"), device="cuda")
                        run_new(p, 0, o, cfg)
                        if not close(o, p.reference(0))[0]:
                            print("WRONG", M, N, K, cfg, flush=True)
                            continue
                        res[f"ring w{nw} rt{rt} s{split}"] = time_graph(
                            [lambda i=i, cfg=cfg: run_new(p, i, out, cfg) for i in range(4)])[0]
            best = min((v, k) for k, v in res.items() if k != "triton")
            print(f"{N}x{K} M={M}: triton {res['triton']:6.2f} | best ring {best[0]:6.2f} "
                  f"({best[1]}) | heuristic-like w2 rt1 s1 {res.get('ring w2 rt1 s1', 0):6.2f}",
                  flush=True)
            rows.append(dict(M=M, N=N, K=K, **res))
    save_rows("gemv-w4a4-wide", rows)


if __name__ == "__main__":
    main()
