"""Probe: does the decode GEMV lose time to SMs holding unequal CTA counts?

At N = 18432 the heuristic grid is 1152 CTAs, which 132 SMs can only hold as 8 or 9 each.
N = 16896 and 19008 (K = 3072, same configs) give 1056 and 1188 CTAs: exactly 8 and 9 per SM.
If the per-SM imbalance costs time, those two stream faster (GB/s) than 18432.
Usage (sm_90): ``python scripts/gpu_gemv_wave_balance.py`` (writes $OUT or .). Each config is
checked against the fp32 oracle first; CUDA-graph medians over 4 weight copies, two rounds.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

C = S.GemvSM90Config


def main():
    rows = []
    cases = [("nvfp4_w4a16_mm", torch.float16, C(2, 1, 2, 0, 1)),   # 32 rows a CTA, split 2
             ("nvfp4_w4a16_mm", torch.bfloat16, C(2, 1, 2, 0, 1)),
             ("nvfp4_mm", torch.float16, C(2, 1, 4, 0, 2))]          # 64 rows a CTA, split 4
    for op, dt, cfg in cases:
        for N in (16896, 18432, 19008):
            p = Problem(op, 1, N, 3072, dtype=dt, copies=4)
            nbytes = p.bytes_moved(torch.float16)
            ctas = -(-N // (16 * cfg.row_tiles * cfg.num_warps)) * cfg.split_k
            o = torch.full((1, N), float("nan"), dtype=torch.float32, device="cuda")
            run_new(p, 0, o, cfg)
            ok = close(o, p.reference(0))[0]
            out = torch.empty((1, N), dtype=torch.float16, device="cuda")
            ts = [time_graph([lambda i=i: run_new(p, i, out, cfg) for i in range(4)])[0]
                  for _ in range(2)] if ok else []
            rows.append(dict(op=op, dtype=str(dt), M=1, N=N, K=3072, config=str(cfg),
                             ctas=ctas, ctas_per_sm=ctas / 132, ok=ok, median_us=ts,
                             gbps=[nbytes / (t * 1e-6) / 1e9 for t in ts]))
            print(f"{op:15s} {str(dt)[6:]:8s} N={N} CTAs {ctas} ({ctas / 132:.2f}/SM) ok={ok}: "
                  + " ".join(f"{t:6.2f} us {nbytes / t / 1e3:5.0f} GB/s" for t in ts),
                  flush=True)
    save_rows("gemv-wave-balance", rows)


if __name__ == "__main__":
    main()
