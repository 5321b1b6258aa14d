"""Probe: split-K slices of the decode GEMV taken strided (program k of S takes steps k, k + S,
...) instead of contiguous, so the S programs of a row block, which run at the same time, read
adjacent 64-byte pieces of the same rows (S x 64 contiguous bytes per row at a moment, where
contiguous slices read pieces K/S apart). Any partition of K is valid, so the result is exact up
to the fp32 summation order and is checked against the oracle.

It patches a copy of ``fp4_gemv_sm90`` (text replacements; configs with STEPS % split == 0 and
an unmasked ring only) and times it beside the shipped kernel at the same configs.
Usage (sm_90): ``python scripts/gpu_gemv_strided_k.py`` (writes $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

C = S.GemvSM90Config
NP = "gl.num_programs(1)"
PATCHES = [
    ("wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8))",
     f"wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8) * {NP})"),
    ("xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 8))",
     f"xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 8) * {NP})"),
    ("xb = gl.load(xs_ptr + xb_offs + i * (KSTEP // 32))",
     f"xb = gl.load(xs_ptr + xb_offs + i * (KSTEP // 32) * {NP})"),
    ("xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 2))",
     f"xa = gl.load(x_ptr + xa_offs + i * (KSTEP // 2) * {NP})"),
    ("        s_step = i * (KSTEP // 32)\n", f"        s_step = i * (KSTEP // 32) * {NP}\n"),
    ("    last = STEPS - 1\n", "    last = i_end - 1\n"),
    ("    acc = gl.zeros([BN, NT], gl.float32, mma)\n",
     "    shift = pid_k - gl.num_programs(1) * i_begin  # physical step = S * virtual + shift\n"
     "    w_offs += shift * (KSTEP // 8)\n"
     "    s_offs += shift * (KSTEP // 32)\n"
     "    if X_FP4:\n"
     "        xa_offs += shift * (KSTEP // 8)\n"
     "        xb_offs += shift * (KSTEP // 32)\n"
     "    else:\n"
     "        xa_offs += shift * (KSTEP // 2)\n"
     "        xb_offs = xa_offs\n"
     "    acc = gl.zeros([BN, NT], gl.float32, mma)\n"),
]


def strided_module():
    return patched_module("fp4_gemv_sm90_strided", open(S.__file__).read(), PATCHES)


def main():
    T = strided_module()
    rows, fails = [], 0
    cases = [("nvfp4_w4a16_mm", torch.float16, 1), ("nvfp4_w4a16_mm", torch.float16, 4),
             ("nvfp4_w4a16_mm", torch.bfloat16, 1), ("nvfp4_w4a16_mm", torch.bfloat16, 4),
             ("nvfp4_w4a16_mm", torch.float16, 16), ("nvfp4_mm", torch.float16, 1),
             ("nvfp4_mm", torch.float16, 4), ("nvfp4_mm", torch.float16, 16)]
    for op, dt, M in cases:
        for N, K in ((18432, 3072), (8192, 8192)):
            if N == 8192 and M != 1:
                continue
            p = Problem(op, M, N, K, dtype=dt, copies=4)
            nbytes = p.bytes_moved(torch.float16)
            heur = S.choose_config(M, N, K, x_fp4=op == "nvfp4_mm")
            steps = K // 128
            cfgs = [C(heur.num_warps, 1, sp, 0, heur.row_tiles) for sp in (2, 3, 4, 6)
                    if steps % sp == 0 and (steps // sp) % 2 == 0]
            line = []
            for cfg in cfgs:
                for name, mod in (("contiguous", S), ("strided", T)):
                    o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
                    run_new(p, 0, o, cfg, mod)
                    torch.cuda.synchronize()
                    ok = close(o, p.reference(0))[0]
                    if not ok:
                        fails += 1
                        print(f"FAIL {name} {op} {dt} M={M} {cfg}", flush=True)
                        continue
                    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
                    ts = [time_graph([lambda i=i, m=mod, c=cfg: run_new(p, i, out, c, m)
                                      for i in range(4)])[0] for _ in range(2)]
                    rows.append(dict(op=op, dtype=str(dt), M=M, N=N, K=K, slices=name,
                                     config=str(cfg), heuristic_split=heur.split_k,
                                     median_us=ts, gbps=[nbytes / (t * 1e-6) / 1e9 for t in ts]))
                    line.append(f"{name[:3]} s{cfg.split_k} {min(ts):6.2f}")
            print(f"{op:15s} {str(dt)[6:]:8s} M={M:2d} {N}x{K} (heur s{heur.split_k}): "
                  + " | ".join(line), flush=True)
    save_rows("gemv-strided-k", rows)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
