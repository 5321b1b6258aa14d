# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: the dynamic-scale quantiser with per-program amax partials (no zeroed buffer, so no
fill kernel) against the same module before that change (its source given as a file), and
the W4A4 chain quantise -> matmul with each. bf16 x, CUDA-graph medians, A and B alternating
twice (one layer, so small weights may stay in L2 on both sides); outputs compared bit for
bit first.
Usage on an sm_90 machine: ``git show 285f0e5~1:fp4mm/kernels/quantize_nvfp4.py > old.py``, then
``python scripts/gpu_quantize_amax_partials.py old.py``
(JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, time_graph  # noqa: E402

import fp4mm.library  # noqa: E402,F401  (registers the fp4mm:: ops)
from fp4mm.kernels import quantize_nvfp4 as new  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402


def main():
    with open(sys.argv[1]) as f:
        old = patched_module("quantize_nvfp4_before", f.read())
    rows = []
    for K, N in ((3072, 18432), (3072, 3072), (8192, 8192)):
        lin = torch.nn.Linear(K, N, bias=False, dtype=torch.bfloat16, device="cuda")
        la = NVFP4Linear.from_linear(lin, mode="w4a4")
        for M in (1, 16, 2048):
            x = (torch.randn(M, K, device="cuda") * 0.5).to(torch.bfloat16)
            outs = {}

            def quant(mod):
                a = torch.empty((), dtype=torch.float32, device="cuda")
                q = mod.quantize_nvfp4_triton(x, None, alpha_numerator=la.weight_scale_2,
                                              alpha_out=a)
                return q, a

            def chain(mod):
                q, a = quant(mod)
                return torch.ops.fp4mm.nvfp4_mm(q.data, q.scales, la.weight, la.weight_scale,
                                                None, a, x.dtype, "low_first")

            for name, mod in (("before", old), ("now", new)):
                q, a = quant(mod)
                outs[name] = (q.data, q.scales, q.global_scale, a, chain(mod))
            torch.cuda.synchronize()
            same = all(torch.equal(u, v) for u, v in zip(outs["before"], outs["now"]))
            res = {}
            for run in range(2):
                for name, mod in (("before", old), ("now", new)):
                    for what, fn in (("quantise", quant), ("quantise_mm", chain)):
                        t = time_graph([lambda mod=mod, fn=fn: fn(mod)])
                        key = f"{what}_{name}"
                        res.setdefault(key, []).append(t[0])
                        rows.append(dict(K=K, N=N, M=M, variant=key, run=run, median_us=t[0],
                                         min_us=t[1], max_us=t[2], bit_identical=same))
            print(f"{K}->{N} M={M} same={same}: " + "  ".join(
                f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    save_rows("quantize-amax-partials", rows)


if __name__ == "__main__":
    main()
