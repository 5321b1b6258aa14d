# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""2-4 W4A4 tokens on ``fp4_gemv_fp8_sm90`` (T = 2 or 4 accumulators a window, 16 columns each)
against the register-ring GEMV, and one token against the previous build of the kernel.

1. Oracle checks with a NaN-poisoned fp32 output: M = 1..4 at ragged N, window counts that are
   not powers of two, every split, both nibble orders, fp16 output with alpha from a device
   tensor; NaN scale bytes. A failing case stops the script before any timing.
2. CUDA-graph medians over weight copies that fill 3x the L2, three rounds, at the decode shapes:
   the ring (``fp4_gemv_sm90``, its own heuristic) and the fp8 GEMV at every split leaving at
   most 8 windows a CTA. Usage on an sm_90 machine: ``python scripts/gpu_gemv_fp8_tokens.py``
   (JSON to $OUT or .)."""

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
from fp4mm.kernels import fp4_gemv_sm90 as V  # noqa: E402

# the one-token kernel before session 22 (its 'head' rows), when copied in first:
# git show 1ca556a:fp4mm/kernels/fp4_gemv_fp8_sm90.py > scripts/_gemv_fp8_head.py
try:
    import _gemv_fp8_head as F0
except ImportError:
    F0 = None

SHAPES = ((18432, 3072), (8192, 8192), (3072, 3072), (14336, 4096), (28672, 4096),
          (4096, 4096))


def correctness():
    n = 0
    for M in (1, 2, 3, 4):
        for N, K in ((64, 256), (200, 512), (77, 1280), (4099, 3072), (130, 8192)):
            w = K // F.WINDOW
            for split in [s for s in range(1, w + 1) if w % s == 0 and w // s <= 32][:4]:
                for order in ("low_first", "high_first"):
                    xq, xs, wq, ws = gen(M, N, K, seed=1000 * M + N + K + split)
                    o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
                    F.gemv_fp8_sm90(xq, xs, wq, ws, 1 / 64, o, split=split)
                    ok, rel, _ = check(o, xq, xs, wq, ws, 1 / 64, order)
                    n += 1
                    if not ok:
                        raise SystemExit(f"FAIL M={M} {N}x{K} split {split} {order}: rel {rel}")
        # fp16 out, alpha from a device tensor, unsplit and split
        xq, xs, wq, ws = gen(M, 333, 2048, seed=M)
        for split in (1, 4):
            o = torch.full((M, 333), float("nan"), dtype=torch.float16, device="cuda")
            F.gemv_fp8_sm90(xq, xs, wq, ws, torch.tensor([0.25], device="cuda"), o, split=split)
            ok, rel, _ = check(o, xq, xs, wq, ws, 0.25, "low_first")
            n += 1
            if not ok:
                raise SystemExit(f"FAIL fp16/device alpha M={M} split {split}: rel {rel}")
        # NaN scale bytes: exactly the outputs that read them
        xq, xs, wq, ws = gen(M, 128, 512, seed=7 + M)
        ws[5, 3] = 0x7F
        xs[M - 1, 20] = 0xFF
        o = torch.zeros((M, 128), dtype=torch.float32, device="cuda")
        F.gemv_fp8_sm90(xq, xs, wq, ws, 1.0, o, split=2)
        ref = reference.nvfp4_mm(xq, xs, wq, ws, 1.0)
        if not torch.equal(torch.isnan(o), torch.isnan(ref)):
            raise SystemExit(f"FAIL NaN pattern M={M}")
        n += 1
    print(f"correctness: {n} checks passed", flush=True)


def main():
    correctness()
    alpha, order = 1 / 64, "low_first"
    rows = []
    for M in (1, 2, 3, 4):
        for N, K in SHAPES:
            xq, xs, wq0, ws0 = gen(M, N, K, seed=N + K + M)
            copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
            wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
            windows = K // F.WINDOW
            pick = F.choose_split(N, K, M)  # (run 1 and 2 printed the one-token pick)
            cands = [("ring", None)] + [(f"fp8/split{s}", s) for s in range(1, windows + 1)
                                        if windows % s == 0 and windows // s <= 8]
            if M == 1 and F0 is not None:
                cands.append((f"head/split{pick}", pick))
            res = {}
            for name, split in cands:
                def run(i, o):
                    w, s = wl[i]
                    if split is None:
                        V.gemv_sm90(xq, xs, w, s, alpha, order, o)
                    elif name.startswith("head"):
                        F0.gemv_fp8_sm90(xq, xs, w, s, alpha, o, split=split)
                    else:
                        F.gemv_fp8_sm90(xq, xs, w, s, alpha, o, split=split)
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
                                 copies=copies, correct=True, rule=split == pick))
            best = min((t, n) for n, t in res.items() if n.startswith("fp8"))
            print(f"M={M} {N}x{K}: ring {res['ring']:.2f} | rule split{pick} "
                  f"{res[f'fp8/split{pick}']:.2f} | best {best[1]} {best[0]:.2f} | "
                  + "  ".join(f"{n} {t:.2f}" for n, t in res.items() if n != "ring"), flush=True)
    save_rows("gemv-fp8-tokens", rows)


if __name__ == "__main__":
    main()
