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
4. ``--grouped``: 16-bit group scales on this kernel (``group_size``; one MMA chain per group
   as in ``fp4_gemv_sm90``'s grouped form) after oracle checks (groups 32 / 64 / 128 / 256,
   fp16 and bf16, both orders, ragged shapes, 9-32 tokens): the config sweep against what
   ``w4a16_mm`` runs now (the register ring up to 16 tokens, the plain-Triton GEMV above),
   group 32 at the decode rows. ``--grouped-rule``: the shipped rule alone against what ran
   before, groups 32 / 64 / 128 at 17 / 24 / 32 tokens on three shapes (fp16 x).
Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_warps.py [--quick | --verify |
--grouped | --grouped-rule]`` (JSON to $OUT).
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
from scripts.gpu_gemv_group_cols import sweep  # noqa: E402  (check, then time, each config)

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


GROUPED = [C(rt, st, sp, w) for w in (1, 2, 4) for rt in (1, 2) for st in (2, 3)
           for sp in (1, 2, 3, 4)]


def check_grouped():
    from fp4mm import reference

    n = 0
    gen = torch.Generator(device="cuda").manual_seed(27)
    for group, dt, (M, N, K) in itertools.product(
            (32, 64, 128, 256), (torch.float16, torch.bfloat16),
            [(9, 200, 512), (16, 77, 1280), (13, 300, 3072), (32, 130, 768), (24, 33, 2048)]):
        if K % group:
            continue
        x = (torch.randn((M, K), device="cuda", generator=gen) * 0.5).to(dt)
        wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
        sc = (torch.rand((N, K // group), device="cuda", generator=gen) * 0.1 + 0.01).to(dt)
        for order in ("low_first", "high_first") if N == 77 else ("low_first",):
            ref = reference.w4a16_mm(x, wq, sc, group, order=order)
            every = (group, dt, N, order) == (32, torch.float16, 77, "low_first")
            for j, cfg in enumerate(GROUPED if every else GROUPED[::7]):
                for odt in (torch.float32, dt) if j % 5 == 0 else (torch.float32,):
                    o = torch.full((M, N), float("nan"), dtype=odt, device="cuda")
                    T.gemv_tma_sm90(x, wq, sc, 1.0, order, o, config=cfg, group_size=group)
                    ok, err = close(o, ref)
                    n += 1
                    if not ok:
                        raise SystemExit(f"FAIL g{group} {dt} M={M} N={N} K={K} {order} {cfg} "
                                         f"{odt}: rel err {err}")
    # a NaN scale: NaN in exactly its row
    M, N, K = 12, 70, 512
    x = (torch.randn((M, K), device="cuda", generator=gen) * 0.5).half()
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    sc = (torch.rand((N, K // 32), device="cuda", generator=gen) * 0.1 + 0.01).half()
    sc[5, 3] = float("nan")
    o = torch.zeros((M, N), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, sc, 1.0, "low_first", o, config=C(1, 2, 2, 4), group_size=32)
    bad = torch.isnan(o).any(0).nonzero().flatten().tolist()
    assert bad == [5] and torch.isnan(o[:, 5]).all(), bad
    print(f"grouped correctness: {n + 1} checks passed", flush=True)


def grouped(rule_only=False):
    """The sweep at group 32 (``rule_only``: the shipped rule alone, groups 32, 64 and 128 at
    17-32 tokens, against what ran there before)."""
    from fp4mm.kernels import fp4_gemv as V
    from fp4mm.kernels import fp4_gemv_sm90 as S

    rows = []
    if rule_only:
        cases = [(torch.float16, M, N, K, g) for g in (32, 64, 128) for M in (17, 24, 32)
                 for N, K in ((18432, 3072), (8192, 8192), (4096, 4096))]
    else:
        check_grouped()
        cases = [(torch.float16, 16, 18432, 3072), (torch.bfloat16, 16, 18432, 3072),
                 (torch.float16, 16, 8192, 8192), (torch.float16, 16, 28672, 4096),
                 (torch.float16, 9, 18432, 3072), (torch.float16, 32, 18432, 3072),
                 (torch.float16, 24, 8192, 8192), (torch.float16, 16, 3072, 3072)]
        cases = [c + (32,) for c in cases]
    for dt, M, N, K, group in cases:
        p = Problem("w4a16_mm", M, N, K, group=group, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")

        def run(cfg, i, o):
            T.gemv_tma_sm90(p.x[0], *p.w[i], 1.0, "low_first", o, config=cfg,
                            group_size=group)

        def now(i, o):  # what w4a16_mm ran on raw weights before session 27
            if M <= S.max_m(False, group):
                S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o, group_size=group)
            else:
                V.w4a16_mm_gemv(p.x[0], *p.w[i], group, "low_first", o)

        o = torch.full_like(out, float("nan"))
        now(0, o)
        if not close(o, p.reference(0))[0]:
            raise SystemExit(f"FAIL now {dt} M={M} {N}x{K}")
        res = sweep(p, out, run, [T.choose_config(M, N, K, group)] if rule_only else GROUPED,
                    f"grouped timing case {dt} M={M} {N}x{K}")
        fns = {"now": lambda: time_graph([lambda i=i: now(i, out) for i in range(4)])[0]}
        for _, c in res[:3]:
            fns[short(c)] = (lambda c=c: time_graph(
                [lambda i=i: run(c, i, out) for i in range(4)])[0])
        got = rounds(fns)
        med = {k: sorted(v)[1] for k, v in got.items()}
        for t, c in res:
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, group=group, cfg=short(c), us=t,
                             phase="grouped sweep"))
        for k, v in got.items():
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, group=group, impl=k, rounds=v,
                             us=med[k], phase="grouped rounds"))
        save(rows)
        line = (f"g{group} {str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} rounds "
                + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()))
        if not rule_only:
            by_w = {w: min(t for t, c in res if c.warps == w) for w in (1, 2, 4)}
            line += (" | best per warps " + "  ".join(f"{w}:{v:6.2f}" for w, v in by_w.items())
                     + " | top 6 " + "  ".join(f"{short(c)} {t:6.2f}" for t, c in res[:6]))
        print(line, flush=True)


def main():
    quick = "--quick" in sys.argv
    if "--grouped" in sys.argv or "--grouped-rule" in sys.argv:
        return grouped(rule_only="--grouped-rule" in sys.argv)
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

        res = sweep(p, out, run, ALL, f"timing case {dt} M={M} {N}x{K}")
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
