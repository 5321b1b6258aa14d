"""W4A4 at 33-64 tokens: the register-ring GEMV with x held one step ahead (``x_ahead``, two row
tiles, no spill) against what serves this range now (the plain-Triton GEMV) and the ring's
spill-free one-row-tile heuristic, to set its split rule and ``GEMV_SM90_MAX_M["nvfp4_mm"]``.

The first probe (``gpu_gemv_x_one_ahead.py``, bench/results/2026-11-27-gemv-x-one-ahead-h100.json)
only timed splits 1, 2, 4 at two shapes; the x-ahead kernel got faster with every split there
(N = K = 8192, M = 64: 115 / 74 / 44 us), so this one goes to 8, and adds a small-N shape.

Usage (sm_90): ``python scripts/gpu_gemv_x_ahead_tune.py [--verify [--narrow]]`` (writes $OUT
or .; ``--verify``: the shipped rule against the Triton GEMV on five more shapes, ``--narrow``
five with 4096 <= N < 8192). Every config is checked against the fp32 oracle first;
CUDA-graph medians over 4 weight copies.
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
SHAPES = ((18432, 3072), (8192, 8192), (3072, 3072), (3072, 12288))


VERIFY = ((14336, 4096), (8192, 28672), (10240, 8192), (28672, 8192), (8192, 3072))
NARROW = ((4096, 4096), (5120, 5120), (6144, 4096), (4096, 14336), (7168, 2048))


def verify():
    """Run 2 (``--verify``): the shipped heuristic against the Triton GEMV on shapes the tuning
    run did not see, N >= 8192 (where the ops dispatch 33-64 W4A4 tokens to it); run 3
    (``--verify --narrow``): 4096 <= N < 8192, where the ops keep the Triton GEMV."""
    rows = []
    for N, K in NARROW if "--narrow" in sys.argv else VERIFY:
        for M in (33, 48, 64):
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            heur = S.choose_config(M, N, K, True)
            o = torch.full((M, N), float("nan"), device="cuda")
            run_new(p, 0, o, heur)
            assert close(o, p.reference(0))[0], (M, N, K, heur)
            triton = time_graph([lambda i=i, p=p, out=out: p.gemv(i, out, None)
                                 for i in range(4)])[0]
            ring = time_graph([lambda i=i, p=p, out=out, c=heur: run_new(p, i, out, c)
                               for i in range(4)])[0]
            print(f"{N}x{K} M={M}: triton {triton:6.2f} | x-ahead ring {ring:6.2f} "
                  f"(split {heur.split_k})", flush=True)
            rows.append(dict(M=M, N=N, K=K, heuristic_config=str(heur), triton=triton,
                             heuristic=ring))
    save_rows("gemv-x-ahead-verify" + ("-narrow" if "--narrow" in sys.argv else ""), rows)


def main():
    if "--verify" in sys.argv:
        return verify()
    rows = []
    for N, K in SHAPES:
        for M in (33, 40, 48, 64):
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            res = {"triton": time_graph([lambda i=i, p=p, out=out: p.gemv(i, out, None)
                                         for i in range(4)])[0]}
            heur = S.choose_config(M, N, K, True)
            cfgs = {"heuristic": heur}
            for nw in (1, 2):
                for split in (2, 3, 4, 6, 8):
                    cfgs[f"ahead w{nw} s{split}"] = C(nw, 1, split, 0, 2, x_ahead=True)
            for name, cfg in cfgs.items():
                o = torch.full((M, N), float("nan"), device="cuda")
                run_new(p, 0, o, cfg)
                if not close(o, p.reference(0))[0]:
                    print("WRONG", M, N, K, cfg, flush=True)
                    continue
                res[name] = time_graph(
                    [lambda i=i, cfg=cfg, p=p, out=out: run_new(p, i, out, cfg)
                     for i in range(4)])[0]
            best = min((v, k) for k, v in res.items() if k.startswith("ahead"))
            print(f"{N}x{K} M={M}: triton {res['triton']:6.2f} | heuristic {res['heuristic']:6.2f}"
                  f" ({heur}) | best ahead {best[0]:6.2f} ({best[1]}) | "
                  + " ".join(f"{k[6:]}:{v:.1f}" for k, v in res.items() if k.startswith("ahead")),
                  flush=True)
            rows.append(dict(M=M, N=N, K=K, heuristic_config=str(heur), **res))
    save_rows("gemv-x-ahead-tune", rows)


if __name__ == "__main__":
    main()
