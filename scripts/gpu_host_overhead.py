"""Where the host time of one eager fp4mm call goes (GPU): wall time per call for small shapes,
with the GPU work negligible, and a cProfile of the hottest functions.

    python scripts/gpu_host_overhead.py [--out DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.challenge import NVFP4MatmulChallenge  # noqa: E402


def per_call_us(fn, reps=200):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    c = NVFP4MatmulChallenge("cuda")
    for M, N, K in [(1, 3072, 3072), (128, 3072, 3072), (2048, 3072, 3072)]:
        case = c._case(M, N, K, 1.0)
        xq, xs, wq, ws = case["x_q"], case["x_scales"], case["w_q"], case["w_scales"]
        pk = fp4mm.prepack_nvfp4_weight(wq, ws)
        out = torch.empty(M, N, dtype=torch.float16, device="cuda")
        empty = torch.empty(1, device="cuda")
        rows.append({
            "M": M, "N": N, "K": K,
            "empty_torch_op_us": per_call_us(lambda: empty.add_(1)),
            "nvfp4_mm_raw_us": per_call_us(lambda: fp4mm.nvfp4_mm(xq, xs, wq, ws, 1.0, out=out)),
            "nvfp4_mm_prepacked_us": per_call_us(
                lambda: fp4mm.nvfp4_mm(xq, xs, pk, None, 1.0, out=out)),
            "solve_us": per_call_us(lambda: fp4mm.solve(**{**case, "y": out})),
        })
        print(rows[-1], flush=True)
    from fp4mm.kernels import fp4_gemm_sm90 as g
    from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4
    from fp4mm.kernels.prepack_sm90 import prepack_sm90_triton

    M, N, K = 128, 3072, 3072
    case = c._case(M, N, K, 1.0)
    xq, xs, wq, ws = case["x_q"], case["x_scales"], case["w_q"], case["w_scales"]
    pk = fp4mm.prepack_nvfp4_weight(wq, ws)
    out = torch.empty(M, N, dtype=torch.float16, device="cuda")
    x16 = dequant_nvfp4(xq, xs)
    parts = {
        "prepack_sm90_triton": lambda: prepack_sm90_triton(wq, ws),
        "prepack_weight_sm90": lambda: g.prepack_weight_sm90(wq, ws),
        "prepack_nvfp4_weight": lambda: fp4mm.prepack_nvfp4_weight(wq, ws),
        "dequant_nvfp4": lambda: dequant_nvfp4(xq, xs),
        "gemm_dense": lambda: g._gemm_dense(x16, pk.sm90, 1.0, out, None),
        "fp4_gemm_sm90_prepacked": lambda: g.fp4_gemm_sm90(xq, xs, wq, ws, 1.0, "low_first", out,
                                                           prepacked=pk.sm90),
        "fp4_gemm_sm90_raw": lambda: g.fp4_gemm_sm90(xq, xs, wq, ws, 1.0, "low_first", out),
    }
    part_us = {name: per_call_us(fn) for name, fn in parts.items()}
    print(json.dumps(part_us, indent=1), flush=True)
    s = io.StringIO()
    for label, fn in (("prepacked", lambda: fp4mm.nvfp4_mm(xq, xs, pk, None, 1.0, out=out)),
                      ("raw", lambda: fp4mm.nvfp4_mm(xq, xs, wq, ws, 1.0, out=out))):
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            fn()
        torch.cuda.synchronize()
        prof.disable()
        s.write(f"==== {label}\n")
        pstats.Stats(prof, stream=s).sort_stats("cumtime").print_stats(25)
    print(s.getvalue())
    with open(os.path.join(args.out, "host_overhead.json"), "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "rows": rows, "parts_us": part_us},
                  f, indent=1)
    with open(os.path.join(args.out, "host_overhead_profile.txt"), "w") as f:
        f.write(s.getvalue())


if __name__ == "__main__":
    main()
