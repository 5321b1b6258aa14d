# ruff: noqa: B023  (the closures are timed inside their loop iteration)
"""Does each op's GEMV / GEMM dispatch hold on this card? The public op as dispatched against the
same op with the kernel forced (``FP4MM_KERNEL=gemv`` / ``gemm``), raw and prepacked weights, at
every M of an M sweep on three weight shapes. The tables in ``fp4mm.ops.dispatch`` were placed on
an H100; issue 4's rule is that the dispatched call is never more than 5% slower than the best
forced kernel. Ops: ``nvfp4_mm`` (W4A4), ``nvfp4_w4a16_mm`` (bf16 x), ``w4a16_mm`` groups of 32
and 128 (fp16 x). Each output checked against the fp32 oracle first; then CUDA-graph medians over
rotating weight copies (>= 3x the L2) in 3 rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_dispatch_check.py [--part i/n]`` (JSON to $OUT or .).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.ops import nvfp4_w4a16_mm_alpha  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import L2_BYTES, Problem, close, time_graph  # noqa: E402

SHAPES = [(18432, 3072), (8192, 8192), (4096, 4096)]
MS = [1, 4, 8, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128]
# (label, op, x dtype, group size)
OPS = [("w4a4", "nvfp4_mm", torch.float16, None), ("nvfp4_w4a16", "nvfp4_w4a16_mm", torch.bfloat16,
                                                   None),
       ("g32", "w4a16_mm", torch.float16, 32), ("g128", "w4a16_mm", torch.float16, 128)]
MODES = ("auto", "gemv", "gemm")


def prepack(op, w, gs):
    if op == "w4a16_mm":
        return fp4mm.prepack_w4a16_weight(*w, gs)
    return fp4mm.prepack_nvfp4_weight(*w)


def call(op, p, w, gs, alpha, raw):
    """The public op on copy ``w``: raw ``(w_q, scales)`` or a prepacked weight."""
    if op == "nvfp4_mm":
        return fp4mm.nvfp4_mm(*p.x, *(w if raw else (w, None)), alpha)
    if op == "w4a16_mm":
        return fp4mm.w4a16_mm(p.x[0], *(w if raw else (w, None)), gs)
    return nvfp4_w4a16_mm_alpha(p.x[0], *(w if raw else (w, None)), alpha)  # alpha = 1 / gs_w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="0/1", help="i/n: every n-th (op, shape) from the i-th")
    i, n = (int(v) for v in ap.parse_args().part.split("/"))
    path = gpu_decode.result_path("dispatch-check")
    rows = []
    combos = [(o, s) for o in OPS for s in SHAPES][i::n]
    for (label, op, dt, gs), (N, K) in combos:
        probe = Problem(op, 1, N, K, group=gs or 16, dtype=dt)
        copies = max(2, 3 * L2_BYTES // probe.weight_bytes() + 1)
        base = Problem(op, 1, N, K, group=gs or 16, dtype=dt, copies=copies)
        packs = [prepack(op, w, gs) for w in base.w]
        for M in MS:
            p = Problem(op, M, N, K, group=gs or 16, dtype=dt)
            p.w = base.w
            ref = p.reference(0)
            for prepacked in (False, True):
                ws, raw = (packs, False) if prepacked else (base.w, True)
                fns = {}
                for mode in MODES:
                    os.environ["FP4MM_KERNEL"] = mode
                    ok = close(call(op, p, ws[0], gs, p.alpha, raw), ref)[0]
                    os.environ.pop("FP4MM_KERNEL")
                    if not ok:
                        raise SystemExit(f"FAIL {label} {M}x{N}x{K} {mode} prepacked={prepacked}")

                    def timed(mode=mode):
                        os.environ["FP4MM_KERNEL"] = mode
                        try:
                            return time_graph([lambda j=j: call(op, p, ws[j], gs, p.alpha, raw)
                                               for j in range(copies)])[0]
                        finally:
                            os.environ.pop("FP4MM_KERNEL")
                    fns[mode] = timed
                times = gpu_decode.rounds(fns)
                med = {k: sorted(v)[1] for k, v in times.items()}
                best = min(med["gemv"], med["gemm"])
                rows.append(dict(op=op, label=label, group=gs, x=str(dt), M=M, N=N, K=K,
                                 prepacked=prepacked, rounds_us=times, median_us=med,
                                 auto_over_best=med["auto"] / best))
                flag = " <-- over 5%" if med["auto"] > 1.05 * best else ""
                print(f"{label:11s} {M:4d}x{N:5d}x{K:5d} {'pre' if prepacked else 'raw'}: auto "
                      f"{med['auto']:7.2f} gemv {med['gemv']:7.2f} gemm {med['gemm']:7.2f} us "
                      f"(auto / best {med['auto'] / best:.3f}){flag}", flush=True)
                gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
