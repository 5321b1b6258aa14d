# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The TMA-fed decode GEMV (``fp4_gemv_tma_sm90``) with several warps per CTA sharing one x
stage, against the shipped one-warp CTAs (NVFP4 weights, 16-bit x, 9-32 tokens).

Why (session 27): with one warp per CTA and 32 weight rows, every CTA copies the whole x slice
of its K range: at 16 tokens of 18432 x 3072 that is 576 CTAs x 96 KB = 57 MB from L2 against
28 MB of weights, and the x box (8 KB a stage) is most of each CTA's shared memory, which caps
the SM at about five one-warp CTAs. W warps per CTA (each its own 16 or 32 rows) share one x
stage: x traffic / W, and more warps per SM for the same shared memory.

1. Correctness: every config of the sweep checked against the oracle (NaN-poisoned fp32 and
   16-bit outputs) at ragged shapes, both orders; any failure stops the run.
2. Timing (CUDA-graph medians over 4 weight copies): the sweep (warps 1/2/4 x row tiles 1/2 x
   stages 2-4 x split 1-4) at the decode rows, then the shipped heuristic and the best three in
   3 rotating rounds.
3. ``--verify``: the shipped rule (``choose_config``) against the one-warp rule before it and two
   neighbours (two warps; one more stage) at 9, 12 and 16 tokens on seven decode shapes, in 3
   rotating rounds each (each config oracle-checked first).
Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_warps.py [--quick | --verify]`` (JSON
to $OUT).
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, close, rounds, time_graph  # noqa: E402

C = T.GemvTMAConfig
ALL = [C(rt, st, sp, w) for w in (1, 2, 4) for rt in (1, 2) for st in (2, 3, 4)
       for sp in (1, 2, 3, 4)]


def save(rows):
    path = os.path.join(os.environ.get("OUT", "."), "gemv-tma-warps.json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)


def short(c):
    return f"w{c.warps}r{c.row_tiles}s{c.stages}k{c.split_k}"


def check_all():
    n = 0
    for (M, N, K), dt in itertools.product([(9, 200, 512), (16, 77, 1280), (13, 300, 3072),
                                            (32, 130, 768)], (torch.float16, torch.bfloat16)):
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt)
        for order in ("low_first", "high_first"):
            p.order = order
            ref = p.reference(0)
            every = order == "low_first" and (M, N) == (16, 77)
            for j, cfg in enumerate(ALL if every else ALL[::5]):
                for odt in (torch.float32, dt) if j % 5 == 0 else (torch.float32,):
                    o = torch.full((M, N), float("nan"), dtype=odt, device="cuda")
                    T.gemv_tma_sm90(p.x[0], *p.w[0], p.alpha, order, o, config=cfg)
                    ok, err = close(o, ref)
                    n += 1
                    if not ok:
                        raise SystemExit(f"FAIL {dt} M={M} N={N} K={K} {order} {cfg} {odt}: "
                                         f"rel err {err}")
    print(f"correctness: {n} checks passed", flush=True)


def one_warp_rule(N):
    """Session 15's rule for 9-16 tokens (one warp per CTA), as shipped before session 27."""
    return C(2, 3, 2 if -(-N // 32) >= 192 else 3, 1)


def verify():
    rows = []
    shapes = [(18432, 3072), (8192, 8192), (3072, 3072), (28672, 4096), (4096, 4096),
              (14336, 4096), (8192, 3072)]
    cases = [(torch.bfloat16, M, N, K) for M in (16, 9, 12) for N, K in shapes]
    cases += [(torch.float16, 16, N, K) for N, K in shapes[:3]]
    for dt, M, N, K in cases:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")

        def run(cfg, i, o):
            T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg)

        new = T.choose_config(M, N, K)
        cfgs = {"rule": new, "one-warp rule": one_warp_rule(N),
                "2 warps": C(new.row_tiles, new.stages, new.split_k, 2),
                "+1 stage": C(new.row_tiles, min(4, new.stages + 1), new.split_k, new.warps)}
        for cfg in cfgs.values():
            o = torch.full_like(out, float("nan"))
            run(cfg, 0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL verify {dt} M={M} {N}x{K} {cfg}")
        got = rounds({k: (lambda c=c: time_graph(
            [lambda i=i: run(c, i, out) for i in range(4)])[0]) for k, c in cfgs.items()})
        med = {k: sorted(v)[1] for k, v in got.items()}
        for k, v in got.items():
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, impl=k, cfg=short(cfgs[k]),
                             rounds=v, us=med[k], phase="verify"))
        save(rows)
        print(f"{str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} "
              + "  ".join(f"{k} ({short(cfgs[k])}) {v:6.2f}" for k, v in med.items())
              + f" | rule/old {med['rule'] / med['one-warp rule']:.3f}", flush=True)


def main():
    quick = "--quick" in sys.argv
    if "--verify" in sys.argv:  # every config it times is checked first; the kernel's GPU tests
        return verify()         # and the sweep's checks cover the rest
    check_all()
    cases = [(torch.bfloat16, 16, 18432, 3072), (torch.float16, 16, 18432, 3072),
             (torch.bfloat16, 16, 8192, 8192), (torch.bfloat16, 9, 18432, 3072),
             (torch.bfloat16, 32, 18432, 3072), (torch.bfloat16, 16, 3072, 3072)]
    if quick:
        cases = cases[:1]
    rows = []
    for dt, M, N, K in cases:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")

        def run(cfg, i, o):
            T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg)

        res = []
        for cfg in ALL:
            o = torch.full_like(out, float("nan"))
            run(cfg, 0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL timing case {dt} M={M} {N}x{K} {cfg}")
            res.append((time_graph([lambda i=i, c=cfg: run(c, i, out) for i in range(4)])[0],
                        cfg))
        res.sort(key=lambda r: r[0])
        heur = T.choose_config(M, N, K)
        pick = [heur] + [c for _, c in res if c != heur][:3]
        got = rounds({short(c): (lambda c=c: time_graph(
            [lambda i=i: run(c, i, out) for i in range(4)])[0]) for c in pick})
        med = {k: sorted(v)[1] for k, v in got.items()}
        for t, c in res:
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, cfg=short(c), us=t, phase="sweep"))
        for k, v in got.items():
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, cfg=k, rounds=v, us=med[k],
                             phase="rounds", shipped=k == short(heur)))
        save(rows)
        by_w = {w: min(t for t, c in res if c.warps == w) for w in (1, 2, 4)}
        print(f"{str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} shipped {short(heur)} | rounds "
              + "  ".join(f"{k} {v:6.2f}" for k, v in med.items())
              + " | sweep best per warps " + "  ".join(f"{w}:{v:6.2f}" for w, v in by_w.items())
              + " | top 4 " + "  ".join(f"{short(c)} {t:6.2f}" for t, c in res[:4]), flush=True)


if __name__ == "__main__":
    main()
