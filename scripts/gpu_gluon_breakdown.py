# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Where the time of a W4A4 call goes (Gluon GEMM path, prepacked weights), CUDA-graph timed.

Usage (on an H100): ``python scripts/gpu_gluon_breakdown.py [--out DIR]``. For each shape: cuBLAS
bf16 on pre-dequantised operands, the whole call (x pre-pass + GEMM, split-K slices summed in the
GEMM where it can), the same with the separate reduce launch, the x pre-pass alone, the GEMM
alone on fp16 x (with either split-K sum), and other configs. Every variant is checked against
the oracle first.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.harness import graph_timer  # noqa: E402
from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import _dequant_nvfp4_kernel, dequant_nvfp4  # noqa: E402

DEV = "cuda"
C = g.SM90Config
SHAPES = [(128, 3072, 3072), (1024, 3072, 3072), (2048, 3072, 3072), (4096, 3072, 3072),
          (128, 18432, 3072), (1024, 18432, 3072)]
EXTRA = {  # configs beside the heuristic
    (128, 3072, 3072): [C(128, 6, True, 2), C(128, 6, True, 6), C(64, 8, True, 4),
                        C(64, 8, True, 6)],
    (1024, 3072, 3072): [C(256, 4, True, 2), C(256, 4, True, 4), C(128, 6, True, 2)],
    (2048, 3072, 3072): [C(256, 4, True, 1), C(128, 6, True, 2)],
    (4096, 3072, 3072): [C(256, 4, True, 2)],
    (128, 18432, 3072): [C(128, 6, True, 4), C(128, 6, True, 8)],
    (1024, 18432, 3072): [C(256, 4, True, 1)],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    print(dev, torch.__version__, flush=True)
    rows = []
    order, alpha = "high_first", 1 / 64
    for M, N, K in SHAPES:
        xq, xs, wq, ws = gen(M, N, K, seed=1)
        ncopy = max(2, int(3 * 50e6 // (wq.numel() + ws.numel())) + 1)
        packs = [g.prepack_weight_sm90(wq.clone(), ws.clone(), order) for _ in range(ncopy)]
        wd = dequantize_nvfp4_blocks(wq, ws, order).bfloat16()
        wds = [wd.clone() for _ in range(max(2, int(3 * 50e6 // (wd.numel() * 2)) + 1))]
        xb = dequantize_nvfp4_blocks(xq, xs, order).bfloat16()
        xd = dequant_nvfp4(xq, xs, order=order)
        out = torch.empty((M, N), dtype=torch.float16, device=DEV)
        outb = torch.empty((M, N), dtype=torch.bfloat16, device=DEV)
        i = [0]

        def nxt(lst):
            i[0] += 1
            return lst[i[0] % len(lst)]

        def add(name, fn):
            med, lo, hi = graph_timer(fn, False)
            rows.append(dict(M=M, N=N, K=K, impl=name, us=med * 1e3, min_us=lo * 1e3,
                             max_us=hi * 1e3))
            print(f"{M:>5}x{N}x{K} {name:<58} {med * 1e3:8.1f} us", flush=True)

        add("cublas_bf16", lambda: torch.matmul(xb, nxt(wds).T, out=outb))
        add("x pre-pass alone (dequant_nvfp4)",
            lambda: dequant_nvfp4(xq, xs, order=order, pdl=True))
        xo = torch.empty((M, K), dtype=torch.float16, device=DEV)
        for br, bk, nw in ((16, 512, 4),):
            grid = ((M + br - 1) // br, (K + bk - 1) // bk)
            _dequant_nvfp4_kernel[grid](xq, xs, xo, M, K, xq.stride(0), xs.stride(0),
                                        xo.stride(0), xo, 0, HIGH_FIRST=True, BLOCK_R=br,
                                        BLOCK_K=bk, PDL=True, ZERO=False, launch_pdl=True,
                                        num_warps=nw)
            if not torch.equal(xo, xd):
                print(f"pre-pass {br}x{bk}/{nw}: WRONG", flush=True)
                continue
            add(f"x pre-pass alone, block {br}x{bk}, {nw} warps", lambda: _dequant_nvfp4_kernel[
                grid](xq, xs, xo, M, K, xq.stride(0), xs.stride(0), xo.stride(0), xo, 0,
                      HIGH_FIRST=True, BLOCK_R=br, BLOCK_K=bk, PDL=True, ZERO=False,
                      launch_pdl=True, num_warps=nw))
        heur = g.choose_config(M, N, K, torch.float16, g.sm_count(DEV))
        for cfg in [None] + EXTRA[(M, N, K)]:
            out.fill_(float("nan"))
            g.fp4_gemm_sm90(xq, xs, None, None, alpha, order, out, prepacked=packs[0],
                            config=cfg)
            ok, _, _ = check(out, xq, xs, wq, ws, alpha, order)
            label = f"{cfg or heur}{' (heuristic)' if cfg is None else ''}"
            if not ok:
                print(f"{label}: WRONG, not timed", flush=True)
                rows.append(dict(M=M, N=N, K=K, impl=label, correct=False))
                continue
            add(f"call {label}", lambda: g.fp4_gemm_sm90(
                xq, xs, None, None, alpha, order, out, prepacked=nxt(packs), config=cfg))
            c = cfg or heur
            sc = g.schedule(M, N, K, c, g.sm_count(DEV))
            if g.fixup_in_kernel(sc):
                add(f"call with the reduce launch {label}", lambda: g.gemm_sm90_dense_x(
                    dequant_nvfp4(xq, xs, order=order, pdl=True), nxt(packs), alpha, out,
                    config=cfg))
                flags = torch.zeros(sc.num_tiles, dtype=torch.int32, device=DEV)
                add(f"GEMM only, slices summed in the kernel {label}",
                    lambda: g.gemm_sm90_dense_x(xd, nxt(packs), alpha, out, config=cfg,
                                                flags=flags))
            add(f"GEMM only {label}", lambda: g.gemm_sm90_dense_x(
                xd, nxt(packs), alpha, out, config=cfg))
    res = dict(device=dev, torch=torch.__version__, date=datetime.datetime.now().isoformat(),
               timer="graph", rows=rows)
    with open(os.path.join(args.out, "gluon_breakdown.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
