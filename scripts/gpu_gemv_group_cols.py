# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The register-ring GEMV with 16-bit group scales below 128 as MMA *columns* (``group_cols``)
against the shipped form (one MMA chain per group, the grouped K permutation).

Why (session 26): ``w4a16_mm`` g32 M = 1 took 19.3 us against 16.0 for NVFP4 weights with bf16
x on the same kernel. The grouped permutation gives each thread one 4-byte word of every group
(four loads a row and step, not one 16-byte load) and four MMA chains a step, each scaled on
its own. With the groups as columns of the B operand (token ``n // G`` masked to group
``n % G``) the plain permutation, its 16-byte loads and one MMA chain a step stay, and one
fp32 FMA per accumulator element scales a step.

1. Correctness: every config family, groups 16 / 32 / 64, fp16 and bf16 x, both nibble orders,
   shapes that hit every boundary, NaN-poisoned fp32 and 16-bit outputs; a NaN scale reaches
   exactly its row. Any failure stops the run before timing.
2. Timing (CUDA-graph medians over 4 weight copies): a config sweep of the new form at the
   decode rows, then the shipped heuristic and the best three in 3 rotating rounds.
3. ``--verify``: the shipped rule (``choose_config``) against the old one (one chain per group)
   at six shapes, fp16 and bf16 x, group 32 at one and two tokens; groups of 16 at one and two
   tokens against the plain-Triton GEMV that served them before; bf16 split 2 against 4.
4. ``--splits``: group 32 as columns at splits 1-4, fp16 and bf16 x, one and two tokens.
5. ``--halves``: the groups of each half step as columns (``group_cols=64``: 3-4 tokens of
   group 32, 5-8 of group 64 in 8 columns) against the chains, after its own oracle checks;
   ``--halves-wide``: the same with 16 columns (group 32 at 5-8 tokens, 64 at 9-16; the GPU
   tests check that form against the oracle).
Usage on an sm_90 machine: ``python scripts/gpu_gemv_group_cols.py [--quick | --verify |
--splits | --halves | --halves-wide]``
(JSON to $OUT).
"""

from __future__ import annotations

import itertools
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm import reference  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, rounds, time_graph  # noqa: E402

C = S.GemvSM90Config


def save(name, rows):
    """Rewrite ``$OUT/<name>.json`` after every case: one file (the device tool returns at most
    8), and a run cut short keeps its rows."""
    path = os.path.join(os.environ.get("OUT", "."), name + ".json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)


def check_all(blocks=(128, 64)):
    gen = torch.Generator(device="cuda").manual_seed(26)
    n = 0
    for block, group, dt in itertools.product(blocks, (16, 32, 64),
                                              (torch.float16, torch.bfloat16)):
        if block < group or (block, group) == (64, 16):
            continue
        every = [C(nw, pf, sp, 0, rt, group_cols=block) for nw in (1, 2, 4) for pf in (1, 2)
                 for sp in (1, 2, 3) for rt in (1, 2)]
        few = [C(1, 1, 1, 0, 1, group_cols=block), C(2, 1, 3, 0, 2, group_cols=block),
               C(4, 2, 2, 0, 1, group_cols=block)]
        top = S.group_cols_max_m(group, block)
        for M, N, K in [(1, 1, 128), (1, 17, 384), (top, 200, 1152), (max(1, top - 1), 77, 640),
                        (1, 4099, 3072), (top, 130, 256)]:
            x = (torch.randn((M, K), device="cuda", generator=gen) * 0.5).to(dt)
            wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda",
                               generator=gen)
            sc = (torch.rand((N, K // group), device="cuda", generator=gen) * 0.1 + 0.01).to(dt)
            full = (M, N, K) == (top, 200, 1152) and (group, dt) == (32, torch.float16)
            for order in ("low_first", "high_first") if N == 200 else ("low_first",):
                ref = reference.w4a16_mm(x, wq, sc, group, order=order)
                for j, cfg in enumerate(every if full else few):
                    for odt in (torch.float32, dt) if j == 0 else (torch.float32,):
                        o = torch.full((M, N), float("nan"), dtype=odt, device="cuda")
                        S.gemv_sm90(x, None, wq, sc, 1.0, order, o, config=cfg,
                                    group_size=group)
                        ok, err = close(o, ref)
                        n += 1
                        if not ok:
                            raise SystemExit(f"FAIL g{group} {dt} M={M} N={N} K={K} {order} "
                                             f"{cfg} {odt}: rel err {err}")
        # a NaN scale: NaN in exactly its row
        M, N, K = top, 70, 512
        x = (torch.randn((M, K), device="cuda", generator=gen) * 0.5).to(dt)
        wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
        sc = (torch.rand((N, K // group), device="cuda", generator=gen) * 0.1 + 0.01).to(dt)
        sc[5, 3] = float("nan")
        o = torch.zeros((M, N), dtype=torch.float32, device="cuda")
        S.gemv_sm90(x, None, wq, sc, 1.0, "low_first", o,
                    config=C(2, 1, 2, 0, 1, group_cols=block), group_size=group)
        bad = torch.isnan(o).any(0).nonzero().flatten().tolist()
        assert bad == [5] and torch.isnan(o[:, 5]).all(), bad
        n += 1
    print(f"correctness: {n} checks passed", flush=True)


def short(c):
    form = {0: "q", 128: "gc", 64: "gh"}[c.group_cols]  # chains, columns, columns per half
    return f"{form}w{c.num_warps}s{c.split_k}r{c.row_tiles}p{c.prefetch}"


def sweep(p, out, run, cfgs, label):
    """[(us, cfg)] fastest first: each config checked against the oracle (NaN-poisoned output),
    then timed once (CUDA-graph median over the problem's weight copies)."""
    res = []
    for cfg in cfgs:
        o = torch.full_like(out, float("nan"))
        run(cfg, 0, o)
        if not close(o, p.reference(0))[0]:
            raise SystemExit(f"FAIL {label} {cfg}")
        res.append((timed(run, out, cfg), cfg))
    return sorted(res, key=lambda r: r[0])


def timed(run, out, cfg):
    return time_graph([lambda i=i: run(cfg, i, out) for i in range(4)])[0]


def verify():
    from fp4mm.kernels import fp4_gemv as V

    old_rule = dict(num_warps=1, prefetch=1, row_tiles=1)  # session 9's rule for groups < 128
    rows = []
    cases = [(32, dt, M, N, K) for dt in (torch.float16, torch.bfloat16) for M in (1, 2)
             for N, K in ((18432, 3072), (8192, 8192), (14336, 4096), (28672, 4096),
                          (4096, 4096), (3072, 3072))]
    cases += [(16, torch.float16, M, N, K) for M in (1, 2)
              for N, K in ((18432, 3072), (8192, 8192), (4096, 4096))]
    for group, dt, M, N, K in cases:
        p = Problem("w4a16_mm", M, N, K, group=group, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        new = S.choose_config(M, N, K, False, group)
        fns = {}
        if group == 16:
            def tri(i, o):
                V.w4a16_mm_gemv(p.x[0], *p.w[i], group, "low_first", o)
            fns["triton_gemv"] = tri
        else:
            warps = -(-N // 16)
            split = max(1, min(4, K // S.KS, round((3456 if M == 1 else 1152) / warps)))
            old = C(split_k=split, **old_rule)
            fns["chains " + short(old)] = (
                lambda i, o, c=old: S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o,
                                                config=c, group_size=group))
        fns["rule " + short(new)] = (
            lambda i, o: S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o, config=new,
                                     group_size=group))
        if dt == torch.bfloat16 and M == 1:
            alt = C(2, 1, 4 if new.split_k != 4 else 2, 0, 1, group_cols=128)
            fns["alt " + short(alt)] = (
                lambda i, o: S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o,
                                         config=alt, group_size=group))
        for k, f in fns.items():
            o = torch.full_like(out, float("nan"))
            f(0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL verify g{group} {dt} M={M} {N}x{K} {k}")
        got = rounds({k: (lambda f=f: time_graph([lambda i=i: f(i, out) for i in range(4)])[0])
                      for k, f in fns.items()})
        med = {k: sorted(v)[1] for k, v in got.items()}
        for k, v in got.items():
            rows.append(dict(op="w4a16_mm", x=str(dt), group=group, M=M, N=N, K=K, impl=k,
                             median_us=med[k], rounds_us=v, gbps=p.bytes_moved(dt) / med[k] / 1e3))
        print(f"g{group} {str(dt):14s} M={M} {N:5d}x{K:4d}: "
              + "  ".join(f"{k} {t:.2f}" for k, t in med.items()), flush=True)
        save("gemv-group-cols-verify", rows)


def splits():
    """Group 32 as columns, two warps: splits 1-4 in rotating rounds (fp16 and bf16 x)."""
    rows = []
    for dt, M, (N, K) in itertools.product((torch.float16, torch.bfloat16), (1, 2),
                                           ((28672, 4096), (18432, 3072), (14336, 4096))):
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        fns = {}
        for sp in (1, 2, 3, 4):
            cfg = C(2, 1, sp, 0, 1, group_cols=128)
            f = (lambda i, o, c=cfg: S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o,
                                                 config=c, group_size=32))
            o = torch.full_like(out, float("nan"))
            f(0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL splits {dt} M={M} {N}x{K} {cfg}")
            fns[short(cfg)] = f
        got = rounds({k: (lambda f=f: time_graph([lambda i=i: f(i, out) for i in range(4)])[0])
                      for k, f in fns.items()})
        med = {k: sorted(v)[1] for k, v in got.items()}
        rule = short(S.choose_config(M, N, K, False, 32))
        for k, v in got.items():
            rows.append(dict(op="w4a16_mm", x=str(dt), group=32, M=M, N=N, K=K, impl=k,
                             rule=k == rule, median_us=med[k], rounds_us=v))
        print(f"g32 {str(dt):14s} M={M} {N:5d}x{K:4d} (rule {rule}): "
              + "  ".join(f"{k} {t:.2f}" for k, t in med.items()), flush=True)
        save("gemv-group-cols-splits", rows)


def halves(wide=False):
    """Groups as columns per half step (group_cols=64) against the chains (the rule's form),
    where 8 columns a step no longer hold the tokens; ``wide``: with 16 columns a half (group
    32 at 5-8 tokens, 64 at 9-16), where the rule keeps the chains."""
    rows = []
    if wide:
        cases = [(32, torch.float16, M, 18432, 3072) for M in (5, 8)]
        cases += [(32, torch.float16, 8, 8192, 8192), (32, torch.bfloat16, 8, 18432, 3072),
                  (64, torch.float16, 16, 18432, 3072)]
    else:
        check_all(blocks=(64,))
        cases = [(32, torch.float16, M, N, K) for M in (3, 4)
                 for N, K in ((18432, 3072), (8192, 8192), (28672, 4096), (3072, 3072))]
        cases += [(32, torch.bfloat16, 4, 18432, 3072), (64, torch.float16, 8, 18432, 3072),
                  (64, torch.float16, 6, 8192, 8192)]
    for group, dt, M, N, K in cases:
        p = Problem("w4a16_mm", M, N, K, group=group, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        heur = S.choose_config(M, N, K, False, group, bf16_x=dt == torch.bfloat16)

        def run(cfg, i, o):
            S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o, config=cfg, group_size=group)

        res = sweep(p, out, run, [C(nw, 1, sp, 0, rt, group_cols=64) for nw in (1, 2, 4)
                                  for sp in (1, 2, 3, 4) for rt in (1, 2)],
                    f"halves g{group} M={M}")
        chains = C(1, 1, heur.split_k if not heur.group_cols else 1, 0, 1)
        finals = list(dict.fromkeys([heur, chains] + [c for _, c in res[:2]]))
        got = rounds({short(c): (lambda c=c: timed(run, out, c)) for c in finals})
        med = {k: sorted(v)[1] for k, v in got.items()}
        for c in finals:
            rows.append(dict(op="w4a16_mm", x=str(dt), group=group, M=M, N=N, K=K,
                             config=str(c), heuristic=c == heur, median_us=med[short(c)],
                             rounds_us=got[short(c)]))
        for t, c in res:
            rows.append(dict(op="w4a16_mm", x=str(dt), group=group, M=M, N=N, K=K,
                             config=str(c), heuristic=False, median_us=t, sweep=True))
        print(f"g{group} {str(dt):14s} M={M} {N:5d}x{K:4d} (rule {short(heur)}): rounds "
              + "  ".join(f"{k} {t:.2f}" for k, t in med.items())
              + " | sweep top 4: " + "  ".join(f"{short(c)} {t:.2f}" for t, c in res[:4]),
              flush=True)
        save("gemv-group-cols-halves" + ("-wide" if wide else ""), rows)


def main():
    quick = "--quick" in sys.argv
    if "--halves" in sys.argv or "--halves-wide" in sys.argv:
        return halves(wide="--halves-wide" in sys.argv)
    if "--splits" in sys.argv:
        return splits()
    check_all()
    if "--verify" in sys.argv:
        return verify()
    cases = [(32, torch.float16, 1, 18432, 3072), (32, torch.float16, 4, 18432, 3072),
             (32, torch.float16, 2, 18432, 3072), (32, torch.bfloat16, 1, 18432, 3072),
             (32, torch.float16, 1, 8192, 8192), (64, torch.float16, 4, 18432, 3072),
             (16, torch.float16, 1, 18432, 3072)]
    if quick:
        cases = cases[:2]
    rows = []
    for group, dt, M, N, K in cases:
        p = Problem("w4a16_mm", M, N, K, group=group, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        heur = S.choose_config(M, N, K, False, group) if S.group_size_is_supported(group) else None

        def run(cfg, i, o):
            S.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o, config=cfg, group_size=group)

        res = sweep(p, out, run, [C(nw, 1, sp, 0, rt, group_cols=128) for nw in (1, 2, 4)
                                  for sp in (1, 2, 3, 4, 6) for rt in (1, 2)],
                    f"timing case g{group} M={M}")
        finals = ([heur] if heur else []) + [c for _, c in res[:3]]
        again = rounds({short(c): (lambda c=c: timed(run, out, c)) for c in finals})
        for c in finals:
            if c not in [c2 for _, c2 in res]:
                res.append((sorted(again[short(c)])[1], c))
        for t, c in res:
            rows.append(dict(op="w4a16_mm", x=str(dt), group=group, M=M, N=N, K=K, config=str(c),
                             heuristic=c == heur, median_us=t, rounds_us=again.get(short(c))))
        print(f"g{group} {str(dt):14s} M={M:2d} {N}x{K}: heuristic "
              f"{short(heur) if heur else '-'}; rounds "
              + "  ".join(f"{k} {sorted(v)[1]:.2f}" for k, v in again.items())
              + " | sweep top 5: " + "  ".join(f"{short(c)} {t:.2f}" for t, c in res[:5]),
              flush=True)
        save("gemv-group-cols", rows)


if __name__ == "__main__":
    main()
