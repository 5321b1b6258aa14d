# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""A prepacked W4A4 ``NVFP4Linear`` at 17-32 tokens with session 39's dispatch (the GEMVs up to 32
tokens, ``dispatch.PREPACKED_SM90_GEMV_MAX_M["nvfp4_mm"]``) against the one before it (the GEMM
from 17), in the same run: the layer's forward (quantiser, then the matmul) with a static and a
dynamic activation scale, bf16 x, 4 layer copies, CUDA-graph medians in 3 rotating rounds. The
two forwards' outputs are compared (same values: both kernels are exact). Usage on an sm_90
machine: ``python scripts/gpu_layer_prepacked_w4a4.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.nn import NVFP4Linear  # noqa: E402
from fp4mm.ops import dispatch  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import seeded_linear, time_graph  # noqa: E402

SHAPES = [(3072, 18432), (8192, 8192), (4096, 4096), (4096, 14336), (14336, 4096)]  # (K, N)
TOKENS = [17, 20, 24, 32]
OLD_MAX_M = 16


def main():
    path = gpu_decode.result_path("layer-prepacked-w4a4")
    new_max = dispatch.PREPACKED_SM90_GEMV_MAX_M["nvfp4_mm"]
    rows = []
    for K, N in SHAPES:
        for scale in ("static", "dynamic"):
            kw = dict(activation_scale=672.0) if scale == "static" else {}
            layers = [NVFP4Linear.from_linear(seeded_linear(K, N, i), mode="w4a4", **kw).prepack()
                      for i in range(4)]
            for M in TOKENS:
                x = (torch.randn(M, K, device="cuda") * 0.5).bfloat16()

                def rule(top):
                    def run(i):
                        dispatch.PREPACKED_SM90_GEMV_MAX_M["nvfp4_mm"] = top
                        try:
                            return layers[i](x)
                        finally:
                            dispatch.PREPACKED_SM90_GEMV_MAX_M["nvfp4_mm"] = new_max
                    return run
                fns = {"old": rule(OLD_MAX_M), "new": rule(new_max)}
                diff = float((fns["old"](0).float() - fns["new"](0).float()).abs().max())
                times = gpu_decode.rounds({k: (lambda f=f: time_graph([lambda i=i: f(i)
                                                                       for i in range(4)])[0])
                                           for k, f in fns.items()})
                med = {k: sorted(v)[1] for k, v in times.items()}
                rows.append(dict(K=K, N=N, M=M, scale=scale, rounds_us=times, median_us=med,
                                 speedup=med["old"] / med["new"], max_abs_diff=diff))
                print(f"{K:5d}->{N:5d} {scale:7s} M={M}: old (GEMM) {med['old']:6.2f} new (GEMV) "
                      f"{med['new']:6.2f} us (x{med['old'] / med['new']:.3f}, |diff| {diff:.2g})",
                      flush=True)
                gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
