# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe (session 19): what the static-scale quantiser's per-call threshold-table kernel costs.

With a static activation scale (``NVFP4Linear`` with ``input_scale``) the 16-bit quantiser
launches ``_threshold_table_kernel`` (one program: gs and the per-scale compare table) and then
``_quantize16_kernel``. The table depends only on gs, x's dtype and the nibble order, so a layer
could keep it. This times the shipped call against the second kernel alone, launched with a
table made once (same PDL arguments), alone and in the layer's chain quantise -> ``nvfp4_mm``,
bf16 x, CUDA-graph medians, A and B alternating twice; outputs compared bit for bit first.
Usage on an sm_90 machine: ``python scripts/gpu_quantize_table_cache.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402

import fp4mm.library  # noqa: E402,F401  (registers the fp4mm:: ops)
from fp4mm.kernels import quantize_nvfp4 as q  # noqa: E402
from fp4mm.kernels.pdl import pdl_launch_args  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402


def table_once(x, gs_src):
    """The compare table and gs the shipped call's first kernel writes (run once)."""
    table = torch.empty((128, 8), dtype=torch.int32, device=x.device)
    gs = torch.empty((), dtype=torch.float32, device=x.device)
    q._threshold_table_kernel[(1,)](gs_src, gs, table, gs, gs, 0, FROM_AMAX=False,
                                    IS_BF16=x.dtype == torch.bfloat16, HIGH_FIRST=False,
                                    ALPHA=False, num_warps=4)
    return table, gs


def quantize_cached(x, table, gs):
    """``_quantize16_kernel`` alone, as the shipped call launches it (ptx path)."""
    M, K = x.shape
    cfg = q.pick_config(M, K, "ptx")
    data = torch.empty((M, K // 2), dtype=torch.uint8, device=x.device)
    scales = torch.empty((M, K // 16), dtype=torch.uint8, device=x.device)
    w = q._as_words(x)
    q._quantize16_kernel[cfg.grid(M, K)](
        w, gs, table, data, scales, M, K, w.stride(0), HIGH_FIRST=False,
        IS_BF16=x.dtype == torch.bfloat16, USE_PTX=True, E4M3_VIA_CAST=True,
        BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, NUM_STAGES=cfg.num_stages,
        num_warps=cfg.num_warps, **pdl_launch_args(x.device))
    return data, scales


def main():
    rows = []
    for K, N in ((3072, 18432), (3072, 3072)):
        lin = torch.nn.Linear(K, N, bias=False, dtype=torch.bfloat16, device="cuda")
        la = NVFP4Linear.from_linear(lin, mode="w4a4")
        gs_src = torch.tensor([2688.0 / 4.0], device="cuda")  # a static encode scale
        alpha = la.weight_scale_2 / gs_src
        for M in (1, 16, 2048):
            x = (torch.randn(M, K, device="cuda") * 0.5).to(torch.bfloat16)
            table, gs = table_once(x, gs_src)

            def shipped():
                r = q.quantize_nvfp4_triton(x, gs_src)
                return r.data, r.scales

            def cached():
                return quantize_cached(x, table, gs)

            def chain(fn):
                d, s = fn()
                return torch.ops.fp4mm.nvfp4_mm(d, s, la.weight, la.weight_scale, None, alpha,
                                                x.dtype, "low_first")

            a, b = shipped(), cached()
            same = torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(
                chain(shipped), chain(cached))
            res = {}
            for run in range(2):
                for name, fn in (("shipped", shipped), ("table_cached", cached)):
                    for what, f in (("quantise", fn), ("quantise_mm", lambda fn=fn: chain(fn))):
                        t = time_graph([f])
                        key = f"{what}_{name}"
                        res.setdefault(key, []).append(t[0])
                        rows.append(dict(K=K, N=N, M=M, variant=key, run=run, median_us=t[0],
                                         min_us=t[1], max_us=t[2], bit_identical=same))
            print(f"{K}->{N} M={M} same={same}: " + "  ".join(
                f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    save_rows("quantize-table-cache", rows)


if __name__ == "__main__":
    main()
