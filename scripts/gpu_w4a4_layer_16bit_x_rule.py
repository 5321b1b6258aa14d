# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe (session 40): ``NVFP4Linear`` w4a4 through ``fp4mm::nvfp4_linear_w4a4`` (x quantised
and written as fp16 values in one pass, then the 16-bit-x TMA GEMV) against the layer's other
route (quantise -> W4A4 kernel), per token count, to place ``W4A4_16BIT_X_MIN_M`` / ``_MAX_M`` and
the quantiser's PDL trigger / the GEMV's fair-share pad (``fp4mm.ops.dispatch``).

Per layer shape, model dtype (fp16, bf16), activation scale (static, dynamic) and M: the layer with
the route off (``w4a4``), and on with the trigger late / early and the pad off / on (``late``,
``early``, ``early_fair``). Every output is checked against the fp32 oracle first (the
route probe's check); 4 layer copies, CUDA-graph medians, 3 rotating rounds.
``--validate``: the shipped rule (``rule``: the dispatch constants as they are) against the route
off, at layer shapes the rule was not placed on (``UNSEEN``), 1-32 tokens. ``--prepacked``
(session 41): the same pair on ``prepack()``-ed layers, whose route-off path differs (the
prepacked GEMV / GEMM dispatch), at ``PREPACKED_SHAPES`` and the route's tokens.
``--tma-rule`` (session 41): the route with the TMA GEMV's split rule as shipped (``rule``)
against session 38's (``session38``: ``fp4_gemv_tma_sm90``'s lone-CTA constants set back), at
``TMA_RULE_SHAPES`` where the route runs and the two rules split differently.
``--long-k`` (session 41): the route forced on at 9-16 tokens (``late``) against the route off,
at ``LONG_K_LAYERS`` (K > 8192), where session 40's rule did not take it (its K limit, which this
measurement under the TMA GEMV's session-41 split rule removed).
Usage on an sm_90 machine: ``python scripts/gpu_w4a4_layer_16bit_x_rule.py [--part i/n]
[--validate]``."""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import rounds, save_rows, time_graph  # noqa: E402
from gpu_gemv_tma_split_rule import SESSION_38, session38_config  # noqa: E402
from gpu_w4a4_layer_16bit_x_route import COPIES, check, layer_cases, oracle  # noqa: E402

from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from fp4mm.ops import dispatch  # noqa: E402

SHAPES = ((3072, 18432), (4096, 4096), (8192, 8192), (4096, 14336), (14336, 4096))  # (K, N)
TOKENS = (5, 8, 9, 12, 16, 20, 24, 32)
UNSEEN = ((5120, 5120), (8192, 10240), (8192, 28672), (28672, 8192), (2048, 8192))
UNSEEN_TOKENS = (4, 8, 9, 12, 16, 17, 24, 32)
PREPACKED_SHAPES = ((3072, 18432), (4096, 4096), (8192, 8192), (14336, 4096), (5120, 5120),
                    (2048, 8192))
PREPACKED_TOKENS = (9, 12, 16, 17, 24, 32)
TMA_RULE_SHAPES = ((4096, 4096), (14336, 4096), (12288, 4096), (18944, 3584), (4096, 1024),
                   (9216, 3072), (8192, 2048), (3072, 3072))
TMA_SHIPPED = {k: getattr(T, k) for k in SESSION_38}
LONG_K_LAYERS = ((14336, 4096), (11008, 4096), (12288, 4096), (18944, 3584), (13824, 5120),
                 (28672, 8192))
LONG_K_TOKENS = (9, 12, 16)
SHIPPED = {k: getattr(dispatch, k) for k in (
    "W4A4_16BIT_X_MIN_M", "W4A4_16BIT_X_MAX_M",
    "W4A4_16BIT_X_QUANTISER_PDL_LATE", "W4A4_16BIT_X_FAIR_SHARE")}
VARIANTS = {  # name: (route on, quantiser PDL trigger late, fair-share pad)
    "w4a4": (False, None, None),
    "late": (True, True, False),
    "early": (True, False, False),
    "early_fair": (True, False, True),
}


def tma_rule(session38):
    """The TMA GEMV's split constants as shipped, or (``session38``) as session 38 left them."""
    for k, v in (SESSION_38 if session38 else TMA_SHIPPED).items():
        setattr(T, k, v)
    T.choose_config.cache_clear()


def setting(name):
    tma_rule(name == "session38")
    if name in ("rule", "session38"):
        for k, v in SHIPPED.items():
            setattr(dispatch, k, v)
        return
    on, late, fair = VARIANTS[name]
    dispatch.W4A4_16BIT_X_MIN_M, dispatch.W4A4_16BIT_X_MAX_M = (1, 64) if on else (1, 0)
    if on:
        dispatch.W4A4_16BIT_X_QUANTISER_PDL_LATE = late
        dispatch.W4A4_16BIT_X_FAIR_SHARE = fair


def tma_rules_differ(M, N, K, dtype):
    """True where the layer takes the route and the two TMA split rules differ."""
    return (dispatch.w4a4_linear_via_16bit_x(M, K, dtype)
            and session38_config(M, N, K) != T.choose_config(M, N, K))


def exact_values():
    """The quantiser's fp16 values against the codec's dequantised codes of the same kernel's
    bytes, bit for bit (fp16 and bf16 x, static and dynamic scale, a zero block, ragged M)."""
    from fp4mm.formats import dequantize_nvfp4_blocks
    from fp4mm.kernels.quantize_nvfp4 import quantize_dequantize_nvfp4_triton, quantize_nvfp4_triton

    for dtype in (torch.float16, torch.bfloat16):
        for gs in (None, 672.0):
            x = (torch.randn(37, 4096, device="cuda") * 3).to(dtype)
            x[3, 32:48] = 0
            v, g = quantize_dequantize_nvfp4_triton(x, gs)
            q = quantize_nvfp4_triton(x, gs)
            ref = dequantize_nvfp4_blocks(q.data, q.scales).to(torch.float16)
            if not (torch.equal(v.view(torch.int16), ref.view(torch.int16))
                    and torch.equal(g, q.global_scale)):
                raise SystemExit(f"FAIL quantize_dequantize {dtype} gs={gs}")
    print("quantize_dequantize: bit-exact", flush=True)


def main():
    exact_values()
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="0/1", help="i/n: the i-th of n slices of the shapes")
    ap.add_argument("--validate", action="store_true",
                    help="the shipped rule against the route off, at unseen shapes")
    ap.add_argument("--prepacked", action="store_true",
                    help="the shipped rule against the route off, on prepacked layers")
    ap.add_argument("--tma-rule", action="store_true",
                    help="the route under the TMA GEMV's split rule against session 38's")
    ap.add_argument("--long-k", action="store_true",
                    help="the route forced on at 9-16 tokens of K > 8192 against the route off")
    args = ap.parse_args()
    part = int(args.part.split("/")[0])
    shapes, tokens = ((PREPACKED_SHAPES, PREPACKED_TOKENS) if args.prepacked
                      else (TMA_RULE_SHAPES, PREPACKED_TOKENS) if args.tma_rule
                      else (LONG_K_LAYERS, LONG_K_TOKENS) if args.long_k
                      else (UNSEEN, UNSEEN_TOKENS) if args.validate else (SHAPES, TOKENS))
    variants = (("session38", "rule") if args.tma_rule else ("w4a4", "late") if args.long_k
                else ("w4a4", "rule") if args.validate or args.prepacked else tuple(VARIANTS))
    rows = []
    for K, N, dtype, static, layers, M, x in layer_cases(shapes, tokens, args.part,
                                                          args.prepacked):
        if args.tma_rule and not tma_rules_differ(M, N, K, dtype):
            continue
        ref = oracle(layers[0], x, static)
        errs = {}
        for name in variants:
            setting(name)
            errs[name] = check(f"{K}->{N} {dtype} M={M} {name}", layers[0](x), ref)

        def timed(name):
            setting(name)
            return time_graph([lambda i=i: layers[i](x) for i in range(COPIES)])[0]
        times = rounds({k: lambda k=k: timed(k) for k in variants})
        med = {k: sorted(v)[1] for k, v in times.items()}
        rows.append(dict(K=K, N=N, M=M, dtype=str(dtype), static=static,
                         rounds_us=times, median_us=med, rel_err=errs))
        best = min(variants[1:], key=med.get)
        print(f"{K}->{N} {str(dtype)[6:]:8s} {'static ' if static else 'dynamic'} "
              f"M={M:2d}: " + "  ".join(f"{k} {med[k]:6.2f}" for k in variants)
              + f"  {variants[0]}/{best} {med[variants[0]] / med[best]:.3f}", flush=True)
    setting("rule")
    kind = ("prepacked" if args.prepacked else "tma-rule" if args.tma_rule
            else "long-k" if args.long_k else "validate" if args.validate else "rule")
    save_rows(f"w4a4-layer-16bit-x-{kind}-part{part}", rows)


if __name__ == "__main__":
    main()
