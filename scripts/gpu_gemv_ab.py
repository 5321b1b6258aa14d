"""A/B the Gluon decode GEMV (fp4mm/kernels/fp4_gemv_sm90.py) against an earlier copy of it, in
one run: ``python scripts/gpu_gemv_ab.py OLD_SOURCE.py [op:dtype:M ...]`` (writes $OUT or .).
The old source is a file (e.g. ``git show REV:fp4mm/kernels/fp4_gemv_sm90.py > old.py``; the
device copy's git metadata is stale). Both are checked against the fp32 oracle first, then
timed alternately, twice, in CUDA graphs over 4 weight copies at N = 18432, K = 3072 (their
heuristic configs).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

DT = {"fp16": torch.float16, "bf16": torch.bfloat16}


def main():
    old = patched_module("old_fp4_gemv_sm90", open(sys.argv[1]).read())
    cases = sys.argv[2:] or ["nvfp4_mm:fp16:1", "nvfp4_mm:fp16:4", "nvfp4_mm:fp16:16",
                             "nvfp4_mm:fp16:32", "nvfp4_w4a16_mm:fp16:1"]
    rows = []
    for c in cases:
        op, dt, M = c.split(":")
        p = Problem(op, int(M), 18432, 3072, dtype=DT[dt], copies=4)
        out = torch.empty((int(M), 18432), dtype=torch.float16, device="cuda")
        res = {}
        for name, mod in (("old", old), ("new", S)):
            o = torch.full((int(M), 18432), float("nan"), device="cuda")
            run_new(p, 0, o, None, mod=mod)
            ok, err = close(o, p.reference(0))
            res[name] = dict(ok=ok, err=err, us=[])
        for _ in range(2):
            for name, mod in (("old", old), ("new", S)):
                if res[name]["ok"]:
                    res[name]["us"].append(time_graph(
                        [lambda i=i, mod=mod: run_new(p, i, out, None, mod=mod)
                         for i in range(4)])[0])
        print(f"{c:24s} old {res['old']['us']} ok={res['old']['ok']} | new {res['new']['us']} "
              f"ok={res['new']['ok']}", flush=True)
        rows.append(dict(case=c, **{k: v for k, v in res.items()}))
    save_rows("gemv-ab", rows)


if __name__ == "__main__":
    main()
