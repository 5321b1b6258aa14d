# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The register ring's group-scale chains (``fp4_gemv_sm90``, 5-16 tokens of group 32) at split
3 where K >= 4096, against the shipped split rule (session 27).

The re-sweep (bench/results/2026-11-27-gemv-grouped-ring-resweep-h100.json) found split 3 5-9%
faster than the rule's split at 8192 x 8192 and 28672 x 4096 (9 and 16 tokens) and the rule best
at K = 3072. This checks the candidate on more shapes with K >= 4096, 5 / 9 / 16 tokens, fp16
and bf16 x, with 18432 x 3072 as the control (unchanged), each config oracle-checked first
(NaN-poisoned output), 3 rotating rounds of CUDA-graph medians over 4 weight copies.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_grouped_ring_split_verify.py`` (JSON to $OUT).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, rounds, time_graph  # noqa: E402


def main():
    rows = []
    shapes = [(14336, 4096), (4096, 4096), (8192, 8192), (28672, 4096), (4096, 14336),
              (18432, 3072)]
    cases = [(torch.float16, M, N, K) for M in (16, 9, 5) for N, K in shapes]
    cases += [(torch.bfloat16, 16, N, K) for N, K in shapes[:4]]
    for dt, M, N, K in cases:
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        rule = S.choose_config(M, N, K, False, 32, bf16_x=dt == torch.bfloat16)
        cands = {"rule": rule, "split 3": dataclasses.replace(rule, split_k=3)}
        fns = {}
        for name, cfg in cands.items():
            def run(i, o, cfg=cfg):
                S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o, config=cfg,
                            group_size=32)
            o = torch.full_like(out, float("nan"))
            run(0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL {name} {dt} M={M} {N}x{K}")
            fns[name] = (lambda run=run: time_graph([lambda i=i: run(i, out) for i in range(4)])[0])
        got = rounds(fns)
        med = {k: sorted(v)[1] for k, v in got.items()}
        rows.append(dict(dtype=str(dt), M=M, N=N, K=K, rule=str(rule), rounds=got, us=med))
        print(f"{str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} rule (split {rule.split_k}, "
              f"{rule.num_warps}w, group_cols {rule.group_cols}) {med['rule']:6.2f}  split 3 "
              f"{med['split 3']:6.2f}  ratio {med['split 3'] / med['rule']:.3f}", flush=True)
        with open(os.path.join(os.environ.get("OUT", "."), "gemv-grouped-ring-split-verify.json"),
                  "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                           rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
