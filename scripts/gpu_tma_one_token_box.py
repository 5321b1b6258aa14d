"""One token of 16-bit group scales on the TMA GEMV with a 2-row x box (session 30, not yet run).

Session 30 sent groups of 64 (from 5 tokens) and every multiple of 128 (from 2) to
``fp4_gemv_tma_sm90``, but one token stays on the register ring: the TMA GEMV loads a one-token x
as one box of the 8-token tile, 7 rows past x zero-filled by TMA (slowly, session 29), and it was
mixed against the ring there (g128 18432 x 3072 16.35 vs 17.24 us, 8192 x 8192 21.53 vs 20.04;
bench/results/2026-11-27-w4a16-wide-group-edges-h100.json). ``x_boxes`` refuses M = 1 because
Gluon will not slice a 1-row piece of the 128-byte-swizzled stage; a 2-row box (one row past x)
needs no slice. This probe runs the TMA GEMV with ``x_boxes`` allowing that (variant ``box2``)
beside the shipped 8-row box (``box8``) and the ring, groups of 32 to 256, fp16 and bf16 x, four
shapes: each checked against the oracle with a NaN-poisoned output, then 3 rotating rounds of
CUDA-graph medians over 4 weight copies. If ``box2`` beats the ring everywhere for some group
sizes, ``dispatch.GEMV_SM90_TMA_MIN_M_GROUPED`` can start them at one token (with ``x_boxes``
changed in the kernel module and its test).

Usage on an sm_90 machine: ``python -u scripts/gpu_tma_one_token_box.py`` (JSON to $OUT).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import save_rows  # noqa: E402
from scripts.gpu_tma_dispatch import compare, grouped_kernels  # noqa: E402

SHIPPED_X_BOXES = T.x_boxes


def x_boxes_2row(M, nt, grouped):
    """The shipped rule, but one token as a 2-row box (its second row past x, zero-filled)."""
    if grouped and M == 1:
        return 2, 2
    return SHIPPED_X_BOXES(M, nt, grouped)


def tma(p, i, o, group, box2):
    T.x_boxes = x_boxes_2row if box2 else SHIPPED_X_BOXES
    try:
        T.gemv_tma_sm90(p.x[0], *p.w[i], 1.0, "low_first", o, group_size=group)
    finally:
        T.x_boxes = SHIPPED_X_BOXES


def main():
    rows = []
    for (N, K), group, dt in [(nk, g, dt)
                              for nk in ((18432, 3072), (8192, 8192), (4096, 4096), (28672, 4096))
                              for g in (32, 64, 128, 256)
                              for dt in (torch.float16, torch.bfloat16)]:
        p, out, kernels = grouped_kernels(1, N, K, group, dt)
        runs = {"ring": kernels["ring"],
                "box8": lambda i, o, p=p, g=group: tma(p, i, o, g, False),
                "box2": lambda i, o, p=p, g=group: tma(p, i, o, g, True)}
        rows.append(compare(runs, p.reference(0), out, dt,
                            f"g{group} M=1 {N}x{K} {str(dt)[6:]:8s}",
                            dict(op="w4a16_mm", group=group, dtype=str(dt), M=1, N=N, K=K)))
    save_rows("w4a16-one-token-box", rows)


if __name__ == "__main__":
    main()
