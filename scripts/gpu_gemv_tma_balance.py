# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Is the TMA-fed GEMV at 16 tokens held back by CTAs spread unevenly over the SMs? (session 27)

The four-warp rule gives 18432 x 3072 432 CTAs of 4 chunks: 36 SMs hold four CTAs and 96 hold
three, so if each SM's issue rate bounds its time, the busiest SMs carry 22% more than the mean.
The probe times the same config on weights of 16896 rows (132 row blocks: 396 CTAs, exactly
three an SM, or at split 4 528 CTAs of 3 chunks, exactly four) and of 22528 rows (176 blocks:
528 CTAs at split 3), beside 18432, and reports microseconds per MB of weights. Equal cost per MB
says balance does not matter; a lower cost on the balanced grids bounds what an even split of
the work could gain at 18432 rows. Every config is oracle-checked first (NaN-poisoned output);
CUDA-graph medians over 4 weight copies, 3 rotating rounds.
``--compare``: the shipped rule against the same config with the balanced split
(``GemvTMAConfig.balanced``: each row block split s or s + 1 ways so that one wave fills every
SM's CTA slots), NVFP4 weights at 9 and 16 tokens and group-32 scales at 24 and 32 tokens, on
wide decode shapes, 3 rotating rounds, each oracle-checked first. The balanced split was not
kept (no faster: bench/results/2026-11-27-gemv-tma-balanced-h100.json); ``--compare`` runs
only at commit ef56c6d, which has it.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_balance.py [--compare]`` (JSON to
$OUT).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, close, rounds, time_graph  # noqa: E402

C = T.GemvTMAConfig


def compare():
    import dataclasses

    rows = []
    shapes = [(18432, 3072), (28672, 4096), (14336, 4096), (8192, 8192)]
    cases = [("nvfp4_w4a16_mm", torch.bfloat16, M, N, K) for M in (16, 9) for N, K in shapes]
    cases += [("nvfp4_w4a16_mm", torch.float16, 16, 18432, 3072)]
    cases += [("w4a16_mm", torch.float16, M, N, K) for M in (32, 24) for N, K in shapes]
    for op, dt, M, N, K in cases:
        group = 32 if op == "w4a16_mm" else None
        p = Problem(op, M, N, K, group=group or 16, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        rule = T.choose_config(M, N, K, group)
        cfgs = {"rule": dataclasses.replace(rule, balanced=False),
                "balanced": dataclasses.replace(rule, balanced=True)}
        fns = {}
        for name, cfg in cfgs.items():
            def run(i, o, cfg=cfg):
                T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg,
                                group_size=group)
            o = torch.full_like(out, float("nan"))
            run(0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL {op} {dt} M={M} {N}x{K} {cfg}")
            fns[name] = (lambda run=run: time_graph([lambda i=i: run(i, out) for i in range(4)])[0])
        got = rounds(fns)
        med = {k: sorted(v)[1] for k, v in got.items()}
        plan = T.split_plan(cfgs["balanced"], N, K // 256, 16 if M <= 16 else 32,
                            T.sm_count(0), group is not None)
        rows.append(dict(op=op, dtype=str(dt), M=M, N=N, K=K, rule=str(rule), plan=plan,
                         rounds=got, us=med))
        print(f"{op:15s} {str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} rule {med['rule']:6.2f}  "
              f"balanced {med['balanced']:6.2f} (plan {plan})  ratio "
              f"{med['balanced'] / med['rule']:.3f}", flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gemv-tma-balanced.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)


def main():
    if "--compare" in sys.argv:
        return compare()
    rows = []
    K, M = 3072, 16
    cases = [(18432, C(2, 2, 3, 4)), (16896, C(2, 2, 3, 4)), (16896, C(2, 2, 4, 4)),
             (22528, C(2, 2, 3, 4)), (18432, C(2, 2, 4, 4)), (18432, C(2, 2, 2, 4))]
    for dt in (torch.bfloat16, torch.float16):
        probs = {N: Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
                 for N in {n for n, _ in cases}}
        fns = {}
        for N, cfg in cases:
            p = probs[N]
            out = torch.empty((M, N), dtype=dt, device="cuda")

            def run(i, o, p=p, cfg=cfg):
                T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg)
            o = torch.full_like(out, float("nan"))
            run(0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL {dt} N={N} {cfg}")
            key = f"{N} k{cfg.split_k}"
            fns[key] = (lambda run=run, out=out: time_graph(
                [lambda i=i: run(i, out) for i in range(4)])[0])
        got = rounds(fns)
        for key, v in got.items():
            N = int(key.split()[0])
            us = sorted(v)[1]
            mb = probs[N].weight_bytes() / 1e6
            ctas = -(-N // 128) * int(key.split()[1][1:])
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, cfg=key, ctas=ctas, rounds=v, us=us,
                             us_per_mb=us / mb))
            print(f"{str(dt)[6:]:8s} {key:9s} CTAs {ctas:4d} ({ctas / 132:4.2f}/SM)  {us:6.2f} us"
                  f"  {us / mb * 1000:6.1f} ns/MB", flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gemv-tma-balance.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)


if __name__ == "__main__":
    main()
