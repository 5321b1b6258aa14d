# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Four W4A4 tokens on ``fp4_gemv_fp8_sm90`` with fewer registers, against the kernel before
(session 22's, copied in first: ``git show a019d3a:fp4mm/kernels/fp4_gemv_fp8_sm90.py >
scripts/_gemv_fp8_head.py``), same run.

- ``late``: the four accumulators' scales computed after the wgmma wait (112 registers, was 128).
- ``halves``: the window as two halves of 4 wgmmas, each waited for and scaled before the next
  half is issued (99 registers; 96 or 88 with ``maxnreg``, no spills: 5 CTAs an SM, so split 2
  at 18432 x 3072, 576 CTAs, fits one wave).
Oracle checks with NaN-poisoned output first, then CUDA-graph medians over weight copies that
fill 3x the L2, three rounds. Usage on an sm_90 machine: ``python
scripts/gpu_gemv_fp8_halves.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
import _gemv_fp8_head as H  # noqa: E402
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402
from fp4mm.kernels.alpha import alpha_args  # noqa: E402
from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402

SHAPES = ((18432, 3072), (14336, 4096), (8192, 8192), (28672, 4096))


def launch(mod, xq, xs, wq, ws, alpha, out, split, halves=None, maxnreg=None):
    N, K, M = wq.shape[0], wq.shape[1] * 2, xq.shape[0]
    wins = K // F.WINDOW // split
    dst = torch.empty((split, M, N), dtype=torch.float32, device=out.device) if split > 1 else out
    a, alpha_ptr, on_dev = alpha_args(alpha, out)
    extra = {} if halves is None else {"HALVES": halves}
    if maxnreg is not None:
        extra["maxnreg"] = maxnreg
    mod._fp4_gemv_fp8_sm90_kernel[(triton.cdiv(N, F.ROWS), split)](
        wq.view(torch.int32), ws, xq.view(torch.int32), xs, dst, M, N, K // 16, K // 8, a,
        alpha_ptr, WINS=wins, TP=triton.next_power_of_2(8 * wins), T=F.tokens_per_cta(M),
        PARTIAL=split > 1, ALPHA_PTR=on_dev and split == 1, num_warps=4, launch_pdl=True,
        **extra)
    if split > 1:
        reduce_partials(dst, out, alpha, pdl=True)


VARIANTS = {"head": (H, None, None), "late": (F, False, None), "halves": (F, True, None),
            "halves96": (F, True, 96)}


def main():
    n = 0
    for M in (3, 4):
        for N, K in ((77, 1280), (4099, 3072), (130, 8192)):
            for split in (1, 2):
                if (K // F.WINDOW) % split:
                    continue
                xq, xs, wq, ws = gen(M, N, K, seed=M + N + K + split)
                for name, (mod, halves, mr) in VARIANTS.items():
                    o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
                    launch(mod, xq, xs, wq, ws, 1 / 64, o, split, halves, mr)
                    ok, rel, _ = check(o, xq, xs, wq, ws, 1 / 64, "low_first")
                    n += 1
                    if not ok:
                        raise SystemExit(f"FAIL {name} M={M} {N}x{K} split {split}: rel {rel}")
    print(f"correctness: {n} checks passed", flush=True)
    rows = []
    for M in (4,):
        for N, K in SHAPES:
            xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
            copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
            wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
            windows = K // F.WINDOW
            splits = [s for s in (2, 3, 4) if windows % s == 0]
            res = {}
            for s in splits:
                for name, (mod, halves, mr) in VARIANTS.items():
                    def run(i, o):
                        launch(mod, xq, xs, wl[i][0], wl[i][1], 1 / 64, o, s, halves, mr)
                    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                    ts = [time_graph([lambda i=i: run(i, out) for i in range(copies)])
                          for _ in range(3)]
                    key = f"{name}/split{s}"
                    res[key] = min(t[0] for t in ts)
                    rows.append(dict(M=M, N=N, K=K, variant=key, median_us=[t[0] for t in ts],
                                     min_us=min(t[1] for t in ts), max_us=max(t[2] for t in ts),
                                     copies=copies, rule=s == F.choose_split(N, K, M)))
            print(f"M={M} {N}x{K}: " + "  ".join(f"{k} {v:.2f}" for k, v in res.items()),
                  flush=True)
    save_rows("gemv-fp8-halves", rows)


if __name__ == "__main__":
    main()
