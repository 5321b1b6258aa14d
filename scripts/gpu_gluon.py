# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""GPU batch for the Gluon sm_90a GEMM (fp4mm/kernels/fp4_gemm_sm90.py): correctness, then timing.

Usage (on an H100): ``python scripts/gpu_gluon.py [--out DIR] [--quick]``.
1. Correctness vs the fp32 oracle (fp4mm.reference.nvfp4_mm) on challenge-style random data at
   shapes that hit every tile boundary, every config path, an identity-activation one-hot probe
   (output = dequantised weight, bit for bit), and scales varying only by row / only by K-block.
2. Timing (triton.testing.do_bench, median) of our variants and cuBLAS bf16 on pre-dequantised
   operands, in the same run: the challenge case and the Table 5 rows. Prints a table, writes JSON.
A wrong kernel gets no time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm import reference  # noqa: E402
from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402

DEV = "cuda"
TABLE5 = [(128, 3072, 3072), (128, 18432, 3072), (1024, 3072, 3072), (1024, 18432, 3072),
          (2048, 3072, 3072), (2048, 18432, 3072), (4096, 3072, 3072)]


def gen(M, N, K, seed=0, zero_x=False):
    """The challenge generator: bytes uniform 0..255, scales uniform [0.5, 2) rounded to E4M3."""
    gen_ = torch.Generator(device=DEV).manual_seed(seed)
    xq = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, device=DEV, generator=gen_)
    if zero_x:
        xq.zero_()
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV, generator=gen_)
    xs = (torch.rand((M, K // 16), device=DEV, generator=gen_) * 1.5 + 0.5)
    ws = (torch.rand((N, K // 16), device=DEV, generator=gen_) * 1.5 + 0.5)
    xs = xs.to(torch.float8_e4m3fn).view(torch.uint8)
    ws = ws.to(torch.float8_e4m3fn).view(torch.uint8)
    return xq, xs, wq, ws


def check(out, xq, xs, wq, ws, alpha, order):
    """Elementwise: |out - ref| <= u |ref| + 2^-20 alpha (|x| @ |w|^T) (u: output rounding plus
    fp32 summation order); NaN only where the oracle has NaN. Returns (ok, max_rel, rel_norm)."""
    ref = reference.nvfp4_mm(xq, xs, wq, ws, alpha, order=order)
    xa = dequantize_nvfp4_blocks(xq, xs, order).abs()
    wa = dequantize_nvfp4_blocks(wq, ws, order).abs()
    bound = (xa @ wa.T) * abs(alpha)
    o = out.float()
    err = (o - ref).abs()
    rnd = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-20}[out.dtype]
    tol = ref.abs() * rnd + bound * 2.0**-20 + 1e-30
    finite_ok = torch.equal(torch.isnan(o), torch.isnan(ref))
    ok = finite_ok and bool((err <= tol).all())
    rel = float((err / (ref.abs() + bound * 2.0**-20 + 1e-30)).max())
    rn = float(torch.linalg.norm(o - ref) / torch.linalg.norm(ref).clamp_min(1e-30))
    return ok, rel, rn


def run_ours(xq, xs, wq, ws, alpha, order, out_dtype, config=None, packed=None):
    M, N = xq.shape[0], wq.shape[0]
    out = torch.full((M, N), float("nan"), dtype=out_dtype, device=DEV)  # poison
    g.fp4_gemm_sm90(xq, xs, wq, ws, alpha, order, out, prepacked=packed, config=config)
    return out


def correctness(results, quick):
    rows = []
    cases = [  # (M, N, K, alpha, order, out_dtype, config or None)
        (1, 128, 128, 1.0, "low_first", torch.float16, None),
        (1, 2, 16, 1.0, "high_first", torch.float16, None),
        (3, 5, 32, 1.0, "high_first", torch.float16, None),
        (30, 50, 64, 1.0, "high_first", torch.float16, None),
        (100, 200, 128, 1.0, "high_first", torch.float16, None),
        (255, 100, 128, 0.125, "high_first", torch.float16, None),
        (512, 1024, 1024, 1 / 64, "high_first", torch.float16, None),
        (300, 264, 208, 0.5, "low_first", torch.float16, None),  # K % 64 != 0, N % 128 != 0
        (257, 130, 96, 1.0, "low_first", torch.float16, None),  # N % 8 != 0 -> padded out
        (700, 392, 1040, 1.0, "low_first", torch.bfloat16, None),
        (700, 392, 1040, 1.0, "low_first", torch.float32, None),
        (2048, 18432, 3072, 1 / 64, "high_first", torch.float16, None),
    ]
    C = g.SM90Config
    cases += [  # split-K paths (v3): all tiles split, whole waves + split tail, non-persistent
        (128, 3072, 3072, 1 / 64, "high_first", torch.float16, None),
        (128, 18432, 3072, 1 / 64, "high_first", torch.float16, None),
        (1024, 18432, 3072, 1 / 64, "high_first", torch.float16, None),
        (100, 392, 1040, 1.0, "low_first", torch.float16, C(128, 6, True, 4)),
        (100, 392, 1040, 1.0, "low_first", torch.bfloat16, C(128, 6, True, 5)),
        (100, 392, 1040, 1.0, "low_first", torch.float32, C(128, 6, True, 3)),
        (300, 3500, 1040, 1.0, "low_first", torch.float16, C(64, 4, True, 4)),
        (33, 136, 208, 1.0, "low_first", torch.float16, C(32, 2, True, 16)),
        (129, 264, 640, 0.5, "low_first", torch.float16, C(256, 4, False, 3)),
        (2048, 3072, 3072, 1 / 64, "high_first", torch.float16, C(256, 4, True, 2)),
    ]
    if not quick:
        for bn in (16, 32, 64):
            cases.append((333, 392, 640, 1.0, "low_first", torch.float16, C(bn, 4, True)))
    for i, (M, N, K, alpha, order, odt, cfg) in enumerate(cases):
        xq, xs, wq, ws = gen(M, N, K, seed=100 + i, zero_x=(i == 1))
        out = run_ours(xq, xs, wq, ws, alpha, order, odt, cfg)
        ok, rel, rn = check(out, xq, xs, wq, ws, alpha, order)
        rows.append(dict(kind="random", M=M, N=N, K=K, alpha=alpha, order=order, out=str(odt),
                         config=str(cfg), ok=ok, max_rel=rel, rel_norm=rn))
        print(f"[{'ok' if ok else 'FAIL'}] random {M}x{N}x{K} {order} {odt} {cfg}: "
              f"max_rel={rel:.2e} rel_norm={rn:.2e}", flush=True)
    # split-K determinism: the reduce sums slices in a fixed order
    xq, xs, wq, ws = gen(128, 3072, 3072, seed=21)
    cfg = g.SM90Config(128, 6, True, 4)
    a = run_ours(xq, xs, wq, ws, 1.0, "low_first", torch.float32, cfg)
    b = run_ours(xq, xs, wq, ws, 1.0, "low_first", torch.float32, cfg)
    ok = torch.equal(a, b)
    rows.append(dict(kind="split_deterministic", ok=ok))
    print(f"[{'ok' if ok else 'FAIL'}] split-K bitwise deterministic", flush=True)
    # identity-activation one-hot probe: x = I (code 0x2 = 1.0, scale 1.0): out = dequant(w)^T...
    for K, N, bn in ((256, 384, 256), (192, 136, 64)):
        M = K
        codes = torch.zeros((M, K), dtype=torch.uint8, device=DEV)
        codes[torch.arange(M), torch.arange(M)] = 0x2
        xq = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
        xs = torch.full((M, K // 16), 0x38, dtype=torch.uint8, device=DEV)
        _, _, wq, ws = gen(M, N, K, seed=7)
        out = run_ours(xq, xs, wq, ws, 1.0, "low_first", torch.float16,
                       g.SM90Config(BN=bn, STAGES=4))
        wdq = dequantize_nvfp4_blocks(wq, ws, "low_first")  # (N, K)
        ok = torch.equal(out.float(), wdq.T)
        rows.append(dict(kind="identity", M=M, N=N, K=K, ok=ok))
        print(f"[{'ok' if ok else 'FAIL'}] identity probe K={K} N={N} BN={bn}", flush=True)
    # scales varying only by row / only by K-block (the class of bug a mis-laid scale tile makes)
    M, N, K = 200, 256, 512
    xq, xs, wq, ws = gen(M, N, K, seed=11)
    byrow = (torch.arange(N, device=DEV) % 7 + 0x30).to(torch.uint8)[:, None].expand(N, K // 16)
    kb = torch.arange(K // 16, device=DEV)
    bykb = (kb % 9 + 0x30).to(torch.uint8)[None, :].expand(N, K // 16)
    for name, w_s in (("scales-by-row", byrow), ("scales-by-kblock", bykb)):
        w_s = w_s.contiguous()
        out = run_ours(xq, xs, wq, w_s, 1.0, "low_first", torch.float16)
        ok, rel, rn = check(out, xq, xs, wq, w_s, 1.0, "low_first")
        rows.append(dict(kind=name, M=M, N=N, K=K, ok=ok, max_rel=rel, rel_norm=rn))
        print(f"[{'ok' if ok else 'FAIL'}] {name}: max_rel={rel:.2e}", flush=True)
    # against the interpreter-tested plain-Triton twin, when it exists
    try:
        from fp4mm.kernels.fp4_gemm import nvfp4_mm_gemm
        xq, xs, wq, ws = gen(300, 264, 208, seed=5)
        a = run_ours(xq, xs, wq, ws, 0.5, "low_first", torch.float16)
        b = torch.empty_like(a)
        nvfp4_mm_gemm(xq, xs, wq, ws, 0.5, "low_first", b)
        d = float(((a.float() - b.float()).abs() / (b.float().abs() + 1e-3)).max())
        ok = d < 2e-3
        rows.append(dict(kind="vs_twin", ok=ok, max_rel=d))
        print(f"[{'ok' if ok else 'FAIL'}] vs plain-Triton twin: max_rel={d:.2e}", flush=True)
    except Exception as e:  # the twin is another helper's file
        print(f"[skip] twin: {type(e).__name__}: {e}", flush=True)
    results["correctness"] = rows
    return all(r["ok"] for r in rows)


def graph_time(fn, calls, rep):
    """Per-call GPU time of ``fn`` with the host out of the way: ``calls`` calls captured in one
    CUDA graph, replayed."""
    fn()
    torch.cuda.synchronize()
    gph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(gph):
        for _ in range(calls):
            fn()
    return do_bench(gph.replay, warmup=10, rep=rep, return_mode="median") / calls


def bench_shape(M, N, K, variants, rows, rep):
    xq, xs, wq, ws = gen(M, N, K, seed=0)
    alpha, order = 1 / 64, "high_first"
    flop = 2.0 * M * N * K
    # rotate weight copies for small M so that ours (FP4, ~N*K*0.63 B) does not sit in L2
    copies = 1 if M > 128 else max(1, math.ceil(120e6 / (N * K * 0.625)))
    wcopies = [(wq.clone(), ws.clone()) for _ in range(copies)]
    packs = [g.prepack_weight_sm90(a, b, order) for a, b in wcopies]
    # baseline: cuBLAS bf16 on pre-dequantised operands (dequant excluded)
    xb = dequantize_nvfp4_blocks(xq, xs, order).to(torch.bfloat16)
    wbs = [dequantize_nvfp4_blocks(a, b, order).to(torch.bfloat16)
           for a, b in wcopies[:max(1, min(copies, math.ceil(120e6 / (N * K * 2))))]]
    ctr = [0]

    def cublas():
        ctr[0] += 1
        return torch.matmul(xb, wbs[ctr[0] % len(wbs)].T)

    t_cub = do_bench(cublas, warmup=25, rep=rep, return_mode="median")
    calls = len(packs) * max(1, math.ceil(8 / len(packs)))
    t_cub_g = graph_time(cublas, calls, rep)
    rows.append(dict(op="nvfp4_mm", impl="cublas_bf16", M=M, N=N, K=K, median_us=t_cub * 1e3,
                     tflops=flop / t_cub / 1e9, prepacked=True, correct=True,
                     weight_copies=len(wbs), graph_us=t_cub_g * 1e3))
    print(f"  {M}x{N}x{K} cublas_bf16: {t_cub * 1e3:8.1f} us {flop / t_cub / 1e9:6.0f} TF/s "
          f"| graph {t_cub_g * 1e3:8.1f} us", flush=True)
    out = torch.empty((M, N), dtype=torch.float16, device=DEV)
    for name, cfg in variants:
        try:
            out.fill_(float("nan"))
            g.fp4_gemm_sm90(xq, xs, wq, ws, alpha, order, out, prepacked=packs[0], config=cfg)
            ok = True
            if M * N <= 2048 * 18432:
                ok, _, _ = check(out, xq, xs, wq, ws, alpha, order)
            if not ok:
                print(f"  {name}: WRONG, not timed", flush=True)
                rows.append(dict(op="nvfp4_mm", impl=f"fp4mm_gluon[{name}]", M=M, N=N, K=K,
                                 correct=False))
                continue
            ctr[0] = 0

            def ours():
                ctr[0] += 1
                g.fp4_gemm_sm90(xq, xs, wq, ws, alpha, order, out,
                                prepacked=packs[ctr[0] % len(packs)], config=cfg)

            t = do_bench(ours, warmup=25, rep=rep, return_mode="median")
            xd = dequant_nvfp4(xq, xs, order=order)

            def gemm_only():
                ctr[0] += 1
                g.gemm_sm90_dense_x(xd, packs[ctr[0] % len(packs)], alpha, out, config=cfg)

            t_g = do_bench(gemm_only, warmup=10, rep=rep, return_mode="median")
            graphs = True  # CUDA-graph replay (host out of the way)
            t_gr = graph_time(ours, calls, rep) if graphs else float("nan")
            t_ggr = graph_time(gemm_only, calls, rep) if graphs else float("nan")
            rows.append(dict(op="nvfp4_mm", impl=f"fp4mm_gluon[{name}]", M=M, N=N, K=K,
                             config=str(cfg or g.choose_config(M, N, K, torch.float16,
                                                               g.sm_count(DEV))),
                             median_us=t * 1e3, tflops=flop / t / 1e9, prepacked=True,
                             correct=True, vs_cublas_bf16=t_cub / t, gemm_only_us=t_g * 1e3,
                             gemm_only_vs_cublas=t_cub / t_g, weight_copies=len(packs),
                             graph_us=t_gr * 1e3, graph_vs_cublas_graph=t_cub_g / t_gr,
                             gemm_only_graph_us=t_ggr * 1e3,
                             gemm_only_graph_vs_cublas_graph=t_cub_g / t_ggr))
            print(f"  {M}x{N}x{K} {name:>14}: {t * 1e3:7.1f} us {t_cub / t:5.3f}x | "
                  f"gemm {t_g * 1e3:7.1f} us {t_cub / t_g:5.3f}x | graph {t_gr * 1e3:7.1f} us "
                  f"{t_cub_g / t_gr:5.3f}x | gemm graph {t_ggr * 1e3:7.1f} us "
                  f"{t_cub_g / t_ggr:5.3f}x", flush=True)
        except Exception as e:
            print(f"  {name}: ERROR {type(e).__name__}: {str(e)[:300]}", flush=True)
            rows.append(dict(op="nvfp4_mm", impl=f"fp4mm_gluon[{name}]", M=M, N=N, K=K,
                             correct=False, error=str(e)[:300]))
    return xq, xs, wq, ws, t_cub


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--shapes", default="all", help="'all' or 'big' (the challenge case only)")
    args = ap.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat()
    results = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   triton=triton.__version__, date=now, rows=[])
    print(results, flush=True)
    t0 = time.time()
    if not args.skip_correctness:
        good = correctness(results, args.quick)
        print(f"correctness: {'ALL OK' if good else 'FAILURES'} ({time.time() - t0:.0f}s)")
        if not good:
            results["note"] = "correctness failed: timings of failing configs withheld"
    rep = 60 if args.quick else 100
    C = g.SM90Config
    variants = {  # (v3) the heuristic ("default") against the alternatives it was chosen over
        (128, 3072, 3072): [("default", None), ("bn128_split4", C(128, 6, True, 4)),
                            ("bn128_split6", C(128, 6, True, 6))],
        (128, 18432, 3072): [("default", None), ("bn128_split6", C(128, 6, True, 6))],
        (1024, 3072, 3072): [("default", None), ("bn256_split2", C(256, 4, True, 2))],
        (1024, 18432, 3072): [("default", None), ("bn256_split2", C(256, 4, True, 2))],
        (2048, 3072, 3072): [("default", None), ("bn256_split1", C(256, 4)),
                             ("bn256_split2", C(256, 4, True, 2))],
        (2048, 18432, 3072): [("default", None)],
        (4096, 3072, 3072): [("default", None)],
    }
    rows = results["rows"]
    shapes = [(2048, 18432, 3072)] + [s for s in TABLE5 if s != (2048, 18432, 3072)]
    for M, N, K in shapes[:1] if args.shapes == "big" else shapes:
        xq, xs, wq, ws, t_cub = bench_shape(M, N, K, variants[(M, N, K)], rows, rep)
        # raw weights: the timed path includes the Triton prepack (the challenge solve)
        out = torch.empty((M, N), dtype=torch.float16, device=DEV)

        def with_prepack():
            g.fp4_gemm_sm90(xq, xs, wq, ws, 1 / 64, "high_first", out)

        t = do_bench(with_prepack, warmup=10, rep=rep, return_mode="median")
        tp = do_bench(lambda: g.prepack_weight_sm90(wq, ws, "high_first"), warmup=5,
                      rep=rep, return_mode="median")
        td = do_bench(lambda: dequant_nvfp4(xq, xs, order="high_first"), warmup=5,
                      rep=rep, return_mode="median")
        flop = 2.0 * M * N * K
        rows.append(dict(op="nvfp4_mm", impl="fp4mm_gluon[default]+prepack", M=M, N=N,
                         K=K, median_us=t * 1e3, tflops=flop / t / 1e9, prepacked=False,
                         correct=True, vs_cublas_bf16=t_cub / t, prepack_us=tp * 1e3,
                         x_dequant_us=td * 1e3))
        print(f"  incl. prepack: {t * 1e3:.1f} us ({t_cub / t:.3f}x); prepack alone "
              f"{tp * 1e3:.1f} us; activation dequant alone {td * 1e3:.1f} us", flush=True)
    # host enqueue time per call (no sync): what eager timings of small shapes pay
    xq, xs, wq, ws = gen(128, 3072, 3072, seed=0)
    packed = g.prepack_weight_sm90(wq, ws, "high_first")
    out = torch.empty((128, 3072), dtype=torch.float16, device=DEV)
    for name, cfg in (("default", None), ("bn128_split4", C(128, 6, True, 4))):
        for _ in range(20):
            g.fp4_gemm_sm90(xq, xs, wq, ws, 1 / 64, "high_first", out, prepacked=packed,
                            config=cfg)
        torch.cuda.synchronize()
        h0 = time.perf_counter()
        for _ in range(200):
            g.fp4_gemm_sm90(xq, xs, wq, ws, 1 / 64, "high_first", out, prepacked=packed,
                            config=cfg)
        host_us = (time.perf_counter() - h0) / 200 * 1e6
        torch.cuda.synchronize()
        results.setdefault("host_us_per_call_128x3072", {})[name] = host_us
        print(f"  host enqueue per W4A4 call, 128x3072x3072 {name}: {host_us:.1f} us", flush=True)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gluon_sm90_h100.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print("\n| M x N x K | impl | config | us | TF/s | vs cuBLAS bf16 | GEMM only | graph |")
    for r in rows:
        if r.get("median_us"):
            print(f"| {r['M']}x{r['N']}x{r['K']} | {r['impl']} | {r.get('config', '')} | "
                  f"{r['median_us']:.1f} | {r['tflops']:.0f} | "
                  f"{r.get('vs_cublas_bf16', 1.0):.3f} | {r.get('gemm_only_vs_cublas', 0):.3f} | "
                  f"{r.get('graph_vs_cublas_graph', 0):.3f} |")
    print(f"wrote {path} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
