"""Probe: L2 prefetch of each GEMV program's first K steps *before* its PDL wait
(``GemvSM90Config.l2_lead``), against the heuristic config, at the decode bars' shapes; every
variant checked against the oracle first, then CUDA-graph medians over 4 weight copies, variants
interleaved and repeated. ``--force-pdl`` variants also launch split-1 configs with PDL (so the
next call's programs start early and can prefetch). Usage on an sm_90 machine:
``python scripts/gpu_gemv_l2_lead.py`` (writes JSON to $OUT or .)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

OUT = os.environ.get("OUT", ".")
CASES = [(op, dt, M, N, K) for op, dt in (("nvfp4_mm", None), ("nvfp4_w4a16_mm", torch.float16),
                                          ("nvfp4_w4a16_mm", torch.bfloat16),
                                          ("w4a16_mm", torch.float16))
         for M, N, K in ((1, 18432, 3072), (4, 18432, 3072), (16, 18432, 3072), (1, 8192, 8192))]
_DEFAULT_PDL = S._uses_pdl


def variants(heur, steps_per_split):
    v = [("heur", heur, False)]
    for lead in (2, steps_per_split):
        v.append((f"lead{lead}", dataclasses.replace(heur, l2_lead=lead), False))
    for lead in (2, steps_per_split):
        v.append((f"lead{lead}+pdl", dataclasses.replace(heur, l2_lead=lead), True))
    return v


def main():
    rows = []
    for op, dt, M, N, K in CASES:
        g = 32 if op == "w4a16_mm" else 16
        p = Problem(op, M, N, K, group=g, dtype=dt or torch.float16, copies=4)
        gs = g if op == "w4a16_mm" else None
        xs = p.x[1] if op == "nvfp4_mm" else None
        al = 1.0 if gs else p.alpha
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        heur = S.choose_config(M, N, K, xs is not None, gs)
        split, per, _ = S._plan(K // S.KS, heur)
        line = []
        res = {}
        for rep in range(2):
            for name, cfg, pdl in variants(heur, per):
                S._uses_pdl = (lambda *a: True) if pdl else _DEFAULT_PDL
                try:
                    if rep == 0:
                        o = torch.full_like(out, float("nan"))
                        S.gemv_sm90(p.x[0], xs, *p.w[0], al, "low_first", o, config=cfg,
                                    group_size=gs)
                        if not close(o, p.reference(0))[0]:
                            print(f"FAIL (not timed) {op} {dt} M={M} {name}", flush=True)
                            continue
                    t = time_graph([lambda i=i, cfg=cfg: S.gemv_sm90(
                        p.x[0], xs, *p.w[i], al, "low_first", out, config=cfg, group_size=gs)
                        for i in range(4)])
                finally:
                    S._uses_pdl = _DEFAULT_PDL
                res.setdefault(name, []).append(t[0])
                rows.append(dict(op=op, x=str(dt), group=gs, M=M, N=N, K=K, variant=name,
                                 config=str(cfg), force_pdl=pdl, rep=rep, median_us=t[0],
                                 min_us=t[1], max_us=t[2]))
        nbytes = p.weight_bytes()
        for name, ts in res.items():
            line.append(f"{name} {min(ts):.2f}/{max(ts):.2f}")
        best = min(min(ts) for ts in res.values())
        print(f"{op:15s} {str(dt):14s} M={M:2d} N={N} K={K} split={split} "
              f"[best {best:.2f} us = {nbytes / best / 1e6:.2f} TB/s]: " + "  ".join(line),
              flush=True)
    path = os.path.join(OUT, f"gemv_l2_lead_{datetime.datetime.now():%Y%m%d-%H%M%S}.json")
    json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
              open(path, "w"), indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
