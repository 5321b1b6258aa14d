# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: W4A4 GEMM with x decoded inside the kernel (``XDEC``: the worker warpgroup turns x's
E2M1 codes and E4M3 scales into the fp16 stage) against the shipped path (x pre-pass +
GEMM), prepacked weights, cuBLAS bf16 on pre-dequantised operands beside them. Every variant
is checked against the oracle first (output poisoned with NaN), then CUDA-graph medians over
4 weight copies. ``--check-only``: the oracle checks alone; ``--small``: M = 17-64 (the
heuristic's small token tiles) instead of the Table 5 and challenge shapes.
The XDEC kernel was reverted: run at commit 348c250 (``git checkout 348c250``).
Usage on an sm_90 machine: ``python scripts/gpu_gemm_xdec.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402

C = g.SM90Config
CHECKS = [  # (M, N, K, config or None, order, out dtype, lead); XDEC needs K % 256 == 0
    (1, 256, 256, None, "low_first", torch.float16, 1),
    (5, 200, 256, None, "high_first", torch.float16, 2),
    (100, 1000, 512, C(128, 6), "low_first", torch.bfloat16, 3),
    (300, 384, 3072, C(256, 3), "low_first", torch.float16, 1),
    (300, 384, 3072, C(128, 4), "high_first", torch.float16, 2),
    (257, 136, 768, C(128, 4), "high_first", torch.float32, 2),
    (257, 136, 768, C(64, 6), "low_first", torch.float16, 2),
    (40, 1000, 3072, C(16, 6, True, 4), "low_first", torch.float16, 3),
    (128, 3072, 3072, C(128, 6, True, 4), "low_first", torch.float16, 2),
    (2048, 3072, 3072, C(128, 6, True, 2), "low_first", torch.float16, 3),
    (2048, 3072, 3072, C(256, 3, True, 2), "high_first", torch.bfloat16, 1),
]
SMALL_SHAPES = [(M, N, K) for N, K in ((18432, 3072), (8192, 8192), (3072, 3072))
                for M in (17, 32, 64)]
SHAPES = [(128, 3072, 3072), (1024, 3072, 3072), (2048, 3072, 3072), (2048, 18432, 3072)]


def run_checks():
    bad = 0
    for M, N, K, cfg, order, ot, lead in CHECKS:
        xq, xs, wq, ws = gen(M, N, K, seed=M + N + K)
        if M > 3 and "--no-nan" not in sys.argv:  # a NaN scale byte: NaN in that token's row only
            xs[3, 1] = 0x7F
        packed = g.prepack_weight_sm90(wq, ws, order)
        out = torch.full((M, N), float("nan"), dtype=ot, device="cuda")
        g.gemm_sm90_xdec(xq, xs, packed, 0.37, order, out, config=cfg, lead=lead)
        torch.cuda.synchronize()
        ok, rel, rn = check(out, xq, xs, wq, ws, 0.37, order)
        bad += not ok
        print(f"check {M}x{N}x{K} {cfg} lead {lead} {order} {ot}: {'ok' if ok else 'FAIL'} "
              f"rel {rel:.2e}", flush=True)
    return bad


def main():
    bad = run_checks()
    if bad or "--check-only" in sys.argv:
        print("failed checks:", bad)
        return
    rows = []
    order = "low_first"
    small = "--small" in sys.argv
    for M, N, K in (SMALL_SHAPES if small else SHAPES):
        xq, xs, wq0, ws0 = gen(M, N, K, seed=M)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=100 + i)[2:] for i in range(3)]
        packs = [g.prepack_weight_sm90(w, s, order) for w, s in wl]
        xb = dequantize_nvfp4_blocks(xq, xs, order).bfloat16()
        wbs = [dequantize_nvfp4_blocks(w, s, order).bfloat16() for w, s in wl]
        ob = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        heur = g.choose_config(M, N, K)
        cands = [("cublas_bf16", "cublas"), ("shipped", heur)]
        sp = heur.SPLIT
        tiles = (((heur.BN, heur.STAGES, 1), (heur.BN, heur.STAGES, 2),
                  (heur.BN, heur.STAGES, 3)) if small else
                 ((256, 3, 1), (128, 6, 1), (128, 6, 2), (128, 6, 3)))
        for bn, st, lead in tiles:
            if M <= 128 and bn == 256:
                continue
            cands.append((f"xdec_{bn}/{st}/{sp}/L{lead}", ("x", C(bn, st, True, sp), lead)))
        res = {}
        for name, cfg in cands:
            def call(i, o):
                if cfg == "cublas":
                    torch.matmul(xb, wbs[i].T, out=ob)
                elif isinstance(cfg, tuple):
                    g.gemm_sm90_xdec(xq, xs, packs[i], 1 / 64, order, o, config=cfg[1],
                                     lead=cfg[2])
                else:
                    g.fp4_gemm_sm90(xq, xs, None, None, 1 / 64, order, o, prepacked=packs[i],
                                    config=cfg)
            try:
                if cfg != "cublas":
                    o = torch.full_like(out, float("nan"))
                    call(0, o)
                    torch.cuda.synchronize()
                    if not check(o, xq, xs, wq0, ws0, 1 / 64, order)[0]:
                        print(f"FAIL (not timed) {M}x{N}x{K} {name}", flush=True)
                        continue
                t = time_graph([lambda i=i: call(i, out) for i in range(4)])
            except Exception as e:  # noqa: BLE001
                print(f"ERROR {M}x{N}x{K} {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            res[name] = t[0]
            rows.append(dict(M=M, N=N, K=K, variant=name, config=str(cfg), median_us=t[0],
                             min_us=t[1], max_us=t[2]))
        cb = res.get("cublas_bf16", float("nan"))
        print(f"{M}x{N}x{K}: " + "  ".join(f"{n} {t:.1f} ({cb / t:.3f}x)"
                                          for n, t in res.items()), flush=True)
    save_rows("gemm_xdec", rows)


if __name__ == "__main__":
    main()
