# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Where ``w4a16_mm`` (16-bit group scales) on Hopper should leave the GEMV for the Gluon GEMM
(``dispatch.W4A16_SM90_GEMV_MAX_M``): the public op with the kernel forced (``FP4MM_KERNEL``),
raw and prepacked weights, groups 32 and 128, fp16 x; each output checked against the oracle,
then CUDA-graph medians over rotating weight copies (>= 3x L2). Usage on an sm_90 machine:
``python scripts/gpu_w4a16_crossover.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import close, save_rows, time_graph  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm import reference  # noqa: E402


def main():
    rows = []
    for group in (32, 128):
        for N, K in ((18432, 3072), (8192, 3072)):
            wbytes = N * K // 2 + N * K // group * 2
            copies = max(2, int(3 * 50e6 // wbytes) + 1)
            ws = [(torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda"),
                   (torch.rand(N, K // group, device="cuda") * 0.1 + 0.01).half())
                  for _ in range(copies)]
            packs = [fp4mm.prepack_w4a16_weight(w, s, group) for w, s in ws]
            for M in (1, 8, 16, 24, 32, 40, 48, 64):
                x = (torch.randn(M, K, device="cuda") * 0.5).half()
                ref = reference.w4a16_mm(x, *ws[0], group)
                line = []
                for prepacked in (False, True):
                    for kernel in ("gemv", "gemm"):
                        os.environ["FP4MM_KERNEL"] = kernel
                        w = (lambda i: (packs[i], None)) if prepacked else (lambda i: ws[i])
                        o = fp4mm.w4a16_mm(x, *w(0), group)
                        if not close(o, ref)[0]:
                            print(f"FAIL (not timed) g{group} {M}x{N}x{K} {kernel} "
                                  f"prepacked={prepacked}", flush=True)
                            continue
                        t = time_graph([lambda i=i: fp4mm.w4a16_mm(x, *w(i), group)
                                        for i in range(copies)])
                        rows.append(dict(group=group, M=M, N=N, K=K, prepacked=prepacked,
                                         kernel=kernel, median_us=t[0], min_us=t[1],
                                         max_us=t[2]))
                        line.append(f"{'pre' if prepacked else 'raw'}-{kernel} {t[0]:6.1f}")
                os.environ.pop("FP4MM_KERNEL", None)
                print(f"g{group:3d} {M:3d}x{N}x{K}: " + "  ".join(line), flush=True)
    save_rows("w4a16_crossover", rows)


if __name__ == "__main__":
    main()
