"""GPU check-then-time script: the Gluon decode GEMV reading sm90 prepacked weights (``packed=``)
against the same kernel on raw weights, same configs, same run.

Usage on an sm_90 machine: ``python scripts/gpu_gemv_sm90_prepacked.py [--quick]`` (writes $OUT
or .). Every config is checked against the fp32 oracle (output poisoned with NaN, fresh random
inputs, ragged N and M) before it is timed; a failing config is never timed. Timing: CUDA-graph
medians over 4 weight copies (>= 3x the 50 MB L2).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemm_sm90 as G  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402

C = S.GemvSM90Config


def run(p, i, out, cfg, packed):
    wq, ws = p.w[i]
    if packed is None:
        S.gemv_sm90(p.x[0], None, wq, ws, p.alpha, p.order, out, config=cfg)
    else:
        S.gemv_sm90(p.x[0], None, None, None, p.alpha, p.order, out, config=cfg,
                    packed=packed[i])


def configs(M, N, K):
    heur = S.choose_config(M, N, K)
    out = [heur]
    for nw in (1, 2):
        for rt in (1, 2):
            for sp in (1, 2, 3, 4):
                c = C(nw, 1, sp, 0, rt)
                if c not in out and not (rt == 2 and M > 16):
                    out.append(c)
    return heur, out


def main():
    quick = "--quick" in sys.argv
    rows = []
    fails = 0
    # correctness: ragged shapes, both x dtypes, both orders of the raw bytes, fp32/fp16 out
    for M, N, K in ((1, 300, 256), (3, 129, 384), (8, 1000, 1024), (13, 200, 640),
                    (16, 64, 128), (1, 18432, 3072)):
        for dt in (torch.float16, torch.bfloat16):
            for order in ("low_first", "high_first"):
                p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, order=order)
                packed = [G.prepack_weight_sm90(*p.w[0], order)]
                for cfg in configs(M, N, K)[1][:6]:
                    for od in (torch.float32, torch.float16):
                        out = torch.full((M, N), float("nan"), dtype=od, device="cuda")
                        run(p, 0, out, cfg, packed)
                        torch.cuda.synchronize()
                        ok, err = close(out, p.reference(0))
                        rows.append(dict(kind="check", M=M, N=N, K=K, dtype=str(dt),
                                         order=order, out=str(od), config=str(cfg), ok=ok,
                                         rel_err=err))
                        if not ok:
                            fails += 1
                            print(f"FAIL {M}x{N}x{K} {dt} {order} {od} {cfg} err {err:.3g}",
                                  flush=True)
    print(f"checks: {sum(r['ok'] for r in rows)} passed, {fails} failed", flush=True)
    # timing
    cases = [(1, 18432, 3072), (4, 18432, 3072), (8, 18432, 3072), (16, 18432, 3072),
             (1, 8192, 8192)]
    if quick:
        cases = cases[:1]
    for M, N, K in cases:
        for dt in (torch.float16, torch.bfloat16):
            p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
            packed = [G.prepack_weight_sm90(wq, ws, p.order) for wq, ws in p.w]
            nbytes = p.bytes_moved(torch.float16)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            heur, cfgs = configs(M, N, K)
            best = {}
            for cfg in cfgs:
                for layout, pk in (("raw", None), ("sm90", packed)):
                    o = torch.full_like(out, float("nan"))
                    run(p, 0, o, cfg, pk)
                    if not close(o, p.reference(0))[0]:
                        print(f"  FAIL (not timed) {layout} {M} {dt} {cfg}")
                        fails += 1
                        continue
                    t = time_graph([lambda i=i, c=cfg, k=pk: run(p, i, out, c, k)
                                    for i in range(4)])
                    rows.append(dict(kind="time", M=M, N=N, K=K, dtype=str(dt), layout=layout,
                                     config=str(cfg), heuristic=cfg == heur, median_us=t[0],
                                     min_us=t[1], max_us=t[2],
                                     gbps=nbytes / (t[0] * 1e-6) / 1e9))
                    if layout not in best or t[0] < best[layout][0]:
                        best[layout] = (t[0], cfg)
            h = {r["layout"]: r["median_us"] for r in rows if r["kind"] == "time"
                 and r["heuristic"] and (r["M"], r["N"], r["K"], r["dtype"]) == (M, N, K, str(dt))}
            print(f"{str(dt)[6:]:8s} M={M:2d} {N}x{K}: heuristic raw {h.get('raw', 0):6.2f} "
                  f"sm90 {h.get('sm90', 0):6.2f} | best raw {best['raw'][0]:6.2f} "
                  f"{best['raw'][1]} | best sm90 {best['sm90'][0]:6.2f} {best['sm90'][1]}",
                  flush=True)
    save_rows("gemv-sm90-prepacked", rows)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
