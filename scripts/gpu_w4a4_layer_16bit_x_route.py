# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe (session 40): ``NVFP4Linear`` w4a4 at 1-32 tokens through the 16-bit-x decode kernels.

Session 20 (H100, M = 1-8, before the TMA GEMV served 16-bit x at 4-32 tokens) found the chain
quantise -> dequantise to 16 bits -> ``nvfp4_w4a16_mm_alpha`` tied the layer at one token and lost
from four. Since then the 16-bit-x TMA GEMV takes 4-32 tokens and, at 16 tokens on 18432 x 3072,
runs 17.4 us with bf16 x against the W4A4 ring's 19.4. ``e2m1 * e4m3`` is exact in fp16 and in
bf16, so the chain gives the layer's products; only the fp32 summation order differs.

Per layer shape, model dtype (fp16, bf16), activation scale (static, dynamic) and M: the layer's
own forward; the chain with the dequantise kernel's PDL trigger early and late (the late one is
what ``nvfp4_mm``'s 17-32-token route uses); and the dequantise kernel alone (what a fused
quantise-dequantise kernel would save at most). Every output is checked against the fp32 oracle
first; 4 layer copies, CUDA-graph medians, 3 rotating rounds.
Usage on an sm_90 machine: ``python scripts/gpu_w4a4_layer_16bit_x_route.py [--part i/n]``
(JSON to $OUT or .)."""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import rounds, save_rows, seeded_linear, time_graph  # noqa: E402

from fp4mm import reference  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402

ops = torch.ops.fp4mm
SHAPES = ((3072, 18432), (4096, 4096), (8192, 8192), (4096, 14336))  # (K, N)
TOKENS = (1, 2, 4, 8, 12, 16, 24, 32)
COPIES = 4


def chain(la, x, late, static):
    """quantise -> dequantise to x.dtype -> 16-bit-x op, with the layer's alpha."""
    if static:
        q, s, _ = ops.quantize_nvfp4(x, la.input_global_scale, "low_first")
        alpha = la.static_alpha
    else:
        q, s, alpha = ops.quantize_nvfp4_alpha(x, None, la.weight_scale_2, "low_first")
    x16 = dequant_nvfp4(q, s, dtype=x.dtype, pdl=True, pdl_late=late)
    return ops.nvfp4_w4a16_mm_alpha(x16, la.weight, la.weight_scale, None, alpha, "low_first",
                                    None, None)


def oracle(la, x, static):
    if static:
        q, s, _ = ops.quantize_nvfp4(x, la.input_global_scale, "low_first")
        alpha = la.static_alpha
    else:
        q, s, alpha = ops.quantize_nvfp4_alpha(x, None, la.weight_scale_2, "low_first")
    return reference.nvfp4_mm(q, s, la.weight, la.weight_scale, alpha)  # float32


def check(name, y, ref):
    """The output against the oracle at 16-bit rounding; SystemExit on a mismatch or NaN."""
    tol = 2 ** -7 if y.dtype == torch.bfloat16 else 2 ** -9
    y = y.float()
    err = float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    if not torch.isfinite(y).all() or err > tol:
        raise SystemExit(f"FAIL {name}: rel err {err:.2e} (tol {tol:.1e})")
    return err


def layer_cases(shapes, tokens, part="0/1", prepacked=False):
    """The layer probes' cases of slice ``part`` (``"i/n"``: every n-th shape from the i-th):
    ``(K, N, dtype, static, layers, M, x)`` for fp16 and bf16 models, a static (672) and a
    dynamic activation scale and each token count; ``layers`` are COPIES w4a4 copies, each run
    once on ``x`` (a first forward derives the static scalars), ``prepack()``-ed if
    ``prepacked``."""
    i, n = (int(v) for v in part.split("/"))
    for K, N in shapes[i::n]:
        for dtype in (torch.float16, torch.bfloat16):
            for static in (True, False):
                scale = dict(activation_scale=672.0) if static else {}  # else dynamic
                layers = [NVFP4Linear.from_linear(seeded_linear(K, N, c, dtype), mode="w4a4",
                                                  **scale) for c in range(COPIES)]
                if prepacked:
                    layers = [la.prepack() for la in layers]
                for M in tokens:
                    x = (torch.randn(M, K) * 0.5).to(dtype).to(layers[0].weight.device)
                    for la in layers:
                        la(x)
                    yield K, N, dtype, static, layers, M, x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="0/1", help="i/n: the i-th of n slices of the shapes")
    args = ap.parse_args()
    part = int(args.part.split("/")[0])
    rows = []
    for K, N, dtype, static, layers, M, x in layer_cases(SHAPES, TOKENS, args.part):
        fns = {
            "layer": lambda i: layers[i](x),
            "chain_early": lambda i: chain(layers[i], x, False, static),
            "chain_late": lambda i: chain(layers[i], x, True, static),
        }
        ref = oracle(layers[0], x, static)
        errs = {k: check(f"{K}->{N} {dtype} M={M} {k}", f(0), ref)
                for k, f in fns.items()}
        q0, s0, _ = ops.quantize_nvfp4(x, None, "low_first")
        fns["dequant_alone"] = lambda i: dequant_nvfp4(q0, s0, dtype=dtype,
                                                       pdl=True)
        times = rounds({k: lambda f=f: time_graph(
            [lambda i=i: f(i) for i in range(COPIES)])[0] for k, f in fns.items()})
        med = {k: sorted(v)[1] for k, v in times.items()}
        rows.append(dict(K=K, N=N, M=M, dtype=str(dtype), static=static,
                         rounds_us=times, median_us=med, rel_err=errs))
        best = min(("chain_early", "chain_late"), key=med.get)
        print(f"{K}->{N} {str(dtype)[6:]} {'static ' if static else 'dynamic'} "
              f"M={M:2d}: layer {med['layer']:6.2f}  early {med['chain_early']:6.2f}"
              f"  late {med['chain_late']:6.2f}  dequant {med['dequant_alone']:5.2f}"
              f"  layer/best {med['layer'] / med[best]:.3f}", flush=True)
    save_rows(f"w4a4-layer-16bit-x-route-part{part}", rows)


if __name__ == "__main__":
    main()
