# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe (session 20): a static-scale W4A4 layer at decode sizes through the fp16-x GEMV.

``e2m1 * e4m3`` of the quantised activations is exact in fp16 (6 significant bits, 2^-10 to
2688), so ``NVFP4Linear``'s W4A4 product can run on the 16-bit-x GEMV: quantise, dequantise to
fp16 (here the separate ``dequant_nvfp4`` kernel, with PDL; a fused quantise-dequantise kernel
would not need it), then ``nvfp4_w4a16_mm_alpha`` with the same alpha. Chain A is the layer's
own forward (quantise -> W4A4 GEMV); chain B is that. fp16 activations and output, 4 layer
copies, CUDA-graph medians, A and B alternating twice; B checked against A (same products, fp32
sums in another order). Also the dequantise kernel alone, to read off what a fused kernel saves.
Usage on an sm_90 machine: ``python scripts/gpu_w4a4_via_fp16_x.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, seeded_linear, time_graph  # noqa: E402

from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402

ops = torch.ops.fp4mm


def main():
    rows = []
    for K, N in ((3072, 18432), (3072, 3072), (8192, 8192)):
        layers = []
        for i in range(4):
            lin = seeded_linear(K, N, i, torch.float16)
            layers.append(NVFP4Linear.from_linear(lin, mode="w4a4", activation_scale=672.0))
        for M in (1, 4, 8):
            x = (torch.randn(M, K, device="cuda") * 0.5).half()

            def layer(i):
                return layers[i](x)

            def via_fp16(i):
                la = layers[i]
                q, s, _ = ops.quantize_nvfp4(x, la.input_global_scale, "low_first")
                x16 = dequant_nvfp4(q, s, dtype=torch.float16, pdl=True)
                return ops.nvfp4_w4a16_mm_alpha(x16, la.weight, la.weight_scale, None,
                                                la.static_alpha, "low_first", None, None)

            q0, s0, _ = ops.quantize_nvfp4(x, layers[0].input_global_scale, "low_first")

            def dequant_only(i):
                return dequant_nvfp4(q0, s0, dtype=torch.float16, pdl=True)

            a, b = layer(0).float(), via_fp16(0).float()
            torch.cuda.synchronize()
            err = float((a - b).abs().max() / a.abs().max())
            res = {}
            for run in range(2):
                for name, fn in (("layer_w4a4", layer), ("quantise_dequant_w4a16", via_fp16),
                                 ("dequant_alone", dequant_only)):
                    t = time_graph([lambda i=i: fn(i) for i in range(4)])
                    res.setdefault(name, []).append(t[0])
                    rows.append(dict(K=K, N=N, M=M, variant=name, run=run, median_us=t[0],
                                     min_us=t[1], max_us=t[2], rel_err_vs_layer=err))
            print(f"{K}->{N} M={M} rel_err={err:.1e}: " + "  ".join(
                f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    save_rows("w4a4-via-fp16-x", rows)


if __name__ == "__main__":
    main()
