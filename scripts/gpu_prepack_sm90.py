"""GPU batch for the Triton sm90 weight prepack (fp4mm/kernels/prepack_sm90.py): check, then time.

Usage (on an H100): ``python scripts/gpu_prepack_sm90.py [--out DIR]``.
1. Bit-exactness vs the torch twin (the codes/scales part of ``prepack_weight_sm90``, copied below
   and itself checked against that function on the CPU) at 18432x3072 and 3072x3072, both nibble
   orders, plus ragged shapes; every config of the sweep is checked before it is timed.
2. Timing (triton.testing.do_bench, median and 20/80 % quantiles; L2 flushed between reps): the
   torch twin, ``prepack_weight_sm90`` as it stands, the Triton kernel (default config and a
   tiles-per-program x num_warps sweep), and a same-run device copy (clone) of the same bytes as
   the bandwidth baseline. Prints a table, writes JSON to ``--out`` (default ``$OUT``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from functools import partial

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402
from fp4mm.kernels.prepack_sm90 import prepack_sm90_triton  # noqa: E402

DEV = "cuda"
SHAPES = [(18432, 3072), (3072, 3072)]
RAGGED = [(1, 16), (300, 208), (127, 3072)]
SWEEP = [(kt, nw) for kt in (1, 2, 4, 8) for nw in (4, 8)]


def torch_twin(w_q, w_s, order):
    """The torch twin (fp4_gemm_sm90.prepack_sm90_torch), on the tensors' device."""
    from fp4mm.kernels.fp4_gemm_sm90 import prepack_sm90_torch

    return prepack_sm90_torch(w_q, w_s, order)


def weights(N, K, seed):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    w_q = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV, generator=gen)
    w_s = torch.randint(0, 256, (N, K // 16), dtype=torch.uint8, device=DEV, generator=gen)
    return w_q, w_s


def same(a, b):
    return all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def clone2(a, b):
    return a.clone(), b.clone()


def bench(fn):
    q = do_bench(fn, warmup=10, rep=60, quantiles=[0.5, 0.2, 0.8], return_mode="median")
    return [1000.0 * t for t in q]  # us


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": triton.__version__, "date": datetime.date.today().isoformat(),
           "checks": [], "timings": []}
    # the copied twin is the function's code (checked on the CPU, where it is plain torch)
    wq, ws = weights(300, 208, 1)
    for order in ("low_first", "high_first"):
        p = g.prepack_weight_sm90(wq.cpu(), ws.cpu(), order)
        ok = same(torch_twin(wq.cpu(), ws.cpu(), order), (p.codes, p.scales))
        res["checks"].append({"what": "twin copy == prepack_weight_sm90 (cpu)", "order": order,
                              "ok": ok})
    for N, K in RAGGED + SHAPES:
        wq, ws = weights(N, K, N + K)
        for order in ("low_first", "high_first"):
            ok = same(prepack_sm90_triton(wq, ws, order), torch_twin(wq, ws, order))
            res["checks"].append({"what": f"triton == twin {N}x{K}", "order": order, "ok": ok})
    for N, K in SHAPES:
        wq, ws = weights(N, K, 7)
        num_kt = triton.cdiv(K, 128) * 2
        Np, Kp = triton.cdiv(N, 128) * 128, num_kt * 64
        moved = wq.numel() + ws.numel() + Np * Kp // 2 + Np * Kp // 16  # read + write, bytes
        copy_moved = 2 * (wq.numel() + ws.numel())
        rows = [("copy (clone codes + scales)", "-", partial(clone2, wq, ws), copy_moved)]
        for order in ("low_first", "high_first"):
            want = torch_twin(wq, ws, order)
            rows.append(("torch twin", order, partial(torch_twin, wq, ws, order), moved))
            rows.append(("prepack_weight_sm90 (as is)", order,
                         partial(g.prepack_weight_sm90, wq, ws, order), moved))
            sweep = SWEEP if (N, order) == (18432, "high_first") else [(None, 4)]
            for kt, nw in sweep:
                if kt is not None and num_kt % kt:
                    continue
                fn = partial(prepack_sm90_triton, wq, ws, order, kt_per_program=kt, num_warps=nw)
                ok = same(fn(), want)
                res["checks"].append({"what": f"triton kt={kt} nw={nw} {N}x{K}", "order": order,
                                      "ok": ok})
                if ok:
                    rows.append((f"triton kt_per={kt or 'default'} warps={nw}", order, fn, moved))
        copy_us = None
        for name, order, fn, nbytes in rows:
            med, lo, hi = bench(fn)
            copy_us = med if copy_us is None else copy_us
            r = {"N": N, "K": K, "what": name, "order": order, "us": med, "us_p20": lo,
                 "us_p80": hi, "bytes": nbytes, "GBps": nbytes / med / 1e3,
                 "vs_copy": copy_us / med}
            res["timings"].append(r)
            print(f"{N:>6}x{K:<5} {name:<32} {order:<10} {med:9.1f} us [{lo:.1f}, {hi:.1f}] "
                  f"{r['GBps']:7.0f} GB/s  copy/this {r['vs_copy']:.2f}")
    bad = [c for c in res["checks"] if not c["ok"]]
    print(f"checks: {len(res['checks']) - len(bad)}/{len(res['checks'])} ok", bad or "")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "prepack_sm90.json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
