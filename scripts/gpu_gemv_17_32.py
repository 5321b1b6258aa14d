# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Which decode kernel should serve M = 17-32 with raw NVFP4 weights on Hopper
(``dispatch.GEMV_SM90_MAX_M``): the Gluon GEMV (32-token tile), the plain-Triton GEMV, or the
GEMM (re-lays the weight out per call), through the public ops with the choice forced; each
output checked against the oracle, then CUDA-graph medians over rotating weight copies.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_17_32.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.ops import dispatch  # noqa: E402


def main():
    rows = []
    default = dict(dispatch.GEMV_SM90_MAX_M)
    for op, dt in (("nvfp4_w4a16_mm", torch.bfloat16), ("nvfp4_w4a16_mm", torch.float16),
                   ("nvfp4_mm", None)):
        for N, K in ((18432, 3072), (8192, 8192)):
            for M in (16, 17, 24, 32):
                p = Problem(op, M, N, K, dtype=dt or torch.float16, copies=4)
                ref = p.reference(0)

                def call(i):
                    wq, ws = p.w[i]
                    if op == "nvfp4_mm":
                        return fp4mm.nvfp4_mm(*p.x, wq, ws, p.alpha)
                    return fp4mm.nvfp4_w4a16_mm(p.x[0], wq, ws, 1.0 / p.alpha)

                line = []
                for name, kernel, sm90_max in (("gluon", "gemv", default[op]),
                                               ("triton", "gemv", 16), ("gemm", "gemm", 0)):
                    os.environ["FP4MM_KERNEL"] = kernel
                    dispatch.GEMV_SM90_MAX_M[op] = sm90_max
                    try:
                        if not close(call(0), ref)[0]:
                            print(f"FAIL (not timed) {op} {dt} {M}x{N}x{K} {name}", flush=True)
                            continue
                        t = time_graph([lambda i=i: call(i) for i in range(4)])
                    finally:
                        dispatch.GEMV_SM90_MAX_M[op] = default[op]
                        os.environ.pop("FP4MM_KERNEL", None)
                    rows.append(dict(op=op, x=str(dt), M=M, N=N, K=K, kernel=name,
                                     median_us=t[0], min_us=t[1], max_us=t[2]))
                    line.append(f"{name} {t[0]:6.1f}")
                print(f"{op:15s} {str(dt):14s} {M:3d}x{N}x{K}: " + "  ".join(line), flush=True)
    save_rows("gemv_17_32", rows)


if __name__ == "__main__":
    main()
