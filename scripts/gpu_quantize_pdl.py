"""NVFP4Linear (W4A4) with the activation quantiser's kernels launched with and without
programmatic dependent launch (``quantize_nvfp4.pdl_launch_args``), same run, same card.

Why: at decode the layer costs 5-6 us more than its bare matmul, mostly the quantiser's own
launches (docs/nn.md). With PDL each quantiser kernel lets the next kernel launch at once, and
the decode GEMV (launched with PDL, it waits before any memory access) can be resident before
the quantiser ends. Outputs are compared bit for bit between the two.

Usage (sm_90): ``python scripts/gpu_quantize_pdl.py`` (writes ``quantize-pdl_<time>.json`` to
$OUT or .): CUDA-graph medians over 4 layer copies, bf16 x, static and dynamic activation
scales, 3072 -> 18432 and 3072 -> 3072, M = 1, 16, 64, 2048; also the bare quantiser.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import quantize_nvfp4 as Q  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402
from scripts.gpu_decode import save_rows, time_graph  # noqa: E402

COPIES = 4
PDL_ON = Q.pdl_launch_args


def _off(device):
    return {}


def main():
    rows = []
    for N, K in ((18432, 3072), (3072, 3072)):
        for scale in (2688.0 / 4.0, "dynamic"):
            torch.manual_seed(0)
            lin = nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16)
            layers = [NVFP4Linear.from_linear(lin, mode="w4a4", activation_scale=scale)
                      for _ in range(COPIES)]
            # the bare quantiser's scale as a device tensor (a float would copy in the graph)
            gs = None if scale == "dynamic" else torch.tensor(scale, device="cuda")
            for M in (1, 16, 64, 2048):
                x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
                res = {}
                outs = {}
                for name, fn in (("pdl", PDL_ON), ("no_pdl", _off), ("pdl_again", PDL_ON)):
                    Q.pdl_launch_args = fn
                    outs[name] = layers[0](x)
                    res[name] = time_graph([lambda i=i, x=x, ls=layers: ls[i](x)
                                            for i in range(COPIES)])[0]
                    res[name + "_quantiser"] = time_graph(
                        [lambda x=x, gs=gs: Q.quantize_nvfp4_triton(x, gs)
                         for _ in range(COPIES)])[0]
                Q.pdl_launch_args = PDL_ON
                same = bool(torch.equal(outs["pdl"], outs["no_pdl"]))
                print(f"{K}->{N} {'dynamic' if scale == 'dynamic' else 'static'} M={M}: "
                      f"layer PDL {res['pdl']:.2f} / {res['pdl_again']:.2f} us, without "
                      f"{res['no_pdl']:.2f}; quantiser alone {res['pdl_quantiser']:.2f} vs "
                      f"{res['no_pdl_quantiser']:.2f}; outputs identical: {same}", flush=True)
                rows.append(dict(N=N, K=K, M=M, scale=str(scale), identical=same, **res))
    save_rows("quantize-pdl", rows)


if __name__ == "__main__":
    main()
