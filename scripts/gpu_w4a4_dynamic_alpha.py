# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: NVFP4Linear's W4A4 decode with a dynamic activation scale. Before: the quantiser op,
then ``weight_scale_2 / gs_x`` as a torch division kernel, then the matmul op. Now:
``fp4mm::quantize_nvfp4_alpha`` writes alpha from the quantiser's own kernel, then the
matmul. Both chains and the layer's forward, bf16 activations, CUDA-graph medians over 4 layer
copies, A and B alternating twice; outputs compared bit for bit first.
Usage on an sm_90 machine: ``python scripts/gpu_w4a4_dynamic_alpha.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, seeded_linear, time_graph  # noqa: E402

import fp4mm.library  # noqa: E402,F401  (registers the fp4mm:: ops)
from fp4mm.nn import NVFP4Linear  # noqa: E402

ops = torch.ops.fp4mm


def main():
    rows = []
    for K, N in ((3072, 18432), (3072, 3072)):
        layers = []
        for i in range(4):
            lin = seeded_linear(K, N, i)
            layers.append(NVFP4Linear.from_linear(lin, mode="w4a4"))
        for M in (1, 16, 64):
            x = (torch.randn(M, K, device="cuda") * 0.5).to(torch.bfloat16)

            def before(i):
                la = layers[i]
                q, s, gs = ops.quantize_nvfp4(x, None, "low_first")
                alpha = la.weight_scale_2 / gs
                return ops.nvfp4_mm(q, s, la.weight, la.weight_scale, None, alpha, x.dtype,
                                    "low_first")

            def now(i):
                la = layers[i]
                q, s, alpha = ops.quantize_nvfp4_alpha(x, None, la.weight_scale_2, "low_first")
                return ops.nvfp4_mm(q, s, la.weight, la.weight_scale, None, alpha, x.dtype,
                                    "low_first")

            def layer(i):
                return layers[i](x)

            a, b, c = before(0), now(0), layer(0)
            torch.cuda.synchronize()
            same = (torch.equal(a, b), torch.equal(b, c))
            res = {}
            for run in range(2):
                for name, fn in (("quantize_divide_mm", before), ("quantize_alpha_mm", now),
                                 ("layer", layer)):
                    t = time_graph([lambda i=i: fn(i) for i in range(4)])
                    res.setdefault(name, []).append(t[0])
                    rows.append(dict(K=K, N=N, M=M, variant=name, run=run, median_us=t[0],
                                     min_us=t[1], max_us=t[2], bit_identical=same))
            print(f"{K}->{N} M={M} same={same}: " + "  ".join(
                f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    save_rows("w4a4-dynamic-alpha", rows)


if __name__ == "__main__":
    main()
