# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Stream mode of ``fp4_gemv_fp8_sm90`` (G CTAs, each a contiguous run of the flattened
(row block, window) list, runs crossing row blocks) against its split-K grid, same run.

Why: at 18432 x 3072 the split grid gives 576 CTAs (split 2, 1.09 waves of 528 resident) or 864
(split 3, 1.64 waves); with 2-4 tokens the tail costs 7-8% (session 22). Equal runs on exactly
the resident CTAs have no tail.

1. Oracle checks with NaN-poisoned output: M = 1..4, ragged N, several CTA counts (runs that
   cross row blocks, up to 11 partial slices), both nibble orders, NaN scale bytes, fp16 out
   with alpha from a device tensor. A failing case stops the script before any timing.
2. CUDA-graph medians over weight copies that fill 3x the L2, three rounds, at the decode
   shapes for M = 1, 2, 4: the split rule, every split leaving <= 8 windows, and stream mode at
   several CTA counts (run 2: the four wide shapes, splits 2, 3 and the rule's, and four
   tokens also capped at 128 registers). Usage on an sm_90 machine, with the kernel of commit
   f4f0cfe (run 2; run 1 had 782af20's; stream mode was removed after this probe): ``git show
   f4f0cfe:fp4mm/kernels/fp4_gemv_fp8_sm90.py > fp4mm/kernels/fp4_gemv_fp8_sm90.py``, then
   ``python scripts/gpu_gemv_fp8_stream.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm import reference  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402

SHAPES = ((18432, 3072), (8192, 8192), (14336, 4096), (28672, 4096))
SMS = torch.cuda.get_device_properties(0).multi_processor_count


def valid_ctas(N, K, cands):
    out = []
    for g in cands:
        try:
            F.stream_plan(N, K, g)
        except ValueError:
            continue
        out.append(g)
    return out


def correctness():
    n = 0
    for M in (1, 2, 3, 4):
        for N, K in ((64, 256), (200, 512), (77, 1280), (4099, 3072), (130, 8192), (1000, 2048)):
            wtot = -(-N // F.ROWS) * (K // F.WINDOW)
            for g in valid_ctas(N, K, sorted({1, 2, 3, 5, 7, 13, wtot // 3, wtot // 2, wtot - 1,
                                              wtot})):
                for order in ("low_first", "high_first"):
                    xq, xs, wq, ws = gen(M, N, K, seed=1000 * M + N + K + g)
                    o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
                    F.gemv_fp8_sm90(xq, xs, wq, ws, 1 / 64, o, ctas=g)
                    ok, rel, _ = check(o, xq, xs, wq, ws, 1 / 64, order)
                    n += 1
                    if not ok:
                        raise SystemExit(f"FAIL M={M} {N}x{K} ctas {g} "
                                         f"{F.stream_plan(N, K, g)} {order}: rel {rel}")
        xq, xs, wq, ws = gen(M, 333, 2048, seed=M)
        o = torch.full((M, 333), float("nan"), dtype=torch.float16, device="cuda")
        F.gemv_fp8_sm90(xq, xs, wq, ws, torch.tensor([0.25], device="cuda"), o, ctas=7)
        ok, rel, _ = check(o, xq, xs, wq, ws, 0.25, "low_first")
        n += 1
        if not ok:
            raise SystemExit(f"FAIL fp16/device alpha M={M}: rel {rel}")
        xq, xs, wq, ws = gen(M, 128, 512, seed=7 + M)
        ws[5, 3] = 0x7F
        xs[M - 1, 20] = 0xFF
        o = torch.zeros((M, 128), dtype=torch.float32, device="cuda")
        F.gemv_fp8_sm90(xq, xs, wq, ws, 1.0, o, ctas=3)
        ref = reference.nvfp4_mm(xq, xs, wq, ws, 1.0)
        if not torch.equal(torch.isnan(o), torch.isnan(ref)):
            raise SystemExit(f"FAIL NaN pattern M={M}")
        n += 1
    print(f"correctness: {n} checks passed", flush=True)


def main():
    correctness()
    alpha, order = 1 / 64, "low_first"
    rows = []
    for M in (1, 2, 4):
        for N, K in SHAPES:
            xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
            copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
            wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
            windows = K // F.WINDOW
            pick = F.choose_split(N, K, M)
            cands = [(f"split{s}", dict(split=s)) for s in range(1, windows + 1)
                     if windows % s == 0 and windows // s <= 8 and s in (pick, 2, 3)]
            cands += [(f"stream{g}", dict(ctas=g))
                      for g in valid_ctas(N, K, [SMS * k for k in (3, 4, 5, 8)])]
            if M > 2:
                cands += [(f"stream{g}/maxnreg128", dict(ctas=g, maxnreg=128))
                          for g in valid_ctas(N, K, [SMS * k for k in (4, 8)])]
            res = {}
            for name, kw in cands:
                def run(i, o):
                    F.gemv_fp8_sm90(xq, xs, wl[i][0], wl[i][1], alpha, o, **kw)
                o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
                run(0, o)
                torch.cuda.synchronize()
                if not check(o, xq, xs, wq0, ws0, alpha, order)[0]:
                    raise SystemExit(f"FAIL M={M} {N}x{K} {name}")
                out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                ts = [time_graph([lambda i=i: run(i, out) for i in range(copies)])
                      for _ in range(3)]
                res[name] = min(t[0] for t in ts)
                rows.append(dict(M=M, N=N, K=K, variant=name, median_us=[t[0] for t in ts],
                                 min_us=min(t[1] for t in ts), max_us=max(t[2] for t in ts),
                                 copies=copies, correct=True, rule=name == f"split{pick}",
                                 plan=F.stream_plan(N, K, kw["ctas"]) if "ctas" in kw else None))
            best_s = min((t, n) for n, t in res.items() if n.startswith("stream"))
            print(f"M={M} {N}x{K}: rule split{pick} {res[f'split{pick}']:.2f} | best stream "
                  f"{best_s[1]} {best_s[0]:.2f} | "
                  + "  ".join(f"{n} {t:.2f}" for n, t in res.items()), flush=True)
    save_rows("gemv-fp8-stream", rows)


if __name__ == "__main__":
    main()
