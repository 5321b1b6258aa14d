# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe (session 31): does NVFP4Linear's W4A4 decode pay the early-PDL effect at large K?

Session 31 found that a pre-pass launched with PDL, letting the next kernel launch at its start,
made the TMA GEMV behind it 11-44 us slower at K = 8192-14336 (at K <= 4096 it helped). The
activation quantiser launches the same way (session 17, measured at K = 3072 only), and the
W4A4 decode GEMVs behind it are launched with PDL. For a static-scale W4A4 layer, 4 copies,
bf16 x, CUDA-graph medians in 3 rotating rounds: ``layer`` (its forward: quantise -> matmul),
``bare`` (the matmul alone on x quantised beforehand), ``quantise`` (the quantiser alone) and
``layer_break`` (quantise, one small non-PDL torch kernel, then the matmul: the matmul cannot
launch while the quantiser runs). If ``layer`` costs much more than ``bare + quantise`` and more
than ``layer_break``, the layer pays the effect (bench/results/2026-11-28-layer-w4a4-pdl-h100.json:
only at 14336 -> 4096, 16 tokens). A second run had the quantise kernel trigger late
(bench/results/2026-11-28-layer-w4a4-pdl-late-h100.json: that point 28.5 -> 23.3 us, 0.1-0.5 us
slower at 7 of 8 others; not made the default).

``--sweep`` (run in session 32, bench/results/2026-11-28-layer-w4a4-pdl-sweep-h100.json): the
early and the late trigger and ``layer_break`` on six layer shapes and 1-32 tokens: the late one
won 2-5 us at 8-16 tokens (the register ring) where K >= 12288 and N = 4096, so
``fp4mm.ops.dispatch.quantiser_pdl_late`` makes it the rule for the ring's tokens. Since then
``layer`` is the shipped rule, ``layer_early`` / ``layer_late`` force the trigger (through that
function), and ``--carve`` adds the early launch with the quantise kernels' preferred
shared-memory carve-out at 0% and 25% (``gpu_pdl_timeline.py``: a carve-out that matches the
next kernel's lets its early CTAs share the SMs).
Usage on an sm_90 machine: ``python -u scripts/gpu_layer_pdl.py [--sweep]`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import rounds, save_rows, seeded_linear, time_graph  # noqa: E402
from gpu_pdl_timeline import set_carveout  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.kernels import quantize_nvfp4 as Q  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402
from fp4mm.ops import dispatch  # noqa: E402

ops = torch.ops.fp4mm


def main():
    shipped = dispatch.quantiser_pdl_late
    sweep = "--sweep" in sys.argv
    shapes = ((14336, 4096), (8192, 8192), (3072, 18432))
    tokens = (1, 4, 16)
    if sweep:
        shapes = ((14336, 4096), (11008, 4096), (18944, 3584), (12288, 4096), (8192, 8192),
                  (4096, 14336))
        tokens = (1, 4, 5, 6, 8, 12, 16, 24)
    carves = (0, 25) if "--carve" in sys.argv else ()
    rows = []
    for K, N in shapes:
        layers = [NVFP4Linear.from_linear(seeded_linear(K, N, i), mode="w4a4",
                                          activation_scale=672.0) for i in range(4)]
        tick = torch.zeros(1, device="cuda")
        for M in tokens:
            x = (torch.randn(M, K, device="cuda") * 0.5).bfloat16()
            for la in layers:  # the derived scales refresh on a layer's first call
                la(x)
            qs = [ops.quantize_nvfp4(x, la.input_global_scale, "low_first") for la in layers]

            def matmul(i, q, s):
                la = layers[i]
                return fp4mm.nvfp4_mm(q, s, la.weight, la.weight_scale.view(torch.uint8),
                                      la.static_alpha, out_dtype=torch.bfloat16)

            def layer_break(i):
                q, s, _ = ops.quantize_nvfp4(x, layers[i].input_global_scale, "low_first")
                tick.add_(1)  # a plain launch between the quantiser and the matmul
                return matmul(i, q, s)

            def forced(late):
                def run(i):
                    dispatch.quantiser_pdl_late = lambda M: late
                    try:
                        return layers[i](x)
                    finally:
                        dispatch.quantiser_pdl_late = shipped
                return run

            fns = {"layer": lambda i: layers[i](x), "layer_break": layer_break}
            if sweep:
                fns["layer_early"] = forced(False)
                fns["layer_late"] = forced(True)
            else:
                fns["bare"] = lambda i: matmul(i, qs[i][0], qs[i][1])
                fns["quantise"] = lambda i: ops.quantize_nvfp4(x, layers[i].input_global_scale,
                                                               "low_first")
            ref = layers[0](x).float()
            diff = {n: float((fns[n](0).float() - ref).abs().max())
                    for n in fns if n not in ("layer", "quantise")}
            got = rounds({n: (lambda f=f: time_graph([lambda i=i: f(i) for i in range(4)])[0])
                          for n, f in fns.items()}, 3)
            for pct in carves:  # the early launch, the quantiser's carve-out at pct percent
                for fn in (Q._quantize_kernel, Q._quantize16_kernel):
                    set_carveout(fn, pct)
                got[f"early_carve{pct}"] = [
                    time_graph([lambda i=i: fns["layer_early"](i) for i in range(4)])[0]
                    for _ in range(3)]
                for fn in (Q._quantize_kernel, Q._quantize16_kernel):
                    set_carveout(fn, -1)
            med = {n: st.median(v) for n, v in got.items()}
            print(f"{K}->{N} M={M:2d} " + "  ".join(f"{n} {v:6.2f}" for n, v in med.items())
                  + f"  (max |diff| vs layer {diff})", flush=True)
            rows.append(dict(K=K, N=N, M=M, rounds=got, medians=med, max_abs_diff=diff))
    save_rows("layer-w4a4-pdl" + ("-sweep" if sweep else ""), rows)


if __name__ == "__main__":
    main()
