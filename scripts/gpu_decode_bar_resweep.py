# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Config sweep of the kernels that serve the decode bar's short rows, on whatever card runs it
(session 37: the first on an H200, whose 1.4x memory bandwidth over the H100 the rules were tuned
on may move the best config): do the shipped rules still pick the best config?

Cases, N = 18432, K = 3072 (``--shape NxK`` for another):
- ``nvfp4_w4a16_mm`` bf16 x, 16 tokens: the TMA-fed GEMV, every (row tiles, warps, split), 2
  stages (3 and more lost on the H100, session 15);
- ``nvfp4_mm`` (W4A4), 16 tokens: the register ring, every (warps, split, row tiles), and the
  x-pre-pass route (x dequantised to fp16, then the TMA-fed GEMV at its rule) that serves 17-32;
- ``w4a16_mm`` group 32, fp16 x, 16 tokens: the TMA-fed GEMV's group-scale form;
- ``w4a16_mm`` group 32, fp16 x, 4 tokens: the register ring's half-step group columns, and the
  TMA-fed GEMV's group-scale form (which the ops send from 5 tokens).
Every config is checked against the fp32 oracle with a NaN-poisoned output, timed once
(CUDA-graph medians over 4 weight copies), then the rule's config and the best three others
again in 3 rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_decode_bar_resweep.py [--shape NxK] [--only CASE]`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem, close, time_graph  # noqa: E402


def _arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


N, K = (int(v) for v in _arg("--shape", "18432x3072").split("x"))
ONLY = _arg("--only", None)
R, C = S.GemvSM90Config, T.GemvTMAConfig


def tma_configs(grouped, row_tiles=(1, 2)):
    return [C(rt, 2, sp, w) for rt in row_tiles for w in ((1, 2, 4) if grouped else (2, 4))
            for sp in (1, 2, 3, 4)]


def ring_configs(w4a4, group_cols=0):
    if group_cols:
        return [R(nw, 1, sp, group_cols=group_cols) for nw in (1, 2, 4) for sp in (2, 3, 4, 6)]
    return [R(nw, 1, sp, 0, rt) for nw in (1, 2, 4) for sp in (2, 3, 4, 6, 8)
            for rt in ((1, 2) if w4a4 else (1,))]


def short(c):
    if isinstance(c, str):
        return c
    if isinstance(c, C):
        return f"tma r{c.row_tiles}w{c.warps}st{c.stages}s{c.split_k}"
    return f"ring w{c.num_warps}s{c.split_k}r{c.row_tiles}" + (f"g{c.group_cols}" if c.group_cols
                                                               else "")


def case_runs(name, p, gs):
    """(rule config, [configs], run(cfg, i, out)) for one case."""
    M, x = p.M, p.x[0]
    xs = p.x[1] if p.op == "nvfp4_mm" else None
    al = 1.0 if gs else p.alpha
    x16 = dequant_nvfp4(x, xs, dtype=torch.float16) if xs is not None else None

    def run(cfg, i, o):
        if cfg == "prepass+tma":
            xd = dequant_nvfp4(x, xs, dtype=torch.float16, out=x16)
            T.gemv_tma_sm90(xd, *p.w[i], al, "low_first", o, fair_share=False)
        elif isinstance(cfg, C):
            T.gemv_tma_sm90(x, *p.w[i], al, "low_first", o, config=cfg, group_size=gs)
        else:
            S.gemv_sm90(x, xs, *p.w[i], al, "low_first", o, config=cfg, group_size=gs)

    if name == "w4a4":
        rule = S.choose_config(M, N, K, True)
        return rule, ring_configs(True) + ["prepass+tma"], run
    if name == "g32_m4":
        rule = S.choose_config(M, N, K, False, gs, False)
        return rule, ring_configs(False, rule.group_cols) + tma_configs(True, (1,)), run
    rule = T.choose_config(M, N, K, gs)
    return rule, tma_configs(gs is not None), run


CASES = [("nvfp4_w4a16_bf16_m16", "nvfp4_w4a16_mm", torch.bfloat16, 16, None),
         ("w4a4", "nvfp4_mm", None, 16, None),
         ("g32_m16", "w4a16_mm", torch.float16, 16, 32),
         ("g32_m4", "w4a16_mm", torch.float16, 4, 32)]


def main():
    rows = []
    path = gpu_decode.result_path(f"decode-bar-resweep_{N}x{K}")
    for name, op, dt, M, gs in CASES:
        if ONLY and name != ONLY:
            continue
        p = Problem(op, M, N, K, group=gs or 16, dtype=dt or torch.float16, copies=4)
        out = torch.empty((M, N), dtype=dt or torch.float16, device="cuda")
        rule, cfgs, run = case_runs(name, p, gs)
        if rule not in cfgs:
            cfgs = [rule] + cfgs

        def timed(cfg):
            return time_graph([lambda i=i: run(cfg, i, out) for i in range(4)])[0]

        res = []
        for cfg in cfgs:
            o = torch.full_like(out, float("nan"))
            try:
                run(cfg, 0, o)
                ok = close(o, p.reference(0))[0]
            except Exception as e:  # noqa: BLE001  (invalid or not compiling: skip it)
                print(f"skip {name} {short(cfg)}: {str(e).splitlines()[0][:90]}", flush=True)
                continue
            if not ok:
                raise SystemExit(f"FAIL {name} {short(cfg)}")
            res.append((timed(cfg), cfg))
        res.sort(key=lambda r: r[0])
        finals = [rule] + [c for _, c in res[:3] if c != rule]
        again = gpu_decode.rounds({short(c): lambda c=c: timed(c) for c in finals})
        for t, c in res:
            rows.append(dict(case=name, op=op, x=str(dt), group=gs, M=M, N=N, K=K,
                             config=short(c), rule=c == rule, median_us=t,
                             rounds_us=again.get(short(c))))
        print(f"{name:22s} rule {short(rule)} | rounds (median) "
              + "  ".join(f"{k} {sorted(v)[1]:.2f}" for k, v in again.items())
              + " | sweep top 5: " + "  ".join(f"{short(c)} {t:.2f}" for t, c in res[:5]),
              flush=True)
        # after every case: a run cut short keeps its rows
        gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
