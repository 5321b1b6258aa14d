# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Three consumer warpgroups (192-row tiles, ``SM90Config.WG = 3``) against two, W4A4, CUDA-graph
timed on an H100, with the wgmmas of the worker partition pipelined (session 19).

The kernel is session 12's 12-warp WG = 3 variant (commit 96682df, no producer warp), which this
script needs beside it: ``git worktree add /tmp/wg3 96682df``, then copy ``/tmp/wg3/fp4mm`` and
``/tmp/wg3/scripts/gpu_gluon.py`` (its ``sys.path`` line pointed at this directory) into one
directory with this script and ``ptx_worker_loop_patch.py`` (renamed ``ptx_patch.py``). Without
the patch (``WG3_PATCH=0``) ptxas serialises every wgmma (C7512); with it, none.

Usage: ``python gpu_gemm_wg3_patched.py [--out DIR] [--skip-check]``. Part 1 checks every WG = 3
path against the oracle (ragged M, N, K; split-K by the reduce pass and in the kernel; three out
dtypes; both nibble orders; output poisoned) and, where the K schedule is the same, bit for bit
against WG = 2. Part 2 times the whole call (x pre-pass + GEMM) of several configs per shape,
beside cuBLAS bf16 on pre-dequantised operands in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ptx_patch  # noqa: E402

if os.environ.get("WG3_PATCH", "1") == "1":
    ptx_patch.install()
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.harness import graph_timer  # noqa: E402
from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402

DEV = "cuda"
C = g.SM90Config
CHECKS = [  # (M, N, K, config, out dtype, order)
    (1024, 3072, 3072, C(128, 4, WG=3), torch.float16, "low_first"),
    (100, 392, 1040, C(128, 4, WG=3), torch.float16, "high_first"),  # N % 192 != 0, ragged K
    (300, 3500, 1040, C(64, 6, WG=3, SPLIT=4), torch.bfloat16, "low_first"),  # reduce pass
    (1, 200, 208, C(16, 4, WG=3), torch.float32, "low_first"),
    (2048, 3072, 3072, C(128, 4, WG=3, SPLIT=2), torch.float16, "high_first"),
    (128, 3072, 3072, C(128, 4, WG=3, SPLIT=2), torch.float16, "low_first"),  # in-kernel sum
    (128, 3072, 3072, C(128, 4, WG=3, SPLIT=6), torch.float16, "low_first"),
    (777, 1000, 2048, C(128, 4, WG=3, SPLIT=2), torch.float32, "low_first"),
    (4096, 3072, 3072, C(128, 4, WG=3), torch.bfloat16, "low_first"),
]
SHAPES = [(1024, 3072, 3072), (2048, 3072, 3072), (128, 3072, 3072), (4096, 3072, 3072),
          (2048, 18432, 3072)]
CONFIGS = {
    (128, 3072, 3072): [C(128, 4, WG=3, SPLIT=s) for s in (2, 4, 6, 8)]
                       + [C(64, 6, WG=3, SPLIT=s) for s in (4, 8)],
    (1024, 3072, 3072): [C(128, 4, WG=3), C(128, 6, WG=3), C(64, 6, WG=3)],
    (2048, 3072, 3072): [C(128, 4, WG=3), C(128, 6, WG=3), C(128, 4, WG=3, SPLIT=2)],
    (4096, 3072, 3072): [C(128, 4, WG=3), C(128, 6, WG=3)],
    (128, 18432, 3072): [C(128, 4, WG=3, SPLIT=s) for s in (1, 2, 4)],
    (1024, 18432, 3072): [C(128, 4, WG=3), C(128, 6, WG=3), C(128, 4, WG=3, SPLIT=2)],
    (2048, 18432, 3072): [C(128, 4, WG=3), C(128, 6, WG=3)],
}


def run(xq, xs, pack, alpha, order, out_dtype, config):
    M, N = xq.shape[0], pack.N
    out = torch.full((M, N), float("nan"), dtype=out_dtype, device=DEV)  # poison
    g.fp4_gemm_sm90(xq, xs, None, None, alpha, order, out, prepacked=pack, config=config)
    return out


def correctness(rows):
    ok_all = True
    for M, N, K, cfg, odt, order in CHECKS:
        xq, xs, wq, ws = gen(M, N, K, seed=M + N)
        pack = g.prepack_weight_sm90(wq, ws, order)
        out = run(xq, xs, pack, 0.5, order, odt, cfg)
        ok, rel, _ = check(out, xq, xs, wq, ws, 0.5, order)
        again = run(xq, xs, pack, 0.5, order, odt, cfg)  # the counters were reset
        same = torch.equal(out, again)
        two = C(cfg.BN, cfg.STAGES, WG=2, SPLIT=cfg.SPLIT)
        sc3, sc2 = (g.schedule(M, N, K, c, g.sm_count(DEV)) for c in (cfg, two))
        bits = None
        if sc3.split == sc2.split == 1:
            bits = torch.equal(out, run(xq, xs, pack, 0.5, order, odt, two))
        fix = g.fixup_in_kernel(sc3, cfg, g.sm_count(DEV))
        good = ok and same and bits is not False
        ok_all &= good
        print(f"check {M}x{N}x{K} {cfg} {odt} {order}: oracle {ok} (rel {rel:.2e}), "
              f"repeat equal {same}, equal to WG=2 {bits}, split {sc3.split}, "
              f"in-kernel sum {fix} -> {'PASS' if good else 'FAIL'}", flush=True)
        rows.append(dict(kind="check", M=M, N=N, K=K, config=str(cfg), out=str(odt),
                         order=order, oracle=ok, repeat_equal=same, equal_wg2=bits,
                         split=sc3.split, fixup=fix, passed=good))
    return ok_all


def timing(rows):
    order, alpha = "high_first", 1 / 64
    sms = g.sm_count(DEV)
    for M, N, K in SHAPES:
        xq, xs, wq, ws = gen(M, N, K, seed=1)
        ncopy = max(2, int(3 * 50e6 // (wq.numel() + ws.numel())) + 1)
        packs = [g.prepack_weight_sm90(wq.clone(), ws.clone(), order) for _ in range(ncopy)]
        wd = dequantize_nvfp4_blocks(wq, ws, order).bfloat16()
        wds = [wd.clone() for _ in range(max(2, int(3 * 50e6 // (wd.numel() * 2)) + 1))]
        xb = dequantize_nvfp4_blocks(xq, xs, order).bfloat16()
        out = torch.empty((M, N), dtype=torch.float16, device=DEV)
        outb = torch.empty((M, N), dtype=torch.bfloat16, device=DEV)
        i = [0]

        def nxt(lst):
            i[0] += 1
            return lst[i[0] % len(lst)]

        def add(name, fn, base=None):
            med, lo, hi = graph_timer(fn, False)
            us = med * 1e3
            ratio = base / us if base else 1.0
            rows.append(dict(kind="time", M=M, N=N, K=K, impl=name, us=us, min_us=lo * 1e3,
                             max_us=hi * 1e3, ratio_vs_cublas_bf16=ratio))
            print(f"{M:>5}x{N}x{K} {name:<62} {us:8.1f} us  {ratio:5.3f}x", flush=True)
            return us

        base = add("cublas_bf16", lambda: torch.matmul(xb, nxt(wds).T, out=outb))
        heur = g.choose_config(M, N, K, torch.float16, sms)
        for cfg in [None] + CONFIGS[(M, N, K)]:
            c = cfg or heur
            o = run(xq, xs, packs[0], alpha, order, torch.float16, cfg)
            ok, _, _ = check(o, xq, xs, wq, ws, alpha, order)
            label = f"{c}{' (heuristic)' if cfg is None else ''}"
            if not ok:
                print(f"{label}: WRONG, not timed", flush=True)
                rows.append(dict(kind="time", M=M, N=N, K=K, impl=label, correct=False))
                continue
            sc = g.schedule(M, N, K, c, sms)
            label += f" tiles {sc.num_tiles} units {sc.num_units}"
            add(label, lambda: g.fp4_gemm_sm90(xq, xs, None, None, alpha, order, out,
                                               prepacked=nxt(packs), config=cfg), base)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--skip-check", action="store_true")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    print(dev, torch.__version__, flush=True)
    rows = []
    ok = True if args.skip_check else correctness(rows)
    print('ptx patched kernels:', len(ptx_patch.PATCHED), flush=True)
    if ok:
        timing(rows)
    res = dict(device=dev, torch=torch.__version__, date=datetime.datetime.now().isoformat(),
               git_commit=os.environ.get("FP4MM_GIT_COMMIT", ""), timer="graph", rows=rows)
    with open(os.path.join(args.out, "gluon_wg3.json"), "w") as f:
        json.dump(res, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
