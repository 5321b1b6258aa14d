# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""GPU batch for the Gluon GEMM with 16-bit group scales (``w4a16_mm``, revision 1 of the
challenge): correctness first, then timing.

Usage (on an H100): ``python scripts/gpu_gluon_grouped.py [--out DIR] [--quick]``.
1. Correctness vs the fp32 oracle (``fp4mm.reference.w4a16_mm``) at shapes that hit every tile
   boundary (M not a multiple of BN, N not of 128, K a multiple of 32 but not of 128), groups
   32 / 64 / 128 / 256, fp16 and bf16, both nibble orders, split-K, and scales whose products
   with the codes do not fit 16 bits (large and tiny). The output is poisoned with NaN first.
2. Timing under CUDA-graph replay (``fp4mm.bench.harness.graph_timer``; rotating weight copies)
   of configs at the revision-1 case 2048 x 8192 x 3072 g32 fp16 and more shapes, against cuBLAS
   fp16 on pre-dequantised weights and the plain-Triton ``fp4_gemm`` in the same run, plus the
   per-call prepack. Prints a table and writes JSON. A wrong kernel gets no time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm import reference  # noqa: E402
from fp4mm.bench.harness import graph_timer  # noqa: E402
from fp4mm.formats import dequantize_fp4_groupwise  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402
from fp4mm.kernels.fp4_gemm import w4a16_mm_gemm  # noqa: E402

DEV = "cuda"


def gen(M, N, K, group, dtype, seed=0, scale_kind="challenge"):
    """Challenge rev-1 data: x = 0.5 randn, bytes uniform, scales 0.1 rand + 0.01 (fp16); or
    'huge' (3e4..6e4: code * scale overflows fp16) / 'tiny' (1e-7..1e-6: it is subnormal)."""
    gen_ = torch.Generator(device=DEV).manual_seed(seed)
    x = (0.5 * torch.randn((M, K), device=DEV, generator=gen_)).to(dtype)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV, generator=gen_)
    r = torch.rand((N, K // group), device=DEV, generator=gen_)
    lo, span = {"challenge": (0.01, 0.1), "huge": (3e4, 3e4), "tiny": (1e-7, 9e-7)}[scale_kind]
    s = (r * span + lo).to(dtype if scale_kind == "challenge" else torch.float16)
    if scale_kind == "huge":
        x = x * 1e-3  # keep y finite
    return x, wq, s


def check(out, x, wq, s, group, order):
    """|out - ref| <= u |ref| + 2^-20 (|x| @ |w|^T); NaN only where the oracle has NaN."""
    ref = reference.w4a16_mm(x, wq, s, group, order=order)
    wa = dequantize_fp4_groupwise(wq, s, group, order).abs()  # fp32 (N, K)
    bound = x.float().abs() @ wa.T
    o = out.float()
    err = (o - ref).abs()
    rnd = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-20}[out.dtype]
    sub = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}
    tol = ref.abs() * rnd + bound * 2.0**-20 + sub[out.dtype]  # + subnormal output spacing
    ok = torch.equal(torch.isnan(o), torch.isnan(ref)) and bool((err <= tol).all())
    rel = float((err / (ref.abs() + bound * 2.0**-20 + 1e-30)).max())
    return ok, rel


def run_ours(x, wq, s, group, order, config=None, packed=None, out_dtype=None):
    M, N = x.shape[0], wq.shape[0]
    out = torch.full((M, N), float("nan"), dtype=out_dtype or x.dtype, device=DEV)  # poison
    g.fp4_gemm_sm90_grouped(x, wq, s, group, order, out, prepacked=packed, config=config)
    return out


def correctness(quick):
    rows = []
    C = g.SM90Config
    cases = [  # (M, N, K, group, dtype, order, scale_kind, config)
        (1, 128, 128, 32, torch.float16, "low_first", "challenge", None),
        (2048, 8192, 3072, 32, torch.float16, "high_first", "challenge", None),
        (100, 200, 160, 32, torch.float16, "high_first", "challenge", None),
        (129, 264, 96, 32, torch.bfloat16, "low_first", "challenge", None),
        (255, 100, 128, 32, torch.float16, "high_first", "challenge", None),
        (512, 1024, 1024, 32, torch.float16, "high_first", "challenge", None),
        (300, 520, 384, 64, torch.float16, "low_first", "challenge", None),
        (300, 520, 384, 128, torch.bfloat16, "high_first", "challenge", None),
        (77, 3000, 1280, 256, torch.float16, "low_first", "challenge", None),
        (200, 1000, 3072, 32, torch.float16, "low_first", "huge", None),
        (200, 1000, 3072, 32, torch.float16, "low_first", "tiny", None),
        (200, 1000, 3072, 64, torch.bfloat16, "low_first", "huge", None),
        (333, 777, 1056, 32, torch.float16, "low_first", "challenge", C(BN=64, STAGES=4)),
        (333, 777, 1056, 32, torch.float16, "low_first", "challenge", C(BN=128, STAGES=8)),
        (40, 300, 4096, 32, torch.float16, "low_first", "challenge", C(BN=32, STAGES=4,
                                                                         SPLIT=4)),
        (130, 3072, 3072, 32, torch.bfloat16, "high_first", "challenge", C(BN=128, SPLIT=3)),
        (17, 136, 320, 64, torch.float16, "low_first", "challenge", C(BN=16, STAGES=2,
                                                                        SPLIT=2)),
    ]
    if quick:
        cases = cases[:4]
    for M, N, K, group, dt, order, kind, cfg in cases:
        x, wq, s = gen(M, N, K, group, dt, seed=M + N + K, scale_kind=kind)
        for out_dtype in (None, torch.float32):
            if cfg is not None and not g.config_is_valid(cfg, out_dtype or dt, grouped=True):
                continue
            out = run_ours(x, wq, s, group, order, config=cfg, out_dtype=out_dtype)
            torch.cuda.synchronize()
            ok, rel = check(out, x, wq, s, group, order)
            rows.append(dict(M=M, N=N, K=K, group=group, dtype=str(dt), order=order, kind=kind,
                             config=str(cfg), out=str(out.dtype), ok=ok, max_rel=rel))
            print(f"{'PASS' if ok else 'FAIL'} {M}x{N}x{K} g{group} {dt} {order} {kind} {cfg} "
                  f"out {out.dtype}: max_rel {rel:.2e}", flush=True)
    # determinism of split-K
    x, wq, s = gen(130, 3072, 3072, 32, torch.float16, seed=5)
    a = run_ours(x, wq, s, 32, "low_first", config=C(BN=128, SPLIT=4))
    b = run_ours(x, wq, s, 32, "low_first", config=C(BN=128, SPLIT=4))
    det = torch.equal(a, b)
    print(f"{'PASS' if det else 'FAIL'} split-K deterministic", flush=True)
    rows.append(dict(case="split-K deterministic", ok=det))
    return rows


def timing(quick, ok):
    rows = []
    C = g.SM90Config
    shapes = [(2048, 8192, 3072, 32), (2048, 8192, 3072, 128), (4096, 8192, 3072, 32),
              (1024, 8192, 3072, 32), (2048, 18432, 3072, 32), (256, 8192, 3072, 32),
              (128, 3072, 3072, 32)]
    if quick:
        shapes = shapes[:1]
    for M, N, K, group in shapes:
        x, wq, s = gen(M, N, K, group, torch.float16, seed=1)
        wbytes = wq.numel() + s.numel() * 2
        ncopy = max(2, int(3 * 50e6 // wbytes) + 1)
        wqs = [wq.clone() for _ in range(ncopy)]
        ss = [s.clone() for _ in range(ncopy)]
        packs = [g.prepack_grouped_sm90(a, b, group, "high_first") for a, b in zip(wqs, ss)]
        wd = dequantize_fp4_groupwise(wq, s, group, "high_first").half()  # rounded: timing only
        wds = [wd.clone() for _ in range(max(2, int(3 * 50e6 // (wd.numel() * 2)) + 1))]
        out = torch.empty((M, N), dtype=torch.float16, device=DEV)
        flops = 2 * M * N * K
        i = [0]

        def nxt(lst):
            i[0] += 1
            return lst[i[0] % len(lst)]

        def add(name, fn):
            med, lo, hi = graph_timer(fn, quick)
            rows.append(dict(M=M, N=N, K=K, group=group, impl=name, ms=med, min=lo, max=hi,
                             tflops=flops / med / 1e9))

        add("cublas_fp16", lambda: torch.matmul(x, nxt(wds).T, out=out))
        if not ok:
            continue
        base = rows[-1]["ms"]
        heur = g.choose_config(M, N, K, torch.float16, g.sm_count(DEV), grouped=True)
        cfgs = [None, C(BN=128, STAGES=4), C(BN=128, STAGES=8), C(BN=64, STAGES=8),
                C(BN=128, STAGES=6, PERSISTENT=False)]
        for cfg in cfgs if not quick else cfgs[:1]:
            if cfg is not None and not g.config_is_valid(cfg, torch.float16, grouped=True):
                continue
            name = f"gluon_grouped {cfg or heur}{' (heuristic)' if cfg is None else ''}"
            add(name, lambda: g.fp4_gemm_sm90_grouped(x, None, None, group, "high_first", out,
                                                      prepacked=nxt(packs), config=cfg))
        add("gluon_grouped raw (prepack per call)",
            lambda: g.fp4_gemm_sm90_grouped(x, nxt(wqs), nxt(ss), group, "high_first", out))
        add("prepack_grouped_sm90 alone",
            lambda: g.prepack_grouped_sm90(nxt(wqs), nxt(ss), group, "high_first"))
        if M >= 1024 and not quick:
            add("triton fp4_gemm v4",
                lambda: w4a16_mm_gemm(x, nxt(wqs), nxt(ss), group, "high_first", out))
        for r in rows:
            if r["M"] == M and r["N"] == N and r["group"] == group:
                r["ratio_cublas_fp16"] = base / r["ms"]
    return rows


def crossover(quick, ms=None, groups=(32, 128)):
    """w4a16_mm through the public op with the kernel forced (FP4MM_KERNEL=gemv|gemm; raw and
    prepacked weights): where the Gluon GEMM overtakes the decode GEMV."""
    import fp4mm

    rows = []
    ms = ms or ((16, 32, 48, 64, 96, 128, 192, 256) if not quick else (64,))
    for N, group in ((18432, 32), (8192, 32), (18432, 128)):
        if group not in groups:
            continue
        K = 3072
        for M in ms:
            x, wq, s = gen(M, N, K, group, torch.float16, seed=M)
            ncopy = max(2, int(3 * 50e6 // (wq.numel() + s.numel() * 2)) + 1)
            wqs = [wq.clone() for _ in range(ncopy)]
            ss = [s.clone() for _ in range(ncopy)]
            pks = [fp4mm.prepack_w4a16_weight(a, b, group) for a, b in zip(wqs, ss)]
            out = torch.empty((M, N), dtype=torch.float16, device=DEV)
            i = [0]

            def nxt(lst):
                i[0] += 1
                return lst[i[0] % len(lst)]

            for kernel, prepacked in (("gemv", False), ("gemm", False), ("gemm", True)):
                os.environ["FP4MM_KERNEL"] = kernel
                o = fp4mm.w4a16_mm(x, pks[0] if prepacked else wq, None if prepacked else s,
                                   group)
                ok, _ = check(o, x, wq, s, group, "low_first")
                if not ok:
                    print(f"FAIL crossover {kernel} M={M} N={N} g{group}", flush=True)
                    continue
                if prepacked:
                    fn = lambda: fp4mm.w4a16_mm(x, nxt(pks), None, group, out=out)
                else:
                    fn = lambda: fp4mm.w4a16_mm(x, nxt(wqs), nxt(ss), group, out=out)
                med, lo, hi = graph_timer(fn, quick)
                rows.append(dict(M=M, N=N, K=K, group=group, kernel=kernel, prepacked=prepacked,
                                 ms=med, min=lo, max=hi))
                tag = " prepacked" if prepacked else ""
                print(f"crossover M={M:4d} N={N} g{group} {kernel}{tag}"
                      f": {med * 1e3:8.1f} us", flush=True)
            os.environ.pop("FP4MM_KERNEL", None)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--part", choices=("all", "kernel", "crossover"), default="all")
    ap.add_argument("--cross-ms", default=None, help="comma-separated M values (crossover)")
    ap.add_argument("--cross-groups", default="32,128")
    args = ap.parse_args()
    dev = torch.cuda.get_device_name()
    print(dev, torch.__version__, flush=True)
    corr = correctness(args.quick) if args.part != "crossover" else []
    ok = all(r["ok"] for r in corr)
    tim = timing(args.quick, ok) if args.part != "crossover" else []
    ms = tuple(int(m) for m in args.cross_ms.split(",")) if args.cross_ms else None
    groups = tuple(int(v) for v in args.cross_groups.split(","))
    cross = crossover(args.quick, ms, groups) if args.part != "kernel" else []
    print(f"\n{'shape':>18} {'impl':<62} {'us':>8} {'TF/s':>7} {'x cuBLAS fp16':>13}")
    for r in tim:
        print(f"{r['M']}x{r['N']}x{r['K']:>6} g{r['group']:<3} {r['impl']:<62} "
              f"{r['ms'] * 1e3:8.1f} {r['tflops']:7.1f} {r.get('ratio_cublas_fp16', 1.0):13.3f}")
    res = dict(device=dev, torch=torch.__version__, date=datetime.datetime.now().isoformat(),
               timer="graph", correctness=corr, timing=tim, crossover=cross, all_correct=ok)
    path = os.path.join(args.out, f"gluon_grouped_{args.part}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print("wrote", path, "all correct" if ok else "SOME CHECKS FAILED")


if __name__ == "__main__":
    main()
