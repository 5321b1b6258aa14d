# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Is the 16-token decode bound by how its CTAs fall on the SMs? (session 38)

At 16 x 18432 x 3072 the TMA-fed GEMV's rule launches 576 CTAs (288 row blocks of 64 rows, K
split 2) on 132 SMs: 48 SMs hold five, 84 hold four. Session 28's per-CTA timeline (H100) found
the SMs' compute, not the stream, setting the time after the first chunk: CTAs on SMs holding
more CTAs ended later. If that holds, the time follows the busiest SM's CTA count, not the
bytes: N = 16896 (528 CTAs, 4 an SM) should take about 4/5 of N = 21120 (660, 5 an SM), and
18432 about as long as 21120. If the stream sets it, time follows N.

Times each kernel's shipped rule (no forced config) on N in ``NS`` at K = 3072 and 16 tokens
(and the ring at 1 and 4 for W4A4 as controls), oracle-checked first with a NaN-poisoned output,
CUDA-graph medians over 4 weight copies, 3 rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_balance_probe.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.backend import sm_count  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from fp4mm.kernels.host import cdiv  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402

K = 3072
NS = (12672, 16896, 18432, 19008, 21120, 25344)  # 3, 4, 4.36, 4.5, 5, 6 CTAs an SM (rule, 16 tok)
CASES = [  # (name, op, x dtype, M, group)
    ("nvfp4_w4a16_bf16_tma", "nvfp4_w4a16_mm", torch.bfloat16, 16, None),
    ("w4a16_g32_fp16_tma", "w4a16_mm", torch.float16, 16, 32),
    ("w4a4_ring", "nvfp4_mm", None, 16, None),
]


def describe(name, M, N, gs):
    if name.endswith("tma"):
        c = T.choose_config(M, N, K, gs)
        rows = 16 * c.row_tiles * c.warps
        split = min(c.split_k, K // T.KCHUNK)
        return f"tma r{c.row_tiles}w{c.warps}s{split}", cdiv(N, rows) * split
    c = S.choose_config(M, N, K, True)
    return f"ring w{c.num_warps}s{c.split_k}r{c.row_tiles}", None


def main():
    sms = sm_count(torch.device("cuda"))
    rows = []
    path = gpu_decode.result_path("gemv-balance-probe")
    for name, op, dt, M, gs in CASES:
        timed = {}
        for N in NS:
            p = Problem(op, M, N, K, group=gs or 16, dtype=dt or torch.float16, copies=4)
            out = torch.empty((M, N), dtype=dt or torch.float16, device="cuda")
            xs = p.x[1] if op == "nvfp4_mm" else None
            al = 1.0 if gs else p.alpha

            def run(i, o, p=p, xs=xs, al=al):
                if name.endswith("tma"):
                    T.gemv_tma_sm90(p.x[0], *p.w[i], al, "low_first", o, group_size=gs)
                else:
                    S.gemv_sm90(p.x[0], xs, *p.w[i], al, "low_first", o, group_size=gs)

            o = torch.full_like(out, float("nan"))
            run(0, o)
            ok, err = close(o, p.reference(0))
            if not ok:
                raise SystemExit(f"FAIL {name} N={N} err={err}")
            timed[N] = (p, out, run)
        again = gpu_decode.rounds({N: lambda p=p, out=out, run=run: time_graph(
            [lambda i=i: run(i, out) for i in range(4)])[0]
            for N, (p, out, run) in timed.items()})
        for N in NS:
            p = timed[N][0]
            t = sorted(again[N])[1]
            cfg, ctas = describe(name, M, N, gs)
            mb = p.bytes_moved(dt or torch.float16) / 1e6
            rows.append(dict(case=name, op=op, M=M, N=N, K=K, config=cfg, ctas=ctas,
                             ctas_per_sm=None if ctas is None else ctas / sms, median_us=t,
                             rounds_us=again[N], mb=mb, ns_per_mb=1000 * t / mb))
            per = "" if ctas is None else f"{ctas / sms:.2f}"
            print(f"{name:22s} N={N:6d} {cfg:14s} ctas={ctas} ({per}/SM) {t:7.2f} us  "
                  f"{1000 * t / mb:6.1f} ns/MB  {mb / t:7.1f} GB/s", flush=True)
        gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
