# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: the W4A16 decode op given its output factor (``nvfp4_w4a16_mm_alpha``, alpha =
1 / gs_w as a device tensor: what ``NVFP4Linear`` passes now) against the encode-scale op with
a device gs_w (one reciprocal launched per call: what the layer passed before), and the layer's
forward beside them. bf16 activations, CUDA-graph medians over 4 weight copies, A and B
alternating twice; outputs compared bit for bit first (the layer's with the alpha op's; the
encode-scale op's factor 1 / (1 / weight_scale_2) may differ from it by an ulp).
Usage on an sm_90 machine: ``python scripts/gpu_w4a16_alpha.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, seeded_linear, time_graph  # noqa: E402

from fp4mm.nn import NVFP4Linear  # noqa: E402
from fp4mm.ops import nvfp4_w4a16_mm, nvfp4_w4a16_mm_alpha  # noqa: E402


def main():
    rows = []
    for K, N in ((3072, 18432), (3072, 3072)):
        layers = []
        for i in range(4):
            lin = seeded_linear(K, N, i)
            layers.append(NVFP4Linear.from_linear(lin, mode="w4a16"))
        gss = [torch.reciprocal(la.weight_scale_2.reshape(1).float()) for la in layers]
        for M in (1, 16, 64):
            x = (torch.randn(M, K, device="cuda") * 0.5).to(torch.bfloat16)

            def encode(i):
                la = layers[i]
                return nvfp4_w4a16_mm(x, la.weight, la.weight_scale, gss[i])

            def alpha(i):
                la = layers[i]
                return nvfp4_w4a16_mm_alpha(x, la.weight, la.weight_scale,
                                            la.weight_scale_2.reshape(1))

            def layer(i):
                return layers[i](x)

            a, b, c = encode(0), alpha(0), layer(0)
            torch.cuda.synchronize()
            # the encode path's factor is 1 / (1 / weight_scale_2): it may differ by an ulp
            same = (torch.equal(a, b), torch.equal(b, c))
            res = {}
            for run in range(2):
                for name, fn in (("encode_scale_op", encode), ("alpha_op", alpha),
                                 ("layer", layer)):
                    t = time_graph([lambda i=i: fn(i) for i in range(4)])
                    res.setdefault(name, []).append(t[0])
                    rows.append(dict(K=K, N=N, M=M, variant=name, run=run, median_us=t[0],
                                     min_us=t[1], max_us=t[2], bit_identical=same))
            print(f"{K}->{N} M={M} same={same}: " + "  ".join(
                f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    save_rows("w4a16-alpha", rows)


if __name__ == "__main__":
    main()
