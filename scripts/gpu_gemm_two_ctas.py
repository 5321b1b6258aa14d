# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Probe: the Gluon GEMM with two CTAs per SM for small token tiles (BN <= 64).

At BN <= 64 a K step streams weights and waits on latency (perf-log, session 13: about
0.27 us a step whatever BN is), with two consumer warpgroups per SM. Compiled at
``maxnreg=80`` the kernel's 384 threads take 30720 registers (the consumers raise themselves
to 104 with setmaxnreg; BN 64 needs 92, no spills, CPU compile), and BN 64 with 6 stages takes
93 KB of shared memory, so two CTAs fit on an SM: the schedule then has 2 x 132 slots and a
split can use twice the CTAs in one wave.

W4A4 calls (x pre-pass + GEMM on prepacked weights, as ``fp4_gemm_sm90``) and cuBLAS bf16 on
pre-dequantised operands, each checked against the oracle with a NaN-poisoned output first,
then CUDA-graph medians over enough weight copies to fill 3x the L2.
Usage on an sm_90 machine: ``python scripts/gpu_gemm_two_ctas.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402

C = g.SM90Config
ORDER = "low_first"
ALPHA = 1 / 64
COMPILED = {}


def occupancy(kernel) -> int:
    """CTAs of ``kernel`` (a CompiledKernel, 384 threads) the driver can keep on one SM."""
    cuda = ctypes.CDLL("libcuda.so.1")
    n = ctypes.c_int()
    err = cuda.cuOccupancyMaxActiveBlocksPerMultiprocessor(
        ctypes.byref(n), ctypes.c_void_p(kernel.function), 384,
        ctypes.c_size_t(kernel.metadata.shared))
    return n.value if err == 0 else -err


def dense(x, packed, out, config, ctas, flags=None):
    """``gemm_sm90_dense_x`` with ``ctas`` CTAs per SM (2: compiled at maxnreg 80)."""
    M = x.shape[0]
    slots = g.sm_count(x.device) * ctas
    w_desc, s_desc, x_desc, y_desc = g.make_descriptors(packed, x, out, config)
    sc = g._schedule(M, packed, config, slots)
    split_units = sc.num_units - sc.num_full
    fixup = flags is not None and g.fixup_in_kernel(sc)
    ws = torch.empty((max(split_units, 1), g.BM, config.BN), dtype=torch.float32,
                     device=x.device)
    a, alpha_ptr, on_dev = g.alpha_args(ALPHA, ws)
    extra = {"maxnreg": 80} if ctas == 2 else {}
    k = g._fp4_gemm_sm90_kernel[(min(sc.num_units, slots),)](
        w_desc, s_desc, x_desc, y_desc, ws, flags if fixup else g._no_flags(x.device),
        a, alpha_ptr, sc.num_units, sc.num_full, sc.split, sc.k_per_split,
        -(-M // config.BN), sc.k_tiles, int(fixup),
        BN=config.BN, STAGES=config.STAGES, DTYPE=g._GL_DTYPE[x.dtype], GK=packed.group_k,
        PDL=True, ALPHA_PTR=on_dev, launch_pdl=True, num_warps=8, **extra)
    COMPILED[(config.BN, config.STAGES, ctas)] = k
    if split_units and not fixup:
        g.splitk_reduce(ws, out, ALPHA, sc, config.BN, pdl=True)
    return sc


def w4a4(xq, xs, packed, out, config, ctas):
    """``fp4_gemm_sm90`` (x pre-pass, then the GEMM) with ``ctas`` CTAs per SM."""
    M = xq.shape[0]
    sc = g._schedule(M, packed, config, g.sm_count(xq.device) * ctas)
    flags = (torch.empty(sc.num_tiles, dtype=torch.int32, device=xq.device)
             if g.fixup_in_kernel(sc) else None)
    x = g.dequant_nvfp4(xq, xs, order=ORDER, dtype=torch.float16, pdl=True, zero=flags)
    return dense(x, packed, out, config, ctas, flags)


def variants(M):
    bn = max(16, 1 << (M - 1).bit_length()) if M <= 64 else 64
    out = [("shipped", None, 1)]
    for ctas in (1, 2):
        for st in (4, 6):
            for sp in (1, 2, 4, 5, 6, 8):
                out.append((f"bn{bn}s{st}/split{sp}/cta{ctas}", C(bn, st, True, sp), ctas))
    if M == 128:
        for sp in (1, 2, 4):
            out.append((f"bn32s6/split{sp}/cta2", C(32, 6, True, sp), 2))
    return out


def main():
    shapes = [(128, 3072, 3072), (96, 3072, 3072), (64, 3072, 3072), (64, 18432, 3072),
              (32, 18432, 3072), (128, 8192, 3072)]
    rows = []
    for M, N, K in shapes:
        xq, xs, wq0, ws0 = gen(M, N, K, seed=M + N)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        ws_list = [(wq0, ws0)] + [gen(1, N, K, seed=100 + i)[2:] for i in range(copies - 1)]
        packs = [g.prepack_weight_sm90(w, s, ORDER) for w, s in ws_list]
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        res = {}
        if M >= 96:  # cuBLAS bf16 on pre-dequantised operands (exact in bf16)
            xb = dequantize_nvfp4_blocks(xq, xs, ORDER).bfloat16()
            nb = n_copies(N * K * 2, 50 * 2**20)
            wbs = [dequantize_nvfp4_blocks(w, s, ORDER).bfloat16()
                   for w, s in (ws_list * nb)[:nb]]
            ob = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
            t = time_graph([lambda i=i: torch.matmul(xb, wbs[i].T, out=ob)
                            for i in range(nb)])
            res["cublas_bf16"] = t[0]
            rows.append(dict(M=M, N=N, K=K, variant="cublas_bf16", median_us=t[0],
                             min_us=t[1], max_us=t[2], copies=nb))
        for name, cfg, ctas in variants(M):
            def run(i, o):
                if cfg is None:
                    g.fp4_gemm_sm90(xq, xs, None, None, ALPHA, ORDER, o, prepacked=packs[i])
                    return None
                return w4a4(xq, xs, packs[i], o, cfg, ctas)
            try:
                o = torch.full_like(out, float("nan"))
                sc = run(0, o)
                torch.cuda.synchronize()
                ok = check(o, xq, xs, wq0, ws0, ALPHA, ORDER)[0]
                if not ok:
                    print(f"FAIL (not timed) {M}x{N}x{K} {name}", flush=True)
                    rows.append(dict(M=M, N=N, K=K, variant=name, correct=False))
                    continue
                t = time_graph([lambda i=i: run(i, out) for i in range(copies)])
            except Exception as e:  # noqa: BLE001
                print(f"ERROR {M}x{N}x{K} {name}: {type(e).__name__}: {str(e)[:300]}",
                      flush=True)
                continue
            occ = occupancy(COMPILED[(cfg.BN, cfg.STAGES, ctas)]) if cfg else None
            res[name] = t[0]
            rows.append(dict(M=M, N=N, K=K, variant=name, median_us=t[0], min_us=t[1],
                             max_us=t[2], copies=copies, correct=True, ctas_per_sm=occ,
                             units=sc.num_units if sc else None,
                             split=sc.split if sc else None))
        best = sorted(res.items(), key=lambda r: r[1])
        cb = res.get("cublas_bf16")
        print(f"{M}x{N}x{K}: shipped {res.get('shipped', float('nan')):.2f}"
              + (f", cuBLAS bf16 {cb:.2f}" if cb else "") + " | best: "
              + "  ".join(f"{n} {t:.2f}" for n, t in best[:7]), flush=True)
    occs = {f"bn{b}s{s}/cta{c}": occupancy(k) for (b, s, c), k in COMPILED.items()}
    print("CTAs per SM (driver):", occs)
    save_rows("gemm-two-ctas", rows + [dict(occupancy=occs)])


if __name__ == "__main__":
    main()
