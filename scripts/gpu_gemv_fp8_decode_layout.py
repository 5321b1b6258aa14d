# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""The E4M3-wgmma GEMV on weights in the decode layout (5 bit ops a word instead of 7) against
the same kernel on raw weights, same run.

The decode layout moves bits inside each weight byte (a 256-entry table, once per weight): the
high nibble's code lands on its E4M3 bits (sign 7, magnitude 4-2), the low one's sign on bit 5
and its magnitude on bits 6, 1, 0. Then ``hi = w & 0x9C9C9C9C`` and
``lo = ((w << 2) & 0x8C8C8C8C) | ((w >> 2) & 0x10101010)``.

1. Oracle checks with NaN-poisoned output: M = 1..4, ragged N, several splits, both nibble
   orders, NaN scale bytes. A failing case stops the script before any timing.
2. CUDA-graph medians over weight copies that fill 3x the L2, three rounds: raw at the rule's
   split, the decode layout at every split leaving <= 8 windows, and (T = 4, where the layout
   compiles to 137 registers) capped at 128 registers.
Usage on an sm_90 machine, with the kernel of commit 25eafbf (its DECODE_LAYOUT switch was removed
after this probe): ``git show 25eafbf:fp4mm/kernels/fp4_gemv_fp8_sm90.py > fp4mm/kernels/fp4_gemv_fp8_sm90.py``,
then ``python scripts/gpu_gemv_fp8_decode_layout.py`` (JSON to $OUT)."""

from __future__ import annotations

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm import reference  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402
from fp4mm.kernels.alpha import alpha_args  # noqa: E402
from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402

SHAPES = ((18432, 3072), (8192, 8192), (14336, 4096), (28672, 4096), (3072, 3072),
          (4096, 4096))


def decode_layout_table() -> torch.Tensor:
    b = torch.arange(256, dtype=torch.int32)
    t = ((b & 0x80) | (((b >> 4) & 7) << 2) | (((b >> 3) & 1) << 5) | (((b >> 2) & 1) << 6)
         | (b & 3))
    return t.to(torch.uint8)


TABLE = decode_layout_table()


def to_decode_layout(w_q):
    return TABLE.to(w_q.device)[w_q.long()]


def launch(x_q, x_scales, w_q, w_scales, alpha, out, split, decode_layout, maxnreg=None):
    N, K = w_q.shape[0], w_q.shape[1] * 2
    M = x_q.shape[0]
    wins = K // F.WINDOW // split
    dst = (torch.empty((split, M, N), dtype=torch.float32, device=out.device) if split > 1
           else out)
    a, alpha_ptr, on_dev = alpha_args(alpha, out)
    opts = {} if maxnreg is None else {"maxnreg": maxnreg}
    F._fp4_gemv_fp8_sm90_kernel[(triton.cdiv(N, F.ROWS), split)](
        w_q.view(torch.int32), w_scales.view(torch.uint8), x_q.view(torch.int32),
        x_scales.view(torch.uint8), dst, M, N, K // 16, K // 8, a, alpha_ptr,
        WINS=wins, TP=triton.next_power_of_2(8 * wins), T=F.tokens_per_cta(M),
        PARTIAL=split > 1, ALPHA_PTR=on_dev and split == 1, DECODE_LAYOUT=decode_layout,
        num_warps=4, launch_pdl=True, **opts)
    if split > 1:
        reduce_partials(dst, out, alpha, pdl=True)


def correctness():
    n = 0
    for M in (1, 2, 3, 4):
        for N, K in ((64, 256), (200, 512), (77, 1280), (4099, 3072), (130, 8192)):
            w = K // F.WINDOW
            for split in [s for s in range(1, w + 1) if w % s == 0 and w // s <= 32][:3]:
                for order in ("low_first", "high_first"):
                    xq, xs, wq, ws = gen(M, N, K, seed=1000 * M + N + K + split)
                    for maxnreg in ((None, 128) if M > 2 else (None,)):
                        o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
                        launch(xq, xs, to_decode_layout(wq), ws, 1 / 64, o, split, True, maxnreg)
                        ok, rel, _ = check(o, xq, xs, wq, ws, 1 / 64, order)
                        n += 1
                        if not ok:
                            raise SystemExit(f"FAIL M={M} {N}x{K} split {split} {order} "
                                             f"maxnreg {maxnreg}: rel {rel}")
        xq, xs, wq, ws = gen(M, 128, 512, seed=7 + M)
        ws[5, 3] = 0x7F
        xs[M - 1, 20] = 0xFF
        o = torch.zeros((M, 128), dtype=torch.float32, device="cuda")
        launch(xq, xs, to_decode_layout(wq), ws, 1.0, o, 2, True)
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
            raw = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
            lay = [(to_decode_layout(w), s) for w, s in raw]
            windows = K // F.WINDOW
            pick = F.choose_split(N, K, M)
            splits = [s for s in range(1, windows + 1) if windows % s == 0 and windows // s <= 8]
            cands = [(f"raw/split{pick}", pick, False, None)]
            cands += [(f"layout/split{s}", s, True, None) for s in splits]
            if M == 4:
                cands += [(f"layout128/split{s}", s, True, 128) for s in splits]
            res = {}
            for name, split, dl, maxnreg in cands:
                wl = lay if dl else raw

                def run(i, o):
                    launch(xq, xs, wl[i][0], wl[i][1], alpha, o, split, dl, maxnreg)
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
            best = min((t, n) for n, t in res.items() if n.startswith("layout"))
            print(f"M={M} {N}x{K}: raw split{pick} {res[f'raw/split{pick}']:.2f} | layout same "
                  f"split {res[f'layout/split{pick}']:.2f} | best {best[1]} {best[0]:.2f} | "
                  + "  ".join(f"{n} {t:.2f}" for n, t in res.items()), flush=True)
    save_rows("gemv-fp8-decode-layout", rows)


if __name__ == "__main__":
    main()
