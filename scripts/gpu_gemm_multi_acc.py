# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: Gluon GEMM tiles of 192 and 208 tokens (a 128-token accumulator plus a 64- and a
16-token one, ``SM90Config.BN2`` / ``BN3``) against the shipped heuristic, W4A4 with
prepacked weights (x pre-pass + GEMM), cuBLAS bf16 on pre-dequantised operands beside them.
Oracle checks first (output poisoned with NaN; ragged M, N, every out dtype), then
CUDA-graph medians over 4 weight copies. ``--check-only``: the checks alone.
The BN2/BN3 tiles were reverted: run at the commit that added this script.
Usage on an sm_90 machine: ``python scripts/gpu_gemm_multi_acc.py`` (JSON to $OUT or .)."""

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
T192, T208 = C(128, 4, True, 1, 64), C(128, 4, True, 1, 64, 16)
CHECKS = [  # (M, N, K, config, order, out dtype)
    (300, 200, 640, T192, "low_first", torch.float16),
    (300, 200, 640, T208, "high_first", torch.bfloat16),
    (1024, 3072, 3072, T208, "low_first", torch.float16),
    (2048, 3072, 3072, T192, "low_first", torch.float16),
    (150, 1000, 3072, C(128, 3, True, 1, 64, 16), "low_first", torch.float32),
    (7, 136, 256, C(128, 4, False, 1, 64), "low_first", torch.float16),
]
SHAPES = [(1024, 3072, 3072), (2048, 3072, 3072), (4096, 3072, 3072), (1024, 18432, 3072),
          (2048, 18432, 3072)]


def run_checks():
    bad = 0
    for M, N, K, cfg, order, ot in CHECKS:
        xq, xs, wq, ws = gen(M, N, K, seed=M + N + K)
        packed = g.prepack_weight_sm90(wq, ws, order)
        out = torch.full((M, N), float("nan"), dtype=ot, device="cuda")
        g.fp4_gemm_sm90(xq, xs, None, None, 0.37, order, out, prepacked=packed, config=cfg)
        torch.cuda.synchronize()
        ok, rel, _ = check(out, xq, xs, wq, ws, 0.37, order)
        bad += not ok
        print(f"check {M}x{N}x{K} {cfg} {order} {ot}: {'ok' if ok else 'FAIL'} rel {rel:.2e}",
              flush=True)
    return bad


def main():
    bad = run_checks()
    if bad or "--check-only" in sys.argv:
        print("failed checks:", bad)
        return
    rows = []
    order = "low_first"
    for M, N, K in SHAPES:
        xq, xs, wq0, ws0 = gen(M, N, K, seed=M)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=100 + i)[2:] for i in range(3)]
        packs = [g.prepack_weight_sm90(w, s, order) for w, s in wl]
        xb = dequantize_nvfp4_blocks(xq, xs, order).bfloat16()
        wbs = [dequantize_nvfp4_blocks(w, s, order).bfloat16() for w, s in wl]
        ob = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        cands = [("cublas_bf16", "cublas"), ("shipped", g.choose_config(M, N, K))]
        for st in (4, 5):
            for bn3 in (0, 16):
                for pers in (True, False):
                    cfg = C(128, st, pers, 1, 64, bn3)
                    if g.config_is_valid(cfg):
                        cands.append((f"t{cfg.tokens}/s{st}/{'p' if pers else 'g'}", cfg))
        res = {}
        for name, cfg in cands:
            def call(i, o):
                if cfg == "cublas":
                    torch.matmul(xb, wbs[i].T, out=ob)
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
    save_rows("gemm_multi_acc", rows)


if __name__ == "__main__":
    main()
