# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Two W4A4 tokens on the E4M3 GEMV: the two-token kernel (T = 2) against the four-token one
(T = 4, the last two token columns zero; in halves where that fits one wave), session 25.

After the evict-first weight loads the bench timed two tokens slower than four at 18432 x 3072
(15.13 vs 14.35 us, ``20261127-132750``): T = 2 takes split 3 there (864 CTAs at 4 an SM), T = 4
split 2 in halves (576 CTAs at 5 an SM, one wave). Variants per shape: the shipped T = 2 with
its rule's split, T = 2 at each split the rule may pick, and T = 4 with its rule (a patched copy
of the module whose ``tokens_per_cta(2)`` is 4). Oracle checks with a NaN-poisoned output
first, then CUDA-graph medians over weight copies that fill 3x the L2, 3 rotating rounds.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_fp8_two_tokens.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F0  # noqa: E402

SHAPES = ((18432, 3072), (8192, 8192), (14336, 4096), (4096, 4096))


def main():
    F4 = patched_module("fp8_two_as_four", open(F0.__file__).read(), [
        ("return 1 if M == 1 else 2 if M == 2 else 4", "return 1 if M == 1 else 4")])
    rows = []
    for N, K in SHAPES:
        xq, xs, _, _ = gen(2, N, K, seed=N + K)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        ws = [gen(1, N, K, seed=N + K + 1 + i)[2:] for i in range(copies)]
        windows = K // F0.WINDOW
        rule = F0.choose_split(N, K, 2)
        splits = [s for s in (1, 2, 3, 4, 6, 8) if windows % s == 0 and windows // s <= 8]
        variants = {f"T2 rule (split {rule})": (F0, None)}
        variants |= {f"T2 split {s}": (F0, s) for s in splits if s != rule}
        variants[f"T4 rule (split {F4.choose_split(N, K, 2)}, halves "
                 f"{F4.uses_halves(N, 2, F4.choose_split(N, K, 2))})"] = (F4, None)
        out = torch.empty((2, N), dtype=torch.float16, device="cuda")
        for name, (mod, split) in variants.items():
            o = torch.full_like(out, float("nan"))
            mod.gemv_fp8_sm90(xq, xs, *ws[0], 0.37, o, split=split)
            if not check(o, xq, xs, *ws[0], 0.37, "low_first")[0]:
                raise SystemExit(f"FAIL {N}x{K} {name}")
        names = list(variants)
        res = {k: [] for k in names}
        for r in range(3):
            for name in names[r % len(names):] + names[:r % len(names)]:
                mod, split = variants[name]
                t = time_graph([lambda i=i: mod.gemv_fp8_sm90(xq, xs, *ws[i], 0.37, out,
                                                               split=split)
                                for i in range(copies)])
                res[name].append(t[0])
                rows.append(dict(N=N, K=K, M=2, variant=name, round=r, median_us=t[0],
                                 min_us=t[1], max_us=t[2], copies=copies))
        print(f"{N}x{K}: " + " | ".join(f"{k} {sorted(v)[1]:.2f}" for k, v in res.items()),
              flush=True)
    save_rows("gemv-fp8-two-tokens", rows)


if __name__ == "__main__":
    main()
