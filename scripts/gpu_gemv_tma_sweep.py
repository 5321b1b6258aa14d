"""GPU sweep for the TMA-fed decode GEMV (fp4mm/kernels/fp4_gemv_tma_sm90.py), NVFP4 weights with
16-bit x at 9-32 tokens: its configs against the kernels the ops used before, raw and prepacked.

Usage (sm_90): ``python scripts/gpu_gemv_tma_sweep.py [--quick]`` (writes $OUT or .; quick: the
heuristic config only, no ring or GEMM rows). Every timed kernel is
checked against the fp32 oracle first; CUDA-graph medians over 4 weight copies. Per case:
- ``tma <config>``: the kernel, each config;
- ``ring``: the register-ring Gluon GEMV (fp4_gemv_sm90, its heuristic; M <= 16 only);
- ``triton``: the plain-Triton GEMV (its heuristic);
- ``op raw`` / ``op prepacked``: the public ``nvfp4_w4a16_mm`` as dispatched now;
- ``gemm prepacked``: the public op with the GEMM forced (FP4MM_KERNEL=gemm), prepacked weights.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, close, save_rows, time_graph  # noqa: E402

CONFIGS = [T.GemvTMAConfig(rt, st, sp) for rt in (2,) for st in (2, 3) for sp in (1, 2, 3)]


def timed(name, p, fns, check, rows, case):
    o = check()
    ok, err = close(o, p.reference(0))
    if not ok:
        print(f"  WRONG {name} err {err:.2e}", flush=True)
        rows.append(dict(case, impl=name, ok=False))
        return None
    t = time_graph(fns)[0]
    rows.append(dict(case, impl=name, ok=True, us=t))
    return t


def main():
    quick = "--quick" in sys.argv
    rows = []
    for dt in (torch.bfloat16, torch.float16):
        for N, K in ((18432, 3072), (8192, 8192), (3072, 3072)):
            for M in (9, 16, 24, 32) if quick else (9, 12, 16, 24, 32):
                p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
                x = p.x[0]
                gs = 1.0 / p.alpha
                case = dict(dtype=str(dt), M=M, N=N, K=K)
                out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                out_x = torch.empty((M, N), dtype=dt, device="cuda")
                f32 = lambda: torch.full((M, N), float("nan"), device="cuda")  # noqa: E731
                res = {}
                for cfg in [T.choose_config(M, N, K)] if quick else CONFIGS:
                    def run(i, o, cfg=cfg):
                        T.gemv_tma_sm90(x, *p.w[i], p.alpha, "low_first", o, config=cfg)
                    res[f"tma {cfg.row_tiles}/{cfg.stages}/{cfg.split_k}"] = timed(
                        f"tma {cfg}", p, [lambda i=i: run(i, out) for i in range(4)],
                        lambda: (lambda o: (run(0, o), o)[1])(f32()), rows, case)
                if M <= 16 and not quick:
                    def ring(i, o):
                        S.gemv_sm90(x, None, *p.w[i], p.alpha, "low_first", o)
                    res["ring"] = timed("ring", p, [lambda i=i: ring(i, out) for i in range(4)],
                                        lambda: (lambda o: (ring(0, o), o)[1])(f32()), rows, case)
                res["triton"] = timed("triton", p, [lambda i=i: p.gemv(i, out, None)
                                                    for i in range(4)],
                                      lambda: (lambda o: (p.gemv(0, o, None), o)[1])(f32()),
                                      rows, case)
                res["op raw"] = timed(
                    "op raw", p,
                    [lambda i=i: fp4mm.nvfp4_w4a16_mm(x, *p.w[i], gs, out=out_x)
                     for i in range(4)],
                    lambda: fp4mm.nvfp4_w4a16_mm(x, *p.w[0], gs), rows, case)
                pre = [fp4mm.prepack_nvfp4_weight(*p.w[i]) for i in range(4)]
                res["op prepacked"] = timed(
                    "op prepacked", p,
                    [lambda i=i: fp4mm.nvfp4_w4a16_mm(x, pre[i], None, gs) for i in range(4)],
                    lambda: fp4mm.nvfp4_w4a16_mm(x, pre[0], None, gs), rows, case)
                os.environ["FP4MM_KERNEL"] = "gemm"
                res["gemm prepacked"] = None if quick else timed(
                    "gemm prepacked", p,
                    [lambda i=i: fp4mm.nvfp4_w4a16_mm(x, pre[i], None, gs) for i in range(4)],
                    lambda: fp4mm.nvfp4_w4a16_mm(x, pre[0], None, gs), rows, case)
                del os.environ["FP4MM_KERNEL"]
                best = min((v, k) for k, v in res.items() if v is not None and k.startswith("tma"))
                print(f"{str(dt)[6:]:8s} {N:5d}x{K:<5d} M={M:2d} | tma best {best[0]:6.2f} "
                      f"({best[1]}) heur {res[_heur(M, N, K)]:6.2f} | ring "
                      f"{res.get('ring') or float('nan'):6.2f} triton {res['triton']:6.2f} | op "
                      f"raw {res['op raw']:6.2f} prepacked {res['op prepacked']:6.2f} gemm "
                      f"{res['gemm prepacked'] or float('nan'):6.2f}", flush=True)
    save_rows("gemv-tma-sweep", rows)


def _heur(M, N, K):
    c = T.choose_config(M, N, K)
    return f"tma {c.row_tiles}/{c.stages}/{c.split_k}"


if __name__ == "__main__":
    main()
