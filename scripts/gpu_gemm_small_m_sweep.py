# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Config sweep of the Gluon GEMM (prepacked NVFP4 weights, fp16 x, the GEMM alone) at small
and mid M, for its heuristic (``fp4_gemm_sm90.choose_config``): token tile BN 16-128, ring
depth, last-wave split-K factor. Every config is checked against the oracle first, then
CUDA-graph medians over rotating weight copies (>= 3x L2). Prints, per shape, the heuristic's
config and time and the best few. ``--grouped G``: the 16-bit group-scale GEMM (``w4a16_mm``,
groups of G) instead. Usage on an sm_90 machine:
``python scripts/gpu_gemm_small_m_sweep.py [--grouped 32 | --mid | --splits]`` (JSON to $OUT or
.). ``--splits``: only the heuristic's tile and ring at M <= 64, every split factor 1-12 (to
check the split the streaming model picks, e.g. after the reduce pass changed)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import close, save_rows, time_graph  # noqa: E402
from gpu_gluon import gen  # noqa: E402

from fp4mm import reference  # noqa: E402
from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402

C = g.SM90Config
SHAPES = [(M, N, 3072) for N in (18432, 3072) for M in (1, 8, 16, 32, 64, 128, 256)] + [
    (1, 8192, 8192), (16, 8192, 8192), (64, 8192, 8192)]


# --mid: 64 < M <= 128, where BN 64 (two token tiles) and BN 128 compete
MID_SHAPES = [(M, N, 3072) for N in (3072, 8192, 18432) for M in (80, 96, 128)] + [
    (96, 8192, 8192), (128, 8192, 8192), (128, 4096, 4096)]


def configs(M, grouped=False, mid=False):
    out = []
    for bn in ((64, 128) if mid else (16, 32, 64, 128)):
        if bn > 16 and bn // 2 >= M:
            continue
        for st in ((4, 6) if grouped or mid else (4, 6, 8)):
            for sp in ((1, 2, 4, 6) if grouped or mid else (1, 2, 4, 6, 8, 12)):
                c = C(bn, st, True, sp)
                if g.config_is_valid(c, grouped=grouped):
                    out.append(c)
    return out


def time_configs(label, cfgs, heur, run, ref, out, copies, row, predict=None):
    """Each config (and the heuristic's) checked against ``ref`` through ``run(i, out, cfg)``
    (weight copy i), then timed over the copies; prints the heuristic's time and the best six
    under ``label``; returns one result row per timed config (``row`` plus the config and
    times, and ``predict(cfg)`` as predicted_us when given)."""
    rows, res = [], []
    for cfg in cfgs + ([heur] if heur not in cfgs else []):
        o = torch.full_like(out, float("nan"))
        run(0, o, cfg)
        torch.cuda.synchronize()
        if not close(o, ref)[0]:
            print(f"FAIL (not timed) {label} {cfg}", flush=True)
            continue
        t = time_graph([lambda i=i, cfg=cfg: run(i, out, cfg) for i in range(copies)])
        res.append((t[0], cfg))
        r = dict(row, BN=cfg.BN, STAGES=cfg.STAGES, SPLIT=cfg.SPLIT, heuristic=cfg == heur,
                 median_us=t[0], min_us=t[1], max_us=t[2])
        if predict is not None:
            r["predicted_us"] = predict(cfg)
        rows.append(r)
    res.sort(key=lambda r: r[0])
    h = next((t for t, c in res if c == heur), float("nan"))
    print(f"{label}: heuristic {heur.BN}/{heur.STAGES}/{heur.SPLIT} {h:.2f} | "
          + "  ".join(f"{c.BN}/{c.STAGES}/{c.SPLIT} {t:.2f}" for t, c in res[:6]), flush=True)
    return rows


def grouped_main(group):
    rows = []
    order = "low_first"
    for M, N, K in [(M, N, 3072) for N in (18432, 8192) for M in (16, 32, 64, 128)]:
        wbytes = N * K // 2 + N * K // group * 2
        copies = max(2, int(3 * 50e6 // wbytes) + 1)
        x = (torch.randn(M, K, device="cuda") * 0.5).half()
        ws_list = []
        for i in range(copies):
            wq = gen(1, N, K, seed=200 + i)[2]
            sc = (torch.rand(N, K // group, device="cuda") * 0.1 + 0.01).half()
            ws_list.append((wq, sc))
        packs = [g.prepack_grouped_sm90(w, s, group, order) for w, s in ws_list]
        ref = reference.w4a16_mm(x, *ws_list[0], group, order=order)
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        heur = g.choose_config(M, N, K, grouped=True)

        def run(i, o, cfg):
            g.fp4_gemm_sm90_grouped(x, None, None, group, order, o, prepacked=packs[i],
                                    config=cfg)

        rows += time_configs(f"g{group} {M:4d}x{N}x{K}", configs(M, True), heur, run, ref, out,
                             copies, dict(group=group, M=M, N=N, K=K))
    return rows


def main():
    if "--grouped" in sys.argv:
        group = int(sys.argv[sys.argv.index("--grouped") + 1])
        rows = grouped_main(group)
        save_rows(f"gemm_small_m_sweep_g{group}", rows)
        return
    rows = []
    order = "low_first"
    mid = "--mid" in sys.argv
    splits_only = "--splits" in sys.argv
    shapes = MID_SHAPES if mid else SHAPES
    if splits_only:
        shapes = [s for s in SHAPES if s[0] <= 64]
    for M, N, K in shapes:
        wbytes = N * K // 2 + N * K // 16
        copies = max(2, int(3 * 50e6 // wbytes) + 1)
        xq, xs, wq0, ws0 = gen(M, N, K, seed=M + N)
        ws_list = [(wq0, ws0)] + [gen(1, N, K, seed=100 + i)[2:] for i in range(copies - 1)]
        packs = [g.prepack_weight_sm90(w, s, order) for w, s in ws_list]
        x16 = dequantize_nvfp4_blocks(xq, xs, order).half()  # exact
        ref = x16.float() @ dequantize_nvfp4_blocks(wq0, ws0, order).T * 0.37
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        heur = g.choose_config(M, N, K)
        # --mid also times the W4A4 call (x pre-pass; split 2 summed in the GEMM)
        for op in (("w4a16", "w4a4") if mid else ("w4a16",)):

            def run(i, o, cfg):
                if op == "w4a4":
                    g.fp4_gemm_sm90(xq, xs, None, None, 0.37, order, o, prepacked=packs[i],
                                    config=cfg)
                else:
                    g.gemm_sm90_dense_x(x16, packs[i], 0.37, o, config=cfg)

            cfgs = ([C(heur.BN, heur.STAGES, True, sp) for sp in (1, 2, 3, 4, 6, 8, 12)]
                    if splits_only else configs(M, mid=mid))
            rows += time_configs(f"{op} {M:4d}x{N}x{K}", cfgs, heur, run, ref,
                                 out, copies, dict(op=op, M=M, N=N, K=K),
                                 lambda cfg: g.predict_us(M, N, K, cfg, 132))
    save_rows("gemm_mid_m_sweep" if mid else ("gemm_split_sweep" if splits_only
                                              else "gemm_small_m_sweep"), rows)


if __name__ == "__main__":
    main()
