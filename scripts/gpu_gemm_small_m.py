# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: the Gluon GEMM (prepacked weights) with small token tiles (BN 16-64) as a decode
kernel, against the Gluon GEMV (raw weights, heuristic) in the same run. Schedules: the
shipped last-wave split-K (``SPLIT``), and every tile split into K slices ("all-split", the
reduce kernel sums them). W4A4 (x pre-pass + GEMM) and fp16-x W4A16; every variant checked
against the oracle first, then CUDA-graph medians over 4 weight copies.
``--shape MxNxK --configs BN/STAGES/SPLIT,...``: those GEMM configs (last-wave split) at one
shape instead, with cuBLAS bf16 on pre-dequantised operands timed beside them.
Usage on an sm_90 machine: ``python scripts/gpu_gemm_small_m.py [--shape ... --configs ...]``
(JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import close, save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as v  # noqa: E402

C = g.SM90Config
_SCHEDULE = g._schedule


def all_split(split):
    def sched(M, packed, config, sms):
        nt = triton.cdiv(M, config.BN) * triton.cdiv(packed.N, g.BM)
        kt = triton.cdiv(packed.K, g.K_ALIGN) * 2
        kps = triton.cdiv(kt, split)
        kps += kps % 2
        sp = triton.cdiv(kt, kps)
        return g.Schedule(nt, nt * sp, 0, sp, kps, kt)
    return sched


def variants(M):
    out = []
    for bn in (16, 32, 64):
        if bn > 16 and bn // 2 >= max(M, 16):
            continue
        for st in (4, 8):
            for sp in (1, 2, 6):
                out.append((f"bn{bn}s{st}/last{sp}", C(bn, st, True, sp), None))
            for sp in (2, 4, 8):
                out.append((f"bn{bn}s{st}/all{sp}", C(bn, st, True, sp), all_split(sp)))
    return out


def _arg(name):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main():
    N, K, order = 18432, 3072, "low_first"
    shape, forced = _arg("--shape"), _arg("--configs")
    Ms = (1, 16, 64)
    if shape:
        M0, N, K = (int(v) for v in shape.split("x"))
        Ms = (M0,)
    rows = []
    for M in Ms:
        xq, xs, wq0, ws0 = gen(M, N, K, seed=M)
        ws_list = [(wq0, ws0)] + [gen(1, N, K, seed=100 + i)[2:] for i in range(3)]
        packs = [g.prepack_weight_sm90(w, s, order) for w, s in ws_list]
        x16 = dequantize_nvfp4_blocks(xq, xs, order).half()  # exact
        wd = dequantize_nvfp4_blocks(wq0, ws0, order)
        ref16 = x16.float() @ wd.T * 0.37
        if forced:
            xb = x16.bfloat16()
            wbs = [dequantize_nvfp4_blocks(w, s, order).bfloat16() for w, s in ws_list]
            ob = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        for op in ("nvfp4_mm", "w4a16_fp16"):
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            res = {}

            def gemv(i, o):
                w, s = ws_list[i]
                if op == "nvfp4_mm":
                    v.gemv_sm90(xq, xs, w, s, 1 / 64, order, o)
                else:
                    v.gemv_sm90(x16, None, w, s, 0.37, order, o)

            def gemm(i, o, cfg):
                if cfg == "cublas":  # bf16 on pre-dequantised operands (exact in bf16), into ob
                    torch.matmul(xb, wbs[i].T, out=ob)
                elif op == "nvfp4_mm":
                    g.fp4_gemm_sm90(xq, xs, None, None, 1 / 64, order, o, prepacked=packs[i],
                                    config=cfg)
                else:
                    g.gemm_sm90_dense_x(x16, packs[i], 0.37, o, config=cfg)

            def ok(o, cfg=None):
                if cfg == "cublas":  # its output is ob, without alpha
                    return close(ob, ref16 / 0.37)[0]
                if op == "nvfp4_mm":
                    return check(o, xq, xs, wq0, ws0, 1 / 64, order)[0]
                return close(o, ref16)[0]

            if forced:
                cands = [("cublas_bf16", "cublas", None)] + [
                    (f"bn{b}s{st}/last{sp}", C(int(b), int(st), True, int(sp)), None)
                    for b, st, sp in (c.split("/") for c in forced.split(","))]
            else:
                cands = [("gemv", None, None)] + variants(M)
            for name, cfg, sched in cands:
                g._schedule = sched or _SCHEDULE
                try:
                    o = torch.full_like(out, float("nan"))
                    (gemv(0, o) if cfg is None else gemm(0, o, cfg))
                    torch.cuda.synchronize()
                    if not ok(o, cfg):
                        print(f"FAIL (not timed) M={M} {op} {name}", flush=True)
                        continue
                    fns = [(lambda i=i: gemv(i, out)) if cfg is None else
                           (lambda i=i, cfg=cfg: gemm(i, out, cfg)) for i in range(4)]
                    t = time_graph(fns)
                except Exception as e:  # noqa: BLE001
                    print(f"ERROR M={M} {op} {name}: {type(e).__name__}: {str(e)[:200]}",
                          flush=True)
                    continue
                finally:
                    g._schedule = _SCHEDULE
                res[name] = t[0]
                rows.append(dict(op=op, M=M, N=N, K=K, variant=name, median_us=t[0],
                                 min_us=t[1], max_us=t[2]))
            best = sorted(res.items(), key=lambda r: r[1])
            print(f"M={M:2d} {op:11s} gemv {res.get('gemv', float('nan')):.2f} | best: "
                  + "  ".join(f"{n} {t:.2f}" for n, t in best[:8]), flush=True)
    save_rows("gemm_small_m", rows)


if __name__ == "__main__":
    main()
