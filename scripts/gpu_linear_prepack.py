"""NVFP4Linear with and without ``prepack()``: one forward per call, CUDA-graph medians over 4
layer copies (each its own weight memory, so the L2 holds none of them between calls), the same
run and card for both. Every case is first checked: the prepacked layer's output against the raw
layer's.

Usage (sm_90): ``python scripts/gpu_linear_prepack.py`` (writes ``linear-prepack_<time>.json``
to $OUT or .). Layers 3072 -> 18432 and 3072 -> 3072, modes w4a4 (static activation scale) and
w4a16, bf16 activations, M = 1 .. 2048 tokens.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.nn import NVFP4Linear  # noqa: E402
from scripts.gpu_decode import save_rows, time_graph  # noqa: E402

COPIES = 4


def _layers(K, N, mode):
    torch.manual_seed(0)
    lin = nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16)
    scale = None if mode == "w4a16" else 2688.0 / 4.0
    make = lambda: NVFP4Linear.from_linear(lin, mode=mode,  # noqa: E731
                                           activation_scale=scale or "dynamic")
    return [make() for _ in range(COPIES)], [make() for _ in range(COPIES)]


def _prepack_us(layer):
    ts = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        layer.prepack()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1000.0)
    return sorted(ts)[2]


def main():
    rows = []
    for N, K in ((18432, 3072), (3072, 3072)):
        for mode in ("w4a4", "w4a16"):
            raw, packed = _layers(K, N, mode)
            prepack_us = _prepack_us(packed[0])
            for layer in packed[1:]:
                layer.prepack()
            for M in (1, 16, 64, 128, 512, 2048):
                x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
                want, got = raw[0](x), packed[0](x)
                err = (got.float() - want.float()).abs().max().item()
                # different kernels may serve the two (GEMV raw, GEMM prepacked): fp32
                # summation order plus one bf16 rounding, at most an ulp of the largest output
                ok = bool(torch.isfinite(got).all()) and err <= 2**-7 * want.float().abs().max()
                if not ok:
                    print(f"WRONG {mode} {M}x{N}x{K}: max err {err}", flush=True)
                    continue
                t_raw = time_graph([lambda i=i, L=raw, x=x: L[i](x) for i in range(COPIES)])
                t_packed = time_graph([lambda i=i, L=packed, x=x: L[i](x)
                                       for i in range(COPIES)])
                print(f"{mode:5s} {M:5d}x{N}x{K}: raw {t_raw[0]:8.2f} us, prepacked "
                      f"{t_packed[0]:8.2f} us ({t_raw[0] / t_packed[0]:.2f}x)", flush=True)
                rows.append(dict(mode=mode, M=M, N=N, K=K, x_dtype="bf16", max_err=err,
                                 raw_us=t_raw, prepacked_us=t_packed, prepack_us=prepack_us))
            raw.clear()
            packed.clear()
            torch.cuda.empty_cache()
    save_rows("linear-prepack", rows)


if __name__ == "__main__":
    main()
