# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""A/B of how ``fp4_gemv_fp8_sm90`` builds B (x as E4M3 block columns) in its prologue, one token:
v1 (``17b7427``): all tiles in one tensor padded to a power of two, one store; v2 (``b230709``):
per window, the 8 tiles split off in registers, 8 stores; "tree": the module in this tree (run
1: per window, one store of [8 tiles x 16 columns, 32]; run 2: v1's build with token columns).
The bench run after v2 timed 16.7 us where the sweep before it (v1) timed 15.7. Same split
(the rule's), distinct weight copies filling 3x the L2,
CUDA-graph medians, the variants alternating (``--rounds``, default 3), every output checked
against the oracle first. ``scripts/_fp8_v1.txt`` and ``_fp8_v2.txt`` hold the older modules.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_fp8_b_build.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as tree  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as ring  # noqa: E402

HERE = os.path.dirname(__file__)
ROUNDS = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
v1 = patched_module("fp8_v1", open(os.path.join(HERE, "_fp8_v1.txt")).read())
v2 = patched_module("fp8_v2", open(os.path.join(HERE, "_fp8_v2.txt")).read())


def main():
    rows = []
    for N, K in ((18432, 3072), (8192, 8192), (3072, 3072), (14336, 4096)):
        xq, xs, wq0, ws0 = gen(1, N, K, seed=N + K)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=400 + i)[2:] for i in range(copies - 1)]
        split = tree.choose_split(N, K)
        kernels = {"tree": lambda w, s, o: tree.gemv_fp8_sm90(xq, xs, w, s, 1 / 64, o,
                                                              split=split),
                   "v1": lambda w, s, o: v1.gemv_fp8_sm90(xq, xs, w, s, 1 / 64, o, split=split),
                   "v2": lambda w, s, o: v2.gemv_fp8_sm90(xq, xs, w, s, 1 / 64, o, split=split),
                   "ring": lambda w, s, o: ring.gemv_sm90(xq, xs, w, s, 1 / 64, "low_first", o)}
        for name, k in kernels.items():
            o = torch.full((1, N), float("nan"), dtype=torch.float32, device="cuda")
            k(wq0, ws0, o)
            torch.cuda.synchronize()
            assert check(o, xq, xs, wq0, ws0, 1 / 64, "low_first")[0], (N, K, name)
        out = torch.empty((1, N), dtype=torch.float16, device="cuda")
        res = {n: [] for n in kernels}
        for _ in range(ROUNDS):
            for name, k in kernels.items():
                res[name].append(time_graph([lambda i=i: k(*wl[i], out)
                                             for i in range(copies)])[0])
        for name, ts in res.items():
            rows.append(dict(M=1, N=N, K=K, variant=name, split=split, median_us=ts))
        print(f"{N}x{K} split {split}: " + "  ".join(
            f"{n} {min(t):.2f}-{max(t):.2f}" for n, t in res.items()), flush=True)
    save_rows("gemv-fp8-b-build", rows)


if __name__ == "__main__":
    main()
