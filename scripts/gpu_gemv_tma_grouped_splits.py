# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Does the TMA GEMV's group-scale form (``w4a16_mm``) lose to its grid's quantisation where the
NVFP4 form did (session 38)? At 5-32 tokens of groups of 32, on the shapes whose split-K grid
left the NVFP4 form's last wave mostly empty, the rule's config against the same config at
every split 1-5.

Each config checked against the fp32 oracle with a NaN-poisoned output first (fp16 x and out),
then CUDA-graph medians over 4 weight copies in 3 rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_tma_grouped_splits.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

SHAPES = [(5120, 5120), (6144, 4096), (10240, 8192), (5120, 27648), (2048, 2048), (1024, 4096),
          (18432, 3072)]
TOKENS = (5, 8, 16, 32)
GROUP = 32


def main():
    path = gpu_decode.result_path("gemv-tma-grouped-splits")
    rows = []
    for N, K in SHAPES:
        for M in TOKENS:
            p = Problem("w4a16_mm", M, N, K, group=GROUP, dtype=torch.float16, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            ref = p.reference(0)
            rule = T.choose_config(M, N, K, GROUP)
            cfgs = {"rule": rule} | {f"split{k}": dataclasses.replace(rule, split_k=k)
                                     for k in range(1, 6) if k != rule.split_k}
            for name, cfg in cfgs.items():
                o = torch.full_like(out, float("nan"))
                T.gemv_tma_sm90(p.x[0], *p.w[0], 1.0, "low_first", o, config=cfg,
                                group_size=GROUP)
                if not close(o, ref)[0]:
                    raise SystemExit(f"FAIL {N}x{K} M={M} {name} {cfg}")
            names = list(cfgs)
            times = gpu_decode.rounds({k: lambda k=k: time_graph([
                lambda i=i: T.gemv_tma_sm90(p.x[0], *p.w[i], 1.0, "low_first", out,
                                            config=cfgs[k], group_size=GROUP)
                for i in range(4)])[0] for k in names})
            med = {k: sorted(v)[1] for k, v in times.items()}
            best = min(med, key=med.get)
            rows.append(dict(N=N, K=K, M=M, group=GROUP, rule=str(rule), rounds_us=times,
                             median_us=med, best=best))
            print(f"{N:6d}x{K:5d} M={M:2d} rule(s{rule.split_k} w{rule.warps}) "
                  f"{med['rule']:6.2f} | " + " ".join(f"{k} {med[k]:6.2f}" for k in names[1:])
                  + f" | best {best} x{med['rule'] / med[best]:.3f}", flush=True)
            gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
