# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Do the other decode GEMVs' split rules leave time on the shapes where the TMA GEMV's did
(session 38: 5120 x 5120, 6144 x 4096, 10240 x 8192, 5120 x 27648, 2048 x 2048, 1024 x 4096)?

Cases: W4A4 at 1 and 4 tokens on the E4M3 GEMV (``fp4_gemv_fp8_sm90``: its rule against every
divisor split of the windows); W4A4 at 16 tokens, bf16 x at 1 token and groups of 32 (fp16 x) at
1 and 4 tokens on the register ring (``fp4_gemv_sm90``: its rule against splits 1-8 of the same
config). Each checked against the fp32 oracle (NaN-poisoned output), then CUDA-graph medians
over 4 weight copies in 3 rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_other_splits.py`` (JSON to $OUT or .).

``--wide`` (session 39): the rules' own sweep over 18 layer shapes (Llama-3 8B / 70B, Qwen2.5
7B / 32B projections and the challenge's), W4A4 at 1, 2 and 4 tokens on the E4M3 GEMV and the
ring cases at splits up to 12; ``--part i/n`` times every n-th shape from the i-th (one device
call each).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

SHAPES = [(5120, 5120), (6144, 4096), (10240, 8192), (5120, 27648), (2048, 2048), (1024, 4096)]
WIDE_SHAPES = [(1024, 4096), (2048, 2048), (2048, 8192), (3072, 3072), (3584, 3584), (4096, 4096),
               (4608, 3584), (6144, 4096), (4096, 14336), (5120, 5120), (7168, 5120), (8192, 8192),
               (10240, 8192), (3584, 18944), (14336, 4096), (18432, 3072), (28672, 4096),
               (5120, 27648)]
CASES = [("w4a4_fp8", "nvfp4_mm", None, 1, None), ("w4a4_fp8", "nvfp4_mm", None, 4, None),
         ("w4a4_ring", "nvfp4_mm", None, 16, None),
         ("bf16_ring", "nvfp4_w4a16_mm", torch.bfloat16, 1, None),
         ("g32_ring", "w4a16_mm", torch.float16, 1, 32),
         ("g32_ring", "w4a16_mm", torch.float16, 4, 32)]
WIDE_CASES = CASES[:1] + [("w4a4_fp8", "nvfp4_mm", None, 2, None)] + CASES[1:]


def case_runner(fp8, op, dt, M, N, K, gs):
    """``(problem, out, run)`` for one decode case (4 weight copies): ``run(config, copy,
    out)`` launches the E4M3 GEMV (``fp8``: config is its split) or the register ring."""
    p = Problem(op, M, N, K, group=gs or 16, dtype=dt or torch.float16, copies=4)
    out = torch.empty((M, N), dtype=dt or torch.float16, device="cuda")
    xs = p.x[1] if op == "nvfp4_mm" else None
    al = 1.0 if gs else p.alpha

    def run(c, i, o):
        if fp8:
            F.gemv_fp8_sm90(p.x[0], xs, *p.w[i], al, o, split=c)
        else:
            S.gemv_sm90(p.x[0], xs, *p.w[i], al, "low_first", o, config=c, group_size=gs)
    return p, out, run


def variants(kind, M, N, K, gs, dt, max_split=8):
    if kind == "w4a4_fp8":
        windows = K // F.WINDOW
        rule = F.choose_split(N, K, M)
        return rule, {s: s for s in range(1, windows + 1)
                      if windows % s == 0 and s <= 2 * max_split and windows // s <= F.MAX_WINDOWS}
    rule = S.choose_config(M, N, K, kind == "w4a4_ring", gs, dt == torch.bfloat16)
    first = 3 if max_split > 8 else 1  # the wide sweep skips splits 1-2 (never best above)
    return rule, {s: dataclasses.replace(rule, split_k=s)
                  for s in range(first, min(max_split, K // S.KS) + 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wide", action="store_true")
    ap.add_argument("--part", default="0/1", help="i/n: every n-th shape from the i-th")
    args = ap.parse_args()
    i, n = (int(v) for v in args.part.split("/"))
    shapes, cases = (WIDE_SHAPES, WIDE_CASES) if args.wide else (SHAPES, CASES)
    path = gpu_decode.result_path("gemv-split-sweep" if args.wide else "gemv-other-splits")
    rows = []
    for N, K in shapes[i::n]:
        for kind, op, dt, M, gs in cases:
            p, out, run = case_runner(kind == "w4a4_fp8", op, dt, M, N, K, gs)
            rule, vs = variants(kind, M, N, K, gs, dt, 12 if args.wide else 8)
            cands = {"rule": rule} | {f"split{s}": c for s, c in vs.items() if c != rule}
            ref = p.reference(0)
            for name, c in list(cands.items()):
                o = torch.full_like(out, float("nan"))
                try:
                    run(c, 0, o)
                except Exception as e:  # noqa: BLE001  (a split the kernel refuses: skip it)
                    print(f"skip {kind} {name}: {str(e).splitlines()[0][:80]}", flush=True)
                    del cands[name]
                    continue
                if not close(o, ref)[0]:
                    raise SystemExit(f"FAIL {N}x{K} {kind} M={M} {name}")
            names = list(cands)
            times = gpu_decode.rounds({k: lambda k=k: time_graph([lambda i=i: run(cands[k], i, out)
                                                       for i in range(4)])[0] for k in names})
            med = {k: sorted(v)[1] for k, v in times.items()}
            best = min(med, key=med.get)
            rule_split = rule if kind == "w4a4_fp8" else rule.split_k
            rows.append(dict(N=N, K=K, M=M, kind=kind, op=op, rule_split=rule_split,
                             rounds_us=times, median_us=med, best=best))
            print(f"{N:6d}x{K:5d} {kind:9s} M={M:2d} rule(split {rule_split}) {med['rule']:6.2f}"
                  f" | best {best} {med[best]:6.2f} x{med['rule'] / med[best]:.3f}", flush=True)
            gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
