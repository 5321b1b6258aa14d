"""W4A4 register ring with x held one K step ahead (one x slot) instead of in the two-slot ring.

Record of session 17's first probe (bench/results/2026-11-27-gemv-x-one-ahead-h100.json): it
patches the kernel loop of commit a6fb0a4 and no longer applies (the kernel now has this as
``GemvSM90Config.x_ahead``; ``gpu_gemv_x_ahead_tune.py`` times that).

x is the same for every CTA and lives in L2, and a step at 64 tokens is about a thousand
instructions per warp, so one step of lead should hide its latency. A compile-only probe
(session 16, CPU) found the saving large: two row tiles at 64 tokens 252 registers with no spill
(shipped code: 255 + 112-128 B of spill), one row tile at 64 tokens 164 (shipped: 234), two
row tiles at 32 tokens 164 (shipped: 221). Fewer registers also mean more resident warps.

Usage: ``python scripts/gpu_gemv_x_one_ahead.py [--compile-only]``: compile report (CPU or GPU);
on sm_90 then every config is checked against the fp32 oracle and timed (CUDA-graph medians
over 4 weight copies) beside the shipped kernel, W4A4, M = 1..64, N x K = 18432 x 3072 and
8192 x 8192 (writes ``gemv-x-one-ahead_<time>.json`` to $OUT or .). The patch drops the masked
ring tail, so only configs whose splits run whole ring turns are used (the oracle check would
catch any other).
"""

from __future__ import annotations

import os
import re
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "kernels"))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402

_RING = '''\
        acc = _step(acc, wd0, sc0, xa0, xb0, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP)
        wd0, sc0, xa0, xb0 = _load_step(
            w_ptr, ws_ptr, x_ptr, xs_ptr, w_offs, s_offs, xa_offs, xb_offs,
            gl.minimum(i + U, last), i + U < i_end, X_FP4, MASKED, KSTEP, W_GROUP)
        acc = _step(acc, wd1, sc1, xa1, xb1, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP)
        wd1, sc1, xa1, xb1 = _load_step(
            w_ptr, ws_ptr, x_ptr, xs_ptr, w_offs, s_offs, xa_offs, xb_offs,
            gl.minimum(i + 1 + U, last), i + 1 + U < i_end, X_FP4, MASKED, KSTEP, W_GROUP)'''
_ONE_AHEAD = '''\
        acc = _step(acc, wd0, sc0, xa0, xb0, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP)
        xa0 = gl.load(x_ptr + xa_offs + gl.minimum(i + 1, last) * (KSTEP // 8))
        xb0 = gl.load(xs_ptr + xb_offs + gl.minimum(i + 1, last) * (KSTEP // 32))
        wd0 = gl.load(w_ptr + w_offs + gl.minimum(i + U, last) * (KSTEP // 8))
        sc0 = gl.load(ws_ptr + s_offs + gl.minimum(i + U, last) * (KSTEP // 32))
        acc = _step(acc, wd1, sc1, xa0, xb0, X_FP4, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,
                    W_WORDS, X_WORDS, a_l, b_l, KSTEP, W_GROUP)
        xa0 = gl.load(x_ptr + xa_offs + gl.minimum(i + 2, last) * (KSTEP // 8))
        xb0 = gl.load(xs_ptr + xb_offs + gl.minimum(i + 2, last) * (KSTEP // 32))
        wd1 = gl.load(w_ptr + w_offs + gl.minimum(i + 1 + U, last) * (KSTEP // 8))
        sc1 = gl.load(ws_ptr + s_offs + gl.minimum(i + 1 + U, last) * (KSTEP // 32))'''

C = S.GemvSM90Config


def probe_module():
    with open(S.__file__) as f:
        src = f.read()
    return patched_module("fp4_gemv_sm90_x_one_ahead", src, [(_RING, _ONE_AHEAD)])


def compile_table(mod) -> list[dict]:
    import test_fp4_gemv_sm90 as t

    rows = []
    for name, m in (("shipped", S), ("x one ahead", mod)):
        t.S = m  # compile_report compiles t.S's kernel
        for nt, nw, rt in ((8, 2, 2), (16, 2, 2), (32, 2, 2), (64, 2, 1), (64, 1, 2), (64, 2, 2)):
            log = t.compile_report("fp4", nt, nw, 1, 0, rt, True, False, "fp16", 0)["log"]
            regs = int(re.search(r"Used (\d+) registers", log).group(1))
            spill = int(re.search(r"(\d+) bytes spill stores", log).group(1))
            rows.append(dict(kernel=name, NT=nt, num_warps=nw, row_tiles=rt, regs=regs,
                             spill=spill))
            print(f"{name:12s} NT {nt:2d} w{nw} rt{rt}: {regs} registers, {spill} B spill",
                  flush=True)
    t.S = S
    return rows


def run(mod, p, i, out, cfg):
    wq, ws = p.w[i]
    mod.gemv_sm90(p.x[0], p.x[1], wq, ws, p.alpha, p.order, out, config=cfg)


def main():
    mod = probe_module()
    rows = [dict(compile=compile_table(mod))]
    if "--compile-only" in sys.argv or not torch.cuda.is_available():
        return
    for N, K in ((18432, 3072), (8192, 8192)):
        for M in (1, 4, 16, 32, 33, 48, 64):
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            heur = S.choose_config(M, N, K, True)
            res = {}
            for nw in (1, 2):
                for rt in (1, 2):
                    for split in (1, 2, 4):
                        cfg = C(nw, 1, split, 0, rt)
                        for name, m in (("shipped", S), ("x1", mod)):
                            if name == "shipped" and M > 32 and rt == 2:
                                continue  # spills: not a shipped kernel
                            o = torch.full((M, N), float("nan"), device="cuda")
                            run(m, p, 0, o, cfg)
                            if not close(o, p.reference(0))[0]:
                                print("WRONG", name, M, N, K, cfg, flush=True)
                                continue
                            res[f"{name} w{nw} rt{rt} s{split}"] = time_graph(
                                [lambda i=i, m=m, cfg=cfg, p=p, out=out: run(m, p, i, out, cfg)
                                 for i in range(4)])[0]
            best = {n: min((v, k) for k, v in res.items() if k.startswith(n))
                    for n in ("shipped", "x1")}
            print(f"{N}x{K} M={M}: heuristic {heur} | best shipped {best['shipped'][0]:6.2f} "
                  f"({best['shipped'][1]}) | best x1 {best['x1'][0]:6.2f} ({best['x1'][1]})",
                  flush=True)
            rows.append(dict(M=M, N=N, K=K, **res))
    save_rows("gemv-x-one-ahead", rows)


if __name__ == "__main__":
    main()
