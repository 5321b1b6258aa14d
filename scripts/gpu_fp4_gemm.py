"""GPU check-then-time script for the prefill GEMM (fp4mm/kernels/fp4_gemm.py).

Usage on an sm_90 machine: ``python scripts/gpu_fp4_gemm.py [--quick] [--out DIR]``.
1. Correctness against the FP32 oracle on fresh random inputs (challenge generator: random bytes,
   scales uniform in [0.5, 2) rounded to E4M3), every config that is timed later, plus the
   challenge's functional shapes; a wrong config is never timed.
2. Timing with triton.testing.do_bench (median): our configs, cuBLAS bf16/fp16 on pre-dequantised
   operands in the same run. Prints a table, writes JSON (benchmarking.md schema) to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fp4mm import reference  # noqa: E402
from fp4mm.formats import dequantize_fp4_groupwise, dequantize_nvfp4_blocks, float_to_e4m3  # noqa: E402
from fp4mm.kernels import fp4_gemm as G  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402
from fp4mm.ops import nvfp4_mm, prepack_nvfp4_weight  # noqa: E402
from fp4mm.ops.prepack import permute_weight_bytes, swap_nibbles  # noqa: E402

DEV = "cuda"


def scales_e4m3(r, c):
    return float_to_e4m3(torch.rand(r, c, device=DEV) * 1.5 + 0.5)


def nvfp4_problem(M, N, K):
    return (
        torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, device=DEV),
        scales_e4m3(M, K // 16),
        torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV),
        scales_e4m3(N, K // 16),
    )


def rel_err(out, ref):
    out = out.float()
    if torch.isnan(out).any() and not torch.isnan(ref).any():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def ok_challenge(out, ref, atol, rtol):
    return (
        bool(torch.allclose(out.float(), ref, atol=atol, rtol=rtol)) and not torch.isnan(out).any()
    )


def check_w4a4(M, N, K, cfg, order="high_first", alpha=1 / 64, prepacked=False):
    xq, xs, wq, ws = nvfp4_problem(M, N, K)
    ref = reference.nvfp4_mm(xq, xs, wq, ws, alpha, order=order)
    out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
    pk = prepack_nvfp4_weight(wq, ws, order=order) if prepacked else None
    G.nvfp4_mm_gemm(xq, xs, wq, ws, alpha, order, out, config=cfg, prepacked=pk)
    e = rel_err(out, ref)
    return e, e < 2e-3 and ok_challenge(out, ref, 0.1, 0.05)


def check_w4a16(M, N, K, g, cfg, dtype=torch.float16, order="high_first"):
    x = (0.5 * torch.randn(M, K, device=DEV)).to(dtype)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV)
    sc = (0.1 * torch.rand(N, K // g, device=DEV) + 0.01).to(dtype)
    ref = reference.w4a16_mm(x, wq, sc, g, order=order)
    out = torch.full((M, N), float("nan"), dtype=dtype, device=DEV)
    G.w4a16_mm_gemm(x, wq, sc, g, order, out, config=cfg)
    e = rel_err(out, ref)
    return e, e < 1e-2 and ok_challenge(out, ref, 0.05, 0.05)


def check_nvfp4_w4a16(M, N, K, cfg, dtype=torch.bfloat16, order="low_first"):
    x = torch.randn(M, K, device=DEV).to(dtype)
    _, _, wq, ws = nvfp4_problem(1, N, K)
    gs = 448 * 6 / 3.0
    w = dequantize_nvfp4_blocks(wq, ws, order) / gs
    with reference._ieee_fp32():
        ref = x.float() @ w.T
    out = torch.full((M, N), float("nan"), dtype=dtype, device=DEV)
    G.nvfp4_w4a16_mm_gemm(x, wq, ws, 1.0 / gs, order, out, config=cfg)
    e = rel_err(out, ref)
    return e, e < 1e-2


def bench(fn):
    ms = triton.testing.do_bench(fn, warmup=25, rep=150, return_mode="all")
    t = torch.tensor(ms)
    return t.median().item() * 1e3, t.min().item() * 1e3, t.max().item() * 1e3


def row(op, impl, M, N, K, us, correct=True, group_size=None, prepacked=False, **extra):
    med, mn, mx = us
    return dict(
        op=op,
        impl=impl,
        M=M,
        N=N,
        K=K,
        group_size=group_size,
        prepacked=prepacked,
        median_us=med,
        min_us=mn,
        max_us=mx,
        tflops=2 * M * N * K / (med * 1e-6) / 1e12,
        correct=correct,
        **extra,
    )


CFGS = {
    "n128m256k64s3w8": G.GemmConfig(128, 256, 64, 8, 3, 8),
    "n128m256k64s4w8": G.GemmConfig(128, 256, 64, 8, 4, 8),
    "n128m128k64s4w8": G.GemmConfig(128, 128, 64, 8, 4, 8),
    "n256m128k64s3w8": G.GemmConfig(256, 128, 64, 8, 3, 8),
    "n128m256k128s2w8": G.GemmConfig(128, 256, 128, 8, 2, 8),
    "n128m128k128s3w8": G.GemmConfig(128, 128, 128, 8, 3, 8),
}
# (label, config name, prepacked, scale_words)
VARIANTS = (
    [("v1_raw_bytescales", "n128m256k64s3w8", False, False)]
    + [(f"raw_words_{n}", n, False, True) for n in CFGS]
    + [(f"prepacked_{n}", n, True, True) for n in CFGS]
)


def check_w4a4_triton_layout(M, N, K, cfg, packed, order="high_first"):
    """W4A4 through the plain-Triton GEMM, raw or with its own permuted byte layout (on sm_90
    ``prepack_nvfp4_weight`` holds the Gluon layout instead)."""
    xq, xs, wq, ws = nvfp4_problem(M, N, K)
    ref = reference.nvfp4_mm(xq, xs, wq, ws, 1 / 64, order=order)
    xd = dequant_nvfp4(xq, xs, order=order)
    out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
    wsrc = permute_weight_bytes(swap_nibbles(wq) if order == "high_first" else wq)
    G.launch_fp4_gemm(xd, wsrc if packed else wq, ws, out, group_size=16, nvfp4=True,
                      alpha=1 / 64, order="low_first" if packed else order, config=cfg,
                      w_permuted=packed)
    e = rel_err(out, ref)
    return e, e < 2e-3 and ok_challenge(out, ref, 0.1, 0.05)


def v4_probe(g, dtype=torch.float16):
    """Identity activations, 11-bit scales times code 1.5: fp32 out must equal the oracle."""
    N, K = 256, 512
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV)
    wq[0] = 0x33
    mant = torch.randint(1024, 2048, (N, K // g), device=DEV)
    sc = (mant.double() * 2.0**-14).to(dtype)
    x = torch.eye(K, dtype=dtype, device=DEV)
    out = torch.full((K, N), float("nan"), dtype=torch.float32, device=DEV)
    G.w4a16_mm_gemm(x, wq, sc, g, "low_first", out)
    ref = reference.w4a16_mm(x, wq, sc, g, order="low_first")
    return bool(torch.equal(out, ref))


def v4_main(args):
    """v4 (2026-11-26): exact groupwise path + hazard-free configs. Check, then time."""
    torch.manual_seed(0)
    rows, checks = [], []
    for g in (2, 16, 32, 128):
        for dt in (torch.float16, torch.bfloat16):
            ok = v4_probe(g, dt)
            checks.append(dict(check="one_hot_probe", group=g, dtype=str(dt), ok=ok))
            print("probe", g, dt, ok, flush=True)
    M, N, K, g = 2048, 8192, 3072, 32
    x = (0.5 * torch.randn(M, K, device=DEV)).half()
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV)
    sc = (0.1 * torch.rand(N, K // g, device=DEV) + 0.01).half()
    ref = reference.w4a16_mm(x, wq, sc, g, order="high_first")
    cfgs = {"heuristic": None,
            "n128m256k32s5w8": G.GemmConfig(128, 256, 32, 8, 5, 8),
            "n128m128k64s4w8": G.GemmConfig(128, 128, 64, 8, 4, 8),
            "n128m128k128s3w8": G.GemmConfig(128, 128, 128, 8, 3, 8)}
    out = torch.empty((M, N), dtype=torch.float16, device=DEV)
    for name, cfg in cfgs.items():
        out.fill_(float("nan"))
        G.w4a16_mm_gemm(x, wq, sc, g, "high_first", out, config=cfg)
        f32 = torch.empty((M, N), dtype=torch.float32, device=DEV)
        G.w4a16_mm_gemm(x, wq, sc, g, "high_first", f32, config=cfg)
        e16 = (out.float() - ref).abs().max().item()
        e32 = (f32 - ref).abs().max().item()
        # fp32 out: products exact, only fp32 summation order (3072 terms) differs
        ok = ok_challenge(out, ref, 0.05, 0.05) and e32 <= ref.abs().max().item() * 2**-14
        checks.append(dict(check="rev1_case", config=name, max_abs_err_fp16_out=e16,
                           max_abs_err_fp32_out=e32, ref_absmax=ref.abs().max().item(), ok=ok))
        print(f"rev1 {name}: max abs err fp16 out {e16:.3g}, fp32 out {e32:.3g} ok={ok}",
              flush=True)
    for dt in (torch.bfloat16,):
        e, ok = check_w4a16(257, 513, 1024, 32, None, dtype=dt)
        checks.append(dict(check="w4a16_bf16", err=e, ok=ok))
    for cfg in (None, G.GemmConfig(128, 256, 64, 8, 4, 8)):
        for packed in (False, True):
            e, ok = check_w4a4_triton_layout(2048, 2304, 3072, cfg, packed)
            checks.append(dict(check="nvfp4_mm", config=str(cfg), prepacked=packed, err=e, ok=ok))
            print("nvfp4 check", cfg, packed, e, ok, flush=True)
    # timing: rev-1 case
    wd = dequantize_fp4_groupwise(wq, sc, g, "high_first").half()
    b16 = bench(lambda: torch.matmul(x, wd.T))
    xb, wb = x.bfloat16(), wd.bfloat16()
    bb = bench(lambda: torch.matmul(xb, wb.T))
    rows.append(row("w4a16_mm", "cublas_fp16", M, N, K, b16, group_size=g))
    rows.append(row("w4a16_mm", "cublas_bf16", M, N, K, bb, group_size=g))
    for name, cfg in cfgs.items():
        us = bench(lambda: G.w4a16_mm_gemm(x, wq, sc, g, "high_first", out, config=cfg))
        rows.append(row("w4a16_mm", "fp4mm", M, N, K, us, group_size=g, config=name,
                        ratio_vs_cublas_fp16=b16[0] / us[0]))
    # timing: NVFP4 configs touched (2 stages, hazard-free) vs the old 4 stages
    M, N, K = 2048, 18432, 3072
    xq, xs, wq, ws = nvfp4_problem(M, N, K)
    xd = dequant_nvfp4(xq, xs, order="high_first")
    wdd = dequant_nvfp4(wq, ws, order="high_first")
    xb, wb = xd.bfloat16(), wdd.bfloat16()
    base = bench(lambda: torch.matmul(xb, wb.T))
    rows.append(row("nvfp4_mm", "cublas_bf16", M, N, K, base))
    out = torch.empty((M, N), dtype=torch.float16, device=DEV)
    for label, cfg in (("s2_heuristic", G.choose_config(M, N, K)),
                       ("s4_old", G.GemmConfig(128, 256, 64, 8, 4, 8))):
        for packed in (False, True):
            kw = dict(group_size=16, nvfp4=True, alpha=1 / 64,
                      order="low_first" if packed else "high_first", config=cfg,
                      w_permuted=packed)
            wsrc = permute_weight_bytes(swap_nibbles(wq)) if packed else wq
            us = bench(lambda: G.launch_fp4_gemm(xd, wsrc, ws, out, **kw))
            rows.append(row("nvfp4_mm", "fp4mm_gemm_only", M, N, K, us, config=label,
                            prepacked=packed, ratio_vs_cublas_bf16=base[0] / us[0]))
    for r in rows:
        print(f"{r['op']} {r['M']}x{r['N']}x{r['K']} {r['impl']:16s} {str(r.get('config', '')):18s}"
              f" pk={r['prepacked']!s:5s} {r['median_us']:8.1f} us {r['tflops']:6.1f} TF/s "
              f"x{r.get('ratio_vs_cublas_fp16', r.get('ratio_vs_cublas_bf16', 0)):.3f}",
              flush=True)
    return checks, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--v4", action="store_true", help="exactness + hazard-free configs run only")
    args = ap.parse_args()
    if args.v4:
        checks, rows = v4_main(args)
        res = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                   triton=triton.__version__, date=datetime.date.today().isoformat(),
                   script="scripts/gpu_fp4_gemm.py --v4", checks=checks, rows=rows)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "fp4_gemm.json"), "w") as f:
            json.dump(res, f, indent=1)
        return
    torch.manual_seed(0)
    dev_name = torch.cuda.get_device_name()
    print(dev_name, "torch", torch.__version__, "triton", triton.__version__, flush=True)
    rows, checks = [], []

    # ---- correctness: every config, ragged shapes and the perf shape
    good = {}
    for name, cfg in CFGS.items():
        results = [
            check_w4a4(300, 1000, 1040, cfg),
            check_w4a4(2048, 18432 // 8, 3072, cfg),
            check_w4a4(2048, 18432 // 8, 3072, cfg, prepacked=True),
            check_w4a4(255, 1000, 1024, cfg, order="low_first", prepacked=True),
            check_w4a16(257, 513, 1024, 32, cfg),
            check_w4a16(64, 256, 96, 2, cfg),
            check_nvfp4_w4a16(129, 384, 512, cfg),
        ]
        good[name] = all(r[1] for r in results)
        checks.append(dict(config=name, errors=[r[0] for r in results], ok=good[name]))
        print(
            f"check {name:20s} ok={good[name]} rel_errs={[f'{r[0]:.2e}' for r in results]}",
            flush=True,
        )
    for M, N, K in [
        (1, 2, 16),
        (2, 4, 16),
        (3, 5, 32),
        (16, 16, 32),
        (32, 64, 64),
        (128, 128, 256),
        (30, 50, 64),
        (100, 200, 128),
        (255, 100, 128),
        (512, 1024, 1024),
    ]:
        e, ok = check_w4a4(M, N, K, None)
        checks.append(dict(shape=[M, N, K], op="nvfp4_mm", err=e, ok=ok))
        if not ok:
            print("FUNCTIONAL FAIL", M, N, K, e)

    # ---- timing
    shapes = [(2048, 18432, 3072)] + (
        []
        if args.quick
        else [
            (128, 3072, 3072),
            (128, 18432, 3072),
            (1024, 3072, 3072),
            (1024, 18432, 3072),
            (2048, 3072, 3072),
            (4096, 3072, 3072),
        ]
    )
    for M, N, K in shapes:
        xq, xs, wq, ws = nvfp4_problem(M, N, K)
        xd = dequant_nvfp4(xq, xs, order="high_first")
        wd = dequant_nvfp4(wq, ws, order="high_first")
        xb, wb = xd.bfloat16(), wd.bfloat16()
        out = torch.empty((M, N), dtype=torch.float16, device=DEV)
        base_bf16 = bench(lambda: torch.matmul(xb, wb.T))
        base_fp16 = bench(lambda: torch.matmul(xd, wd.T))
        rows.append(row("nvfp4_mm", "cublas_bf16", M, N, K, base_bf16))
        rows.append(row("nvfp4_mm", "cublas_fp16", M, N, K, base_fp16))
        pre = bench(lambda: dequant_nvfp4(xq, xs, order="high_first"))
        rows.append(row("dequant_nvfp4_x", "fp4mm", M, N, K, pre))
        big = (M, N, K) == (2048, 18432, 3072)
        pk = prepack_nvfp4_weight(wq, ws, order="high_first")
        prep = bench(lambda: prepack_nvfp4_weight(wq, ws, order="high_first"))
        rows.append(row("prepack_nvfp4_weight", "fp4mm", M, N, K, prep))
        variants = (
            VARIANTS
            if big
            else [("heuristic_raw", None, False, True), ("heuristic_prepacked", None, True, True)]
        )
        for label, name, packed, words in variants:
            if name is not None and not good[name]:
                continue
            cfg = CFGS[name] if name else G.choose_config(M, N, K)
            wsrc = pk.packed if packed else wq
            kw = dict(
                group_size=16,
                nvfp4=True,
                alpha=1 / 64,
                order="low_first" if packed else "high_first",
                config=cfg,
                w_permuted=packed,
                scale_words=words,
            )
            us = bench(lambda: G.launch_fp4_gemm(xd, wsrc, ws, out, **kw))
            rows.append(
                row(
                    "nvfp4_mm",
                    "fp4mm_gemm_only",
                    M,
                    N,
                    K,
                    us,
                    config=label,
                    prepacked=packed,
                    ratio_vs_cublas_bf16=base_bf16[0] / us[0],
                )
            )
        # public op, W4A4 including the x pre-pass (raw = the challenge's solve path)
        full = bench(lambda: nvfp4_mm(xq, xs, wq, ws, 1 / 64, order="high_first", out=out))
        rows.append(
            row(
                "nvfp4_mm",
                "fp4mm",
                M,
                N,
                K,
                full,
                config="op_raw",
                ratio_vs_cublas_bf16=base_bf16[0] / full[0],
            )
        )
        fullp = bench(lambda: nvfp4_mm(xq, xs, pk, None, 1 / 64, order="high_first", out=out))
        rows.append(
            row(
                "nvfp4_mm",
                "fp4mm",
                M,
                N,
                K,
                fullp,
                config="op_prepacked",
                prepacked=True,
                ratio_vs_cublas_bf16=base_bf16[0] / fullp[0],
            )
        )
        for r in rows:
            if (r["M"], r["N"], r["K"]) == (M, N, K):
                print(
                    f"{M}x{N}x{K} {r['impl']:18s} {r.get('config', ''):24s} {r['median_us']:9.1f} us "
                    f"{r['tflops']:7.1f} TF/s  x{r.get('ratio_vs_cublas_bf16', 0):.3f}",
                    flush=True,
                )

    # rev1 perf case: w4a16 g32 fp16 vs cuBLAS fp16
    M, N, K, g = 2048, 8192, 3072, 32
    x = (0.5 * torch.randn(M, K, device=DEV)).half()
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV)
    sc = (0.1 * torch.rand(N, K // g, device=DEV) + 0.01).half()
    wd = dequantize_fp4_groupwise(wq, sc, g, "high_first").half()
    out = torch.empty((M, N), dtype=torch.float16, device=DEV)
    b16 = bench(lambda: torch.matmul(x, wd.T))
    xb_, wb_ = x.bfloat16(), wd.bfloat16()
    bb = bench(lambda: torch.matmul(xb_, wb_.T))
    rows.append(row("w4a16_mm", "cublas_fp16", M, N, K, b16, group_size=g))
    rows.append(row("w4a16_mm", "cublas_bf16", M, N, K, bb, group_size=g))
    for name in (
        ["n128m256k64s3w8", "n128m256k128s2w8", "n128m128k128s3w8"] if not args.quick else []
    ) + [None]:
        if name is not None and not good[name]:
            continue
        cfg = CFGS[name] if name else None
        us = bench(lambda: G.w4a16_mm_gemm(x, wq, sc, g, "high_first", out, config=cfg))
        rows.append(
            row(
                "w4a16_mm",
                "fp4mm",
                M,
                N,
                K,
                us,
                group_size=g,
                config=name or "heuristic",
                ratio_vs_cublas_fp16=b16[0] / us[0],
            )
        )
    for r in rows:
        if r["op"] == "w4a16_mm":
            print(
                f"w4a16 {M}x{N}x{K} g{g} {r['impl']:14s} {r.get('config', ''):18s} {r['median_us']:8.1f} us "
                f"{r['tflops']:7.1f} TF/s x{r.get('ratio_vs_cublas_fp16', 0):.3f}",
                flush=True,
            )

    res = dict(
        device=dev_name,
        torch=torch.__version__,
        triton=triton.__version__,
        date=datetime.date.today().isoformat(),
        script="scripts/gpu_fp4_gemm.py",
        checks=checks,
        rows=rows,
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "fp4_gemm.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
