"""GPU check-then-time script for the Gluon decode GEMV's one-launch split-K (session 9).

Usage on an sm_90 machine: ``python scripts/gpu_splitk_fused.py`` (writes $OUT or .).

1. Correctness of the ticket-counter reduce: many launches in a row on one stream with changing
   shapes and split counts (each must leave its counters at zero for the next), inside a CUDA
   graph replayed several times, then eagerly again; every output checked against the oracle.
2. Timing (CUDA-graph replay over 4 weight copies): for each decode case, configs with split
   1-4 under three split-K finishes measured in the same run: ``reduce`` (partials, then the
   separate reduce kernel: the shipped path before), ``cached`` (last-arrival reduce, counters
   zeroed once per stream), ``zeros`` (last-arrival reduce, counters zeroed per call by torch).
"""

from __future__ import annotations

import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

C = S.GemvSM90Config
OUT = os.environ.get("OUT", ".")
ROWS = []


def run(p, i, out, cfg):
    wq, ws = p.w[i]
    if p.op == "nvfp4_mm":
        S.gemv_sm90(p.x[0], p.x[1], wq, ws, p.alpha, p.order, out, config=cfg)
    elif p.op == "w4a16_mm":
        S.gemv_sm90(p.x[0], None, wq, ws, 1.0, p.order, out, config=cfg, group_size=p.group)
    else:
        S.gemv_sm90(p.x[0], None, wq, ws, p.alpha, p.order, out, config=cfg)


def correctness():
    bad = n = 0
    S._EXPERIMENT = "cached"
    probs = [Problem("nvfp4_mm", 5, 300, 640), Problem("nvfp4_w4a16_mm", 16, 1000, 3072),
             Problem("w4a16_mm", 3, 777, 1536, group=32), Problem("nvfp4_mm", 1, 4099, 1152),
             Problem("w4a16_mm", 8, 96, 512, group=128)]
    for rep in range(3):
        for p in probs:
            for sp in (2, 3, 4, 1, 5):
                for nw, rt in ((2, 1), (4, 2), (1, 1)):
                    out = torch.full((p.M, p.N), float("nan"), device="cuda")
                    run(p, 0, out, C(nw, 1 + (sp == 3), sp, 0, rt))
                    ok, err = close(out, p.reference(0))
                    n += 1
                    if not ok:
                        bad += 1
                        print(f"FAIL eager {p.op} M={p.M} N={p.N} split {sp} {nw},{rt}: {err:.3g}")
    # captured: two graphs on the default capture stream, replayed in turn, then eager again
    outs, graphs = [], []
    for p, sp in ((probs[0], 3), (probs[2], 2)):
        o = torch.full((p.M, p.N), float("nan"), device="cuda")
        run(p, 0, o, C(2, 1, sp))  # warm-up (compile) outside the capture
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(3):
                run(p, 0, o, C(2, 1, sp))
        outs.append((p, o))
        graphs.append(g)
    for _ in range(4):
        for g, (p, o) in zip(graphs[::-1], outs[::-1]):
            o.fill_(float("nan"))
            g.replay()
            ok, err = close(o, p.reference(0))
            n += 1
            bad += not ok
            if not ok:
                print(f"FAIL graph {p.op}: {err:.3g}")
    for p in probs:
        out = torch.full((p.M, p.N), float("nan"), device="cuda")
        run(p, 0, out, C(2, 1, 3))
        ok, err = close(out, p.reference(0))
        n += 1
        bad += not ok
    print(f"split-K correctness: {n - bad}/{n} passed", flush=True)
    return bad == 0


def bench():
    copies = 4
    cases = [("nvfp4_mm", 1, 18432, 3072, 16), ("nvfp4_mm", 4, 18432, 3072, 16),
             ("nvfp4_mm", 16, 18432, 3072, 16), ("nvfp4_w4a16_mm", 1, 18432, 3072, 16),
             ("nvfp4_w4a16_mm", 16, 18432, 3072, 16), ("nvfp4_w4a16_bf16", 1, 18432, 3072, 16),
             ("w4a16_mm", 1, 18432, 3072, 32), ("w4a16_mm", 16, 18432, 3072, 32),
             ("w4a16_mm", 1, 18432, 3072, 128), ("nvfp4_mm", 1, 8192, 8192, 16),
             ("nvfp4_w4a16_mm", 1, 8192, 8192, 16)]
    for op, M, N, K, g in cases:
        dt = torch.bfloat16 if op.endswith("bf16") else torch.float16
        p = Problem(op.replace("_bf16", ""), M, N, K, group=g, dtype=dt, copies=copies)
        nbytes = p.bytes_moved(torch.float16)
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        x_fp4 = op == "nvfp4_mm"
        heur = S.choose_config(M, N, K, x_fp4, g if op == "w4a16_mm" else None)
        rts = (1, 2) if op != "w4a16_mm" else (1,)
        cfgs = [C(2, 1, sp, 0, rt) for sp in (1, 2, 3, 4) for rt in rts]
        line = []
        for exp in ("reduce", "cached", "zeros"):
            S._EXPERIMENT = exp
            best = None
            for cfg in cfgs:
                if exp != "reduce" and cfg.split_k == 1:
                    continue  # split 1 has no reduce: timed once, under "reduce"
                o = torch.full_like(out, float("nan"))
                run(p, 0, o, cfg)
                if not close(o, p.reference(0))[0]:
                    print(f"  FAIL (not timed) {op} M={M} {exp} {cfg}")
                    continue
                t = time_graph([lambda i=i, cfg=cfg: run(p, i, out, cfg) for i in range(copies)])
                ROWS.append(dict(op=op, M=M, N=N, K=K, group=g, finish=exp, config=str(cfg),
                                 median_us=t[0], min_us=t[1], max_us=t[2],
                                 gbps=nbytes / (t[0] * 1e-6) / 1e9))
                if best is None or t[0] < best[1]:
                    best = (cfg, t[0])
            line.append(f"{exp} {best[1]:6.2f} (s{best[0].split_k} r{best[0].row_tiles})")
        print(f"{op:17s} g{g:3d} M={M:2d} N={N} K={K}: " + "; ".join(line)
              + f"  [{nbytes / 1e6:.1f} MB; heuristic s{heur.split_k} r{heur.row_tiles}]",
              flush=True)


def main():
    ok = correctness()
    if ok or "--force" in sys.argv:
        bench()
    path = os.path.join(OUT, f"splitk_fused_{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, correct=ok,
                   rows=ROWS), open(path, "w"), indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
