"""Does the register-ring GEMV's split cap of 4 hold back narrow weights?

``fp4_gemv_sm90.choose_config`` splits K until about 1728-2304 warps are in flight but never
more than 4 ways. Narrow weights want more: N = K = 8192 has 256 warps of two row tiles, so the
rule asks for 7 and gets 4. Session 17's four-row-tile probe ran N = K = 8192, W4A4, M = 16 at
22.7 us with split 8 against 26.4 for the heuristic (bench/results/2026-11-27-gemv-row-tiles4-
h100.json). This times the heuristic config with its split replaced by 4, 6 and 8.

Usage (sm_90): ``python scripts/gpu_gemv_split_cap.py [--second]`` (writes $OUT or .; run 2:
W4A4 at 9 and 16 tokens, splits 3-8, two more shapes; ``--verify``: the shipped rule against
the old one at 9, 12 and 16 tokens): every config checked
against the fp32 oracle first, CUDA-graph medians over 4 weight copies.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

SHAPES = ((18432, 3072), (8192, 8192), (4096, 4096), (8192, 28672), (3072, 3072))
CASES = (("nvfp4_mm", (1, 4, 8, 16, 32)), ("nvfp4_w4a16_mm", (1, 4, 8)))
SPLITS = (4, 6, 8)


def main():
    global SHAPES, CASES, SPLITS
    if "--second" in sys.argv:  # run 2: W4A4 at 9-16 tokens, every split from 3 to 8
        SHAPES = SHAPES[:4] + ((5120, 5120), (14336, 4096))
        CASES, SPLITS = (("nvfp4_mm", (9, 16)),), (3, 4, 5, 6, 7, 8)
    if "--verify" in sys.argv:  # run 3: the shipped rule at 9-16 tokens against the old one
        return verify()
    rows = []
    for op, ms in CASES:
        for N, K in SHAPES:
            for M in ms:
                p = Problem(op, M, N, K, copies=4)
                out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                heur = S.choose_config(M, N, K, op == "nvfp4_mm")
                cfgs = {"heuristic": heur}
                for split in SPLITS:
                    if split != heur.split_k:
                        cfgs[f"split {split}"] = dataclasses.replace(heur, split_k=split)
                res = {}
                for name, cfg in cfgs.items():
                    o = torch.full((M, N), float("nan"), device="cuda")
                    run_new(p, 0, o, cfg)
                    if not close(o, p.reference(0))[0]:
                        print("WRONG", op, M, N, K, cfg, flush=True)
                        continue
                    res[name] = time_graph([lambda i=i, cfg=cfg, p=p, out=out:
                                            run_new(p, i, out, cfg) for i in range(4)])[0]
                print(f"{op} {N}x{K} M={M}: heuristic split {heur.split_k} "
                      f"rt{heur.row_tiles} w{heur.num_warps} | "
                      + " ".join(f"{k}: {v:.2f}" for k, v in res.items()), flush=True)
                rows.append(dict(op=op, M=M, N=N, K=K, heuristic_config=str(heur), **res))
    save_rows("gemv-split-cap" + ("-run2" if "--second" in sys.argv else ""), rows)


def verify():
    rows = []
    for N, K in SHAPES + ((5120, 5120), (14336, 4096)):
        for M in (9, 12, 16):
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            new = S.choose_config(M, N, K, True)
            old_split = max(1, min(4, K // S.KS, round(1728 / (N / 32))))
            old = dataclasses.replace(new, split_k=old_split)
            res = {}
            for name, cfg in (("new", new), ("old", old)):
                o = torch.full((M, N), float("nan"), device="cuda")
                run_new(p, 0, o, cfg)
                if not close(o, p.reference(0))[0]:
                    print("WRONG", M, N, K, cfg, flush=True)
                    continue
                res[name] = time_graph([lambda i=i, cfg=cfg, p=p, out=out:
                                        run_new(p, i, out, cfg) for i in range(4)])[0]
            print(f"{N}x{K} M={M}: new split {new.split_k} {res['new']:.2f} | old split "
                  f"{old.split_k} {res['old']:.2f}", flush=True)
            rows.append(dict(op="nvfp4_mm", M=M, N=N, K=K, new_split=new.split_k,
                             old_split=old.split_k, **res))
    save_rows("gemv-split-cap-verify", rows)


if __name__ == "__main__":
    main()
