"""What the split-K reduce launch costs the decode GEMV (fp4_gemv_sm90) at the decode-bar rows.

The GEMV writes fp32 partials and a second kernel (``fp4_gemv.reduce_partials``, launched with
programmatic dependent launch) sums them. An in-kernel sum (the last split of a row tile sums
all partials, ticketed by an atomic counter, as the Gluon GEMM does for its pairs) would remove
that launch. Upper bound on the gain: the GEMV timed with the reduce skipped (its output is then
wrong, so this is timing only; the full call is checked against the oracle first).

Usage (sm_90): ``python scripts/gpu_gemv_reduce_cost.py`` (writes $OUT or .): CUDA-graph
medians over 4 weight copies, N x K = 18432 x 3072 and 8192 x 8192.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402


def main():
    rows = []
    real_reduce = fp4_gemv.reduce_partials
    for op, ms in (("nvfp4_mm", (1, 4, 16)), ("nvfp4_w4a16_mm", (1, 4))):
        for N, K in ((18432, 3072), (8192, 8192)):
            for M in ms:
                p = Problem(op, M, N, K, copies=4)
                out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                cfg = S.choose_config(M, N, K, op == "nvfp4_mm")
                o = torch.full((M, N), float("nan"), device="cuda")
                run_new(p, 0, o, cfg)
                assert close(o, p.reference(0))[0], (op, M, N, K)
                fns = [lambda i=i, p=p, out=out, cfg=cfg: run_new(p, i, out, cfg)
                       for i in range(4)]
                full = time_graph(fns)[0]
                fp4_gemv.reduce_partials = lambda *a, **k: None
                try:
                    alone = time_graph(fns)[0]
                finally:
                    fp4_gemv.reduce_partials = real_reduce
                print(f"{op} {N}x{K} M={M} split {cfg.split_k}: GEMV + reduce {full:.2f} us, "
                      f"GEMV alone {alone:.2f} us (reduce {full - alone:+.2f})", flush=True)
                rows.append(dict(op=op, M=M, N=N, K=K, config=str(cfg), full=full, alone=alone))
    save_rows("gemv-reduce-cost", rows)


if __name__ == "__main__":
    main()
