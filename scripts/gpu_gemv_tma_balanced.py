# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The TMA-fed GEMV's balanced grid (``GemvTMAConfig.ctas_per_sm``, session 38) against its
split-K rule, on whatever card runs it.

1. Oracle checks (NaN-poisoned output; fp32 out exact up to summation order, 16-bit out one
   rounding): ragged N, K from one chunk up, 1-32 tokens, both nibble orders, fp16/bf16 x,
   1-5 CTAs an SM, one to four warps, one and two row tiles, alpha as a float and on the device.
2. Timing (bf16 x, CUDA-graph medians over 4 weight copies, 3 rotating rounds): at 4 / 8 / 16 /
   32 tokens on eight weight shapes, the shipped rule against the balanced grid at 3-6 CTAs an
   SM (four warps, one row tile, 2 stages) and at 4 with 3 stages.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_balanced.py [--check-only]`` (JSON to
$OUT or .).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

C = T.GemvTMAConfig
SHAPES = [(18432, 3072), (8192, 8192), (28672, 4096), (14336, 4096), (4096, 4096),
          (3072, 3072), (8192, 3072), (5120, 5120)]
TOKENS = (4, 8, 16, 32)
VARIANTS = {"s2c3": C(1, 2, 1, 4, 3), "s2c4": C(1, 2, 1, 4, 4), "s2c5": C(1, 2, 1, 4, 5),
            "s2c6": C(1, 2, 1, 4, 6), "s3c4": C(1, 3, 1, 4, 4)}


def checks():
    n = 0
    cases = [(1, 64, 256), (4, 200, 512), (9, 77, 768), (16, 130, 3072), (16, 1000, 2560),
             (24, 1000, 5120), (32, 300, 2048), (16, 18432, 3072), (7, 5000, 256)]
    cfgs = [C(1, 2, 1, 4, c) for c in (1, 4, 5)] + [C(2, 3, 1, 2, 3), C(1, 4, 1, 1, 2)]
    for M, N, K in cases:
        for dt in (torch.float16, torch.bfloat16):
            p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt)
            for order in ("low_first", "high_first"):
                p.order = order
                ref = p.reference(0)
                for cfg in cfgs:
                    dev_alpha = torch.tensor([p.alpha], device="cuda")
                    for out_dt, alpha in ((torch.float32, p.alpha), (dt, dev_alpha)):
                        out = torch.full((M, N), float("nan"), dtype=out_dt, device="cuda")
                        T.gemv_tma_sm90(p.x[0], *p.w[0], alpha, order, out, config=cfg)
                        ok, err = close(out, ref)
                        if not ok:
                            raise SystemExit(f"FAIL M={M} N={N} K={K} {dt} {order} {cfg} "
                                             f"{out_dt} err={err}")
                        n += 1
    print(f"oracle checks: {n} passed", flush=True)
    return n


def diag():
    """Same partition, other code? At 16 x 18432 x 3072 the balanced grid with 576 CTAs (the
    SM count patched to 144, four an SM: 6 units a CTA, each CTA exactly one half row block,
    as the split-K rule) against the rule, with and without the fair-share padding."""
    M, N, K = 16, 18432, 3072
    p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
    out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
    real = T.sm_count
    variants = {"rule": (None, True, None), "rule_nofair": (None, False, None),
                "aligned576_nofair": (C(1, 2, 1, 4, 4), False, 144),
                "c5": (C(1, 2, 1, 4, 5), True, None), "c5_nofair": (C(1, 2, 1, 4, 5), False, None),
                "c4": (C(1, 2, 1, 4, 4), True, None)}

    def run(v, i, o):
        cfg, fair, sms = variants[v]
        T.sm_count = (lambda d: sms) if sms else real
        try:
            T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg,
                            fair_share=fair)
        finally:
            T.sm_count = real

    ref = p.reference(0)
    for v in variants:
        o = torch.full_like(out, float("nan"))
        run(v, 0, o)
        assert close(o, ref)[0], v
    names = list(variants)
    times = {k: [] for k in names}
    for r in range(3):
        for k in names[r:] + names[:r]:
            times[k].append(time_graph([lambda i=i: run(k, i, out) for i in range(4)])[0])
    print("diag 16x18432x3072: " + "  ".join(f"{k} {sorted(v)[1]:.2f}"
                                             for k, v in times.items()), flush=True)
    # the GEMV alone (its reduce not launched), then the reduce alone
    from fp4mm.kernels import fp4_gemv

    real_reduce = fp4_gemv.reduce_partials
    fp4_gemv.reduce_partials = lambda *a, **k: None
    try:
        alone = {k: time_graph([lambda i=i: run(k, i, out) for i in range(4)])[0]
                 for k in ("rule_nofair", "aligned576_nofair", "c5")}
    finally:
        fp4_gemv.reduce_partials = real_reduce
    print("GEMV alone: " + "  ".join(f"{k} {v:.2f}" for k, v in alone.items()), flush=True)
    part2, part3 = (torch.randn(s, M, N, device="cuda") for s in (2, 3))
    red = {"plain2": time_graph([lambda: real_reduce(part2, out, 0.5, pdl=True)])[0],
           "stream3": time_graph([lambda: real_reduce(part3, out, 0.5, pdl=True,
                                                      stream=(64, 12, 660, 3456))])[0],
           "stream2": time_graph([lambda: real_reduce(part2, out, 0.5, pdl=True,
                                                      stream=(64, 12, 576, 3456))])[0]}
    print("reduce alone: " + "  ".join(f"{k} {v:.2f}" for k, v in red.items()), flush=True)
    return times


def splits():
    """Can a plain split choice do what the balanced grid does? Where the rule's split-K grid
    leaves its last wave mostly empty (5120 x 5120: 160 CTAs on 132 SMs), every split 1-5 of
    the rule's CTA shape against the balanced grid at 3 and 4 CTAs an SM."""
    rows = []
    for N, K in ((5120, 5120), (14336, 4096), (28672, 4096), (18432, 3072), (6144, 4096)):
        for M in (4, 16, 32):
            p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
            out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
            ref = p.reference(0)
            variants = {"rule": None} | {f"split{k}": C(1, 2, k, 4) for k in range(1, 6)} | {
                "s2c3": C(1, 2, 1, 4, 3), "s3c4": C(1, 3, 1, 4, 4)}
            for name, cfg in variants.items():
                o = torch.full_like(out, float("nan"))
                T.gemv_tma_sm90(p.x[0], *p.w[0], p.alpha, "low_first", o, config=cfg)
                if not close(o, ref)[0]:
                    raise SystemExit(f"FAIL {N}x{K} M={M} {name}")
            names = list(variants)
            times = {k: [] for k in names}
            for r in range(3):
                for k in names[r:] + names[:r]:
                    times[k].append(time_graph([
                        lambda i=i: T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", out,
                                                    config=variants[k]) for i in range(4)])[0])
            med = {k: sorted(v)[1] for k, v in times.items()}
            rows.append(dict(N=N, K=K, M=M, rounds_us=times, median_us=med))
            print(f"{N:6d}x{K:5d} M={M:2d} " + " ".join(f"{k} {v:6.2f}" for k, v in med.items()),
                  flush=True)
    path = os.path.join(os.environ.get("OUT", "."),
                        f"gemv-tma-balanced-splits_{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       git_commit=os.environ.get("FP4MM_GIT_COMMIT"), rows=rows), f, indent=1)


def main():
    if "--splits" in sys.argv:
        splits()
        return
    if "--diag" in sys.argv:
        diag()
        return
    n_checks = checks()
    if "--check-only" in sys.argv:
        return
    path = os.path.join(os.environ.get("OUT", "."),
                        f"gemv-tma-balanced_{time.strftime('%Y%m%d-%H%M%S')}.json")
    rows = []
    for N, K in SHAPES:
        for M in TOKENS:
            p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
            out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
            ref = p.reference(0)
            variants = {"rule": None} | VARIANTS

            def run(cfg, i, o):
                T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg)

            for name, cfg in variants.items():
                o = torch.full_like(out, float("nan"))
                run(cfg, 0, o)
                if not close(o, ref)[0]:
                    raise SystemExit(f"FAIL timing check {N}x{K} M={M} {name}")
            names = list(variants)
            times = {k: [] for k in names}
            for r in range(3):
                for k in names[r:] + names[:r]:
                    cfg = variants[k]
                    times[k].append(time_graph([lambda i=i: run(cfg, i, out)
                                                for i in range(4)])[0])
            med = {k: sorted(v)[1] for k, v in times.items()}
            best = min((k for k in names if k != "rule"), key=med.get)
            rule = T.choose_config(M, N, K)
            rows.append(dict(N=N, K=K, M=M, rule=str(rule), rounds_us=times, median_us=med,
                             best=best, gain=med["rule"] / med[best]))
            print(f"{N:6d}x{K:5d} M={M:2d} rule {med['rule']:6.2f} | "
                  + " ".join(f"{k} {med[k]:6.2f}" for k in names[1:])
                  + f" | best {best} x{med['rule'] / med[best]:.3f}", flush=True)
            with open(path, "w") as f:
                json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                               git_commit=os.environ.get("FP4MM_GIT_COMMIT"),
                               oracle_checks=n_checks, rows=rows), f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
