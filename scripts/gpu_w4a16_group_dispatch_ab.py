"""``w4a16_mm`` through the public op with session 30's group dispatch against the one before
it, in one run (session 30): groups of 64 and 128 on the TMA GEMV (``GEMV_SM90_TMA_MIN_M_GROUPED``
{32: 5, 64: 5, 128: 2}; before {32: 5}) and prepacked groups of 64 and 128 on the GEMV up to 16
tokens (``W4A16_SM90_GEMV_MAX_M[(64, True)]``; before 8). Each call checked against the oracle
with a NaN-poisoned output both ways, then 3 rotating rounds of CUDA-graph medians over 4 weight
copies, fp16 x. Usage on an sm_90 machine: ``python -u scripts/gpu_w4a16_group_dispatch_ab.py``.
"""

from __future__ import annotations

import importlib
import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from scripts.gpu_decode import Problem, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402

OPS = importlib.import_module("fp4mm.ops.nvfp4_mm")  # the package re-exports the function
DISPATCH = importlib.import_module("fp4mm.ops.dispatch")
NEW = dict(OPS.GEMV_SM90_TMA_MIN_M_GROUPED)


def set_dispatch(old: bool) -> None:
    OPS.GEMV_SM90_TMA_MIN_M_GROUPED = {32: 5} if old else NEW
    DISPATCH.W4A16_SM90_GEMV_MAX_M[(64, True)] = 8 if old else 16


def main():
    rows = []
    cases = [(64, 8, False), (64, 12, False), (64, 24, False), (128, 2, False), (128, 8, False),
             (128, 16, False), (128, 24, False), (64, 12, True), (128, 16, True)]
    for (N, K), (g, M, pre) in [(nk, c) for nk in ((18432, 3072), (28672, 4096)) for c in cases]:
        p = Problem("w4a16_mm", M, N, K, group=g, dtype=torch.float16, copies=4)
        w = [fp4mm.prepack_w4a16_weight(*wi, g) for wi in p.w] if pre else p.w
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")

        def call(i, o, w=w, p=p, g=g, pre=pre):
            if pre:
                fp4mm.w4a16_mm(p.x[0], w[i], None, g, out=o)
            else:
                fp4mm.w4a16_mm(p.x[0], *w[i], g, out=o)
        ref = p.reference(0)

        def timed(old, call=call, out=out):
            set_dispatch(old)
            try:
                return time_graph([lambda i=i: call(i, out) for i in range(4)])[0]
            finally:
                set_dispatch(False)
        for old in (True, False):
            set_dispatch(old)
            check_poisoned(lambda o, call=call: call(0, o), ref, torch.float16,
                           f"old={old} g{g} M={M} {N}x{K}")
        set_dispatch(False)
        got = rounds({"old": lambda: timed(True), "new": lambda: timed(False)}, 3)
        med = {k: st.median(v) for k, v in got.items()}
        print(f"{N}x{K} g{g} M={M:2d} {'prepacked' if pre else 'raw':9s} "
              + " ".join(f"{k} {v:.2f}" for k, v in med.items()), flush=True)
        rows.append(dict(op="w4a16_mm", group=g, M=M, N=N, K=K, prepacked=pre,
                         dtype="torch.float16", rounds=got, medians=med))
    save_rows("w4a16-group-dispatch-ab", rows)


if __name__ == "__main__":
    main()
