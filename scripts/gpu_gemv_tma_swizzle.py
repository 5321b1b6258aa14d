# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The TMA decode GEMV (``fp4_gemv_tma_sm90``) reading its NVFP4 stages through 128-byte-swizzled,
bank-conflict-free views, against an earlier copy of the module (session 28).

Why: ncu at 16 tokens of 18432 x 3072 (bf16 x, the four-warp rule) counted 10.3 shared-memory
wavefronts per 16-byte load instead of 4 (68% of them bank conflicts), and a per-CTA timeline
(``scripts/gpu_gemv_tma_timeline.py``) showed the CTAs compute-bound after their first chunk
(0.3 us of later waits, 10.5 us of K loop), with the SMs that hold four CTAs ending 4 us after
those that hold three.

Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_swizzle.py OLD_SOURCE.py`` (the old
module as a file, e.g. ``git show REV:fp4mm/kernels/fp4_gemv_tma_sm90.py``; JSON to $OUT).
1. Both modules' heuristic configs and seven configs (warps 1/2/4, row tiles 1/2, stages 2-4,
   split 1-4) checked against the oracle with NaN-poisoned outputs (fp32 and 16-bit) at ragged
   shapes, both nibble orders, fp16 and bf16 x; any failure stops the run.
2. Each decode shape timed old / new with each module's heuristic config (and the new module
   at the old config where the rules differ), 3 rotating rounds of CUDA-graph medians over 4
   weight copies.
``--sweep``: the new module alone, every config (warps 1/2/4 x row tiles 1/2 x stages 2/3 x split
1-4) oracle-checked, then timed once, at four decode rows; prints the best five and the rule.
``--grouped OLD_SOURCE.py``: 16-bit group scales (the same swizzled stages read in the natural
K order): oracle checks at groups 32 / 64 / 128 / 256, then group 32 at 9-32 tokens, old / new
at the rule and the register ring (``fp4_gemv_sm90``, what ``w4a16_mm`` runs up to 16 tokens),
3 rounds; then a config sweep of the new kernel at 16 and 32 tokens. ``--grouped-rule
OLD_SOURCE.py``: the shipped group-scale rule against the ring and the old module, group 32,
fp16 and bf16 x, 9-32 tokens on four shapes, 3 rounds (each oracle-checked first; session 29:
more token counts, for x boxes that stay inside x's rows).
``--sweep-rt1``: one row tile (warps 1/2/4 x stages 2/3 x split 1-4) and the rule, at 9 / 16 /
24 / 32 tokens on seven weight shapes (the data for the one-row-tile rule).
"""

from __future__ import annotations

import itertools
import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as NEW  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, rounds, save_rows, time_graph  # noqa: E402

C = NEW.GemvTMAConfig
CHECKED = [C(2, 2, 3, 4), C(2, 3, 1, 4), C(1, 2, 3, 4), C(2, 3, 2, 1), C(2, 2, 2, 2),
           C(1, 3, 1, 1), C(2, 4, 4, 2)]
SHAPES = [(M, 18432, 3072, torch.bfloat16) for M in (9, 12, 16, 24, 32)] + [
    (24, 8192, 8192, torch.bfloat16), (32, 8192, 3072, torch.bfloat16),
    (32, 14336, 4096, torch.bfloat16), (32, 28672, 4096, torch.bfloat16),
    (16, 18432, 3072, torch.float16), (16, 8192, 8192, torch.bfloat16),
    (32, 8192, 8192, torch.bfloat16), (16, 28672, 4096, torch.bfloat16),
    (16, 14336, 4096, torch.bfloat16), (16, 4096, 4096, torch.bfloat16),
    (16, 3072, 3072, torch.bfloat16)]


def check_poisoned(run, ref, odt, label):
    """``run(out)`` into a NaN-poisoned output of ``odt``, compared with the oracle ``ref``; any
    failure stops the run."""
    o = torch.full(tuple(ref.shape), float("nan"), dtype=odt, device="cuda")
    run(o)
    ok, err = close(o, ref)
    if not ok:
        raise SystemExit(f"FAIL {label} {odt}: rel err {err}")


def check(mods):
    n = 0
    for (M, N, K), dt in itertools.product([(9, 200, 512), (16, 77, 1280), (13, 300, 3072),
                                            (32, 130, 768), (25, 1000, 2048)],
                                           (torch.float16, torch.bfloat16)):
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt)
        for order in ("low_first", "high_first"):
            p.order = order
            ref = p.reference(0)
            for name, mod in mods.items():
                cfgs = [None] + (CHECKED if order == "low_first" else CHECKED[:1])
                for j, cfg in enumerate(cfgs):
                    c = None if cfg is None else mod.GemvTMAConfig(
                        cfg.row_tiles, cfg.stages, cfg.split_k, cfg.warps)
                    for odt in (torch.float32, dt) if j % 3 == 0 else (torch.float32,):
                        check_poisoned(lambda o: mod.gemv_tma_sm90(p.x[0], *p.w[0], p.alpha,
                                                                   order, o, config=c),
                                       ref, odt, f"{name} {dt} M={M} N={N} K={K} {order} {c}")
                        n += 1
    print(f"correctness: {n} checks passed", flush=True)


def config_sweep(rt1=False):
    from scripts.gpu_gemv_group_cols import sweep  # check, then time, each config

    cfgs = [C(rt, st_, sp, w) for w in (1, 2, 4) for rt in ((1,) if rt1 else (1, 2))
            for st_ in (2, 3) for sp in (1, 2, 3, 4)]
    cases = [(16, 18432, 3072, torch.bfloat16), (9, 18432, 3072, torch.bfloat16),
             (16, 8192, 8192, torch.bfloat16), (32, 18432, 3072, torch.bfloat16)]
    if rt1:
        cases = [(M, N, K, torch.bfloat16) for N, K in (
            (18432, 3072), (8192, 8192), (28672, 4096), (14336, 4096), (4096, 4096),
            (3072, 3072), (8192, 3072)) for M in (9, 16, 24, 32)]
    rows = []
    for M, N, K, dt in cases:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")

        def run(cfg, i, o):
            NEW.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o, config=cfg)

        rule = NEW.choose_config(M, N, K)
        res = sweep(p, out, run, cfgs + ([rule] if rule not in cfgs else []), f"M={M} {N}x{K}")
        t_rule = next(t for t, c in res if c == rule)
        print(f"M={M} {N}x{K} {str(dt)[6:]}: rule {rule} {t_rule:.2f}; best "
              + "; ".join(f"w{c.warps}r{c.row_tiles}s{c.stages}k{c.split_k} {t:.2f}"
                          for t, c in res[:5]), flush=True)
        rows += [dict(M=M, N=N, K=K, dtype=str(dt), config=str(c), us=t, rule=c == rule)
                 for t, c in res]
    save_rows("gemv-tma-swizzle-sweep" + ("-rt1" if rt1 else ""), rows)


def grouped_rule(old):
    """The group-scale rule in 3 rounds: new / the ring (up to 16 tokens) / old, group 32."""
    from fp4mm.kernels import fp4_gemv_sm90 as RING

    rows = []
    for (M, N, K), dt in itertools.product(
            [(M, 18432, 3072) for M in (9, 10, 11, 13, 14, 15, 17, 20, 22, 24, 27, 29)]
            + [(M, 8192, 8192) for M in (9, 11, 13, 14, 20, 24, 27)],
            (torch.float16,) if "--fp16" in sys.argv else (torch.float16, torch.bfloat16)):
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        runs = {name: (lambda i, o, mod=mod: mod.gemv_tma_sm90(p.x[0], *p.w[i], 1.0,
                                                                "low_first", o, group_size=32))
                for name, mod in (("new", NEW), ("old", old))}
        if M <= 16:
            runs["ring"] = lambda i, o: RING.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first",
                                                       o, group_size=32)
        ref = p.reference(0)
        for name, run in runs.items():
            check_poisoned(lambda o: run(0, o), ref, torch.float32, f"{name} g32 {dt} {M}x{N}x{K}")
        got = rounds({k: (lambda run=run: time_graph([lambda i=i: run(i, out)
                                                      for i in range(4)])[0])
                      for k, run in runs.items()}, 3)
        med = {k: st.median(v) for k, v in got.items()}
        print(f"g32 {str(dt)[6:]:8s} M={M:2d} {N}x{K}  "
              + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()), flush=True)
        rows.append(dict(M=M, N=N, K=K, dtype=str(dt), config=str(NEW.choose_config(
            M, N, K, group_size=32)), rounds=got, medians=med))
    save_rows("gemv-tma-swizzle-grouped-rule", rows)


def grouped(old):
    from fp4mm.kernels import fp4_gemv_sm90 as RING
    from scripts.gpu_gemv_group_cols import sweep  # check, then time, each config

    mods = {"old": old, "new": NEW}
    n = 0
    for (M, N, K), dt, g in itertools.product([(9, 200, 512), (16, 77, 1280), (32, 130, 768),
                                               (25, 1000, 2048)],
                                              (torch.float16, torch.bfloat16), (32, 64, 128, 256)):
        if K % g:
            continue
        p = Problem("w4a16_mm", M, N, K, group=g, dtype=dt)
        for order in ("low_first", "high_first"):
            p.order = order
            ref = p.reference(0)
            for name, mod in mods.items():
                for cfg in (None, C(1, 2, 3, 4), C(2, 3, 1, 2)):
                    c = None if cfg is None else mod.GemvTMAConfig(
                        cfg.row_tiles, cfg.stages, cfg.split_k, cfg.warps)
                    check_poisoned(lambda o: mod.gemv_tma_sm90(p.x[0], *p.w[0], 1.0, order, o,
                                                               config=c, group_size=g),
                                   ref, torch.float32, f"{name} g{g} {dt} M={M} N={N} K={K} "
                                   f"{order} {c}")
                    n += 1
    print(f"correctness: {n} checks passed", flush=True)
    rows = []
    for M, N, K in [(9, 18432, 3072), (16, 18432, 3072), (24, 18432, 3072), (32, 18432, 3072),
                    (16, 8192, 8192), (32, 8192, 8192)]:
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=torch.float16, copies=4)
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        runs = {name: (lambda i, o, mod=mod: mod.gemv_tma_sm90(p.x[0], *p.w[i], 1.0,
                                                                "low_first", o, group_size=32))
                for name, mod in mods.items()}
        if M <= 16:
            runs["ring"] = lambda i, o: RING.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first",
                                                       o, group_size=32)
        got = rounds({k: (lambda run=run: time_graph([lambda i=i: run(i, out)
                                                      for i in range(4)])[0])
                      for k, run in runs.items()}, 3)
        med = {k: st.median(v) for k, v in got.items()}
        print(f"g32 fp16 M={M:2d} {N}x{K}  " + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()),
              flush=True)
        rows.append(dict(phase="rule", M=M, N=N, K=K, rounds=got, medians=med))
    cfgs = [C(rt, 2, sp, w) for w in (1, 2, 4) for rt in (1, 2) for sp in (1, 2, 3, 4)]
    for M, N, K in [(16, 18432, 3072), (32, 18432, 3072), (16, 8192, 8192)]:
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=torch.float16, copies=4)
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")

        def run(cfg, i, o):
            NEW.gemv_tma_sm90(p.x[0], *p.w[i], 1.0, "low_first", o, config=cfg, group_size=32)

        res = sweep(p, out, run, cfgs, f"g32 M={M}")
        print(f"g32 sweep M={M} {N}x{K}: " + "; ".join(
            f"w{c.warps}r{c.row_tiles}s{c.stages}k{c.split_k} {t:.2f}" for t, c in res[:6]),
            flush=True)
        rows += [dict(phase="sweep", M=M, N=N, K=K, config=str(c), us=t) for t, c in res]
    save_rows("gemv-tma-swizzle-grouped", rows)


def main():
    if "--grouped-rule" in sys.argv:
        return grouped_rule(patched_module("old_fp4_gemv_tma_sm90", open(sys.argv[-1]).read()))
    if "--grouped" in sys.argv:
        return grouped(patched_module("old_fp4_gemv_tma_sm90", open(sys.argv[-1]).read()))
    if "--sweep" in sys.argv or "--sweep-rt1" in sys.argv:
        return config_sweep("--sweep-rt1" in sys.argv)
    old = patched_module("old_fp4_gemv_tma_sm90", open(sys.argv[1]).read())
    mods = {"old": old, "new": NEW}
    check(mods)
    rows = []
    for M, N, K, dt in SHAPES:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        # "new_old_rule": the new module at the old module's config (when the rules differ)
        o = old.choose_config(M, N, K)
        runs = {"old": (old, None), "new": (NEW, None),
                "new_old_rule": (NEW, C(o.row_tiles, o.stages, o.split_k, o.warps))}
        if runs["new_old_rule"][1] == NEW.choose_config(M, N, K):
            del runs["new_old_rule"]
        fns = {name: (lambda mod=mod, cfg=cfg: time_graph(
            [lambda i=i: mod.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", out,
                                           config=cfg)
             for i in range(4)])[0]) for name, (mod, cfg) in runs.items()}
        got = rounds(fns, 3)
        med = {k: st.median(v) for k, v in got.items()}
        cfg = NEW.choose_config(M, N, K)
        print(f"{str(dt)[6:]:8s} M={M:2d} {N}x{K}  "
              + "  ".join(f"{k} {v:6.2f}" for k, v in med.items())
              + f"  ({100 * (med['new'] / med['old'] - 1):+.1f}%)  {cfg}", flush=True)
        rows.append(dict(M=M, N=N, K=K, dtype=str(dt), config=str(cfg), old_config=str(o),
                         rounds=got, medians=med))
    save_rows("gemv-tma-swizzle", rows)


if __name__ == "__main__":
    main()
