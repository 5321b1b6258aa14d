"""Throw-away probe: would the Gluon decode GEMV stream faster from the sm90 prepack's layout?

The sm90 prepack (``fp4_gemm_sm90`` module docstring) stores each 16-row warp tile's codes for a
64-K tile as two 256-byte pieces, so a 128-K GEMV step of one warp reads two 512-byte pieces,
where the raw ``(N, K/2)`` layout gives it 16 (or 32) pieces of 64 bytes 1.5 KB apart. This
script builds a patched copy of ``fp4_gemv_sm90`` whose weight and scale *addresses* follow the
sm90 piece structure (same bytes in total, same instructions, but the values land in the wrong
MMA slots, so the output is garbage and is not checked) and times it beside the real kernel at
the same configs. A gain here is the most a GEMV that reads the sm90 layout could win from
memory alone.

Usage (sm_90): ``python scripts/gpu_gemv_layout_probe.py`` (writes $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, patched_module, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_sm90 import run_new  # noqa: E402

RAW_W = "    w_offs = gl.expand_dims(gl.minimum(rw, N - 1), 1) * stride_wn + gl.expand_dims(cw, 0)\n"
PROBE_W = RAW_W + """    # probe: sm90 piece structure (rows are N-aligned here; no clamp needed)
    g2 = gl.expand_dims(rw % 8, 1)
    h2 = gl.expand_dims((rw // 8) % 2, 1)
    wt2 = gl.expand_dims(rw // 16, 1)
    c2 = gl.expand_dims(cw // 4, 0)
    q2 = gl.expand_dims(cw % 4, 0)
    lane2 = 4 * g2 + c2
    prow = (wt2 // 8) * 16 + 2 * (wt2 % 8) + lane2 // 16
    w_offs = prow * (stride_wn * 8) + h2 * 64 + (lane2 % 16) * 4 + q2
"""
RAW_S = ("        s_offs = gl.expand_dims(rs, 1) * stride_wsn + gl.expand_dims(cs, 0)\n")
PROBE_S = RAW_S + """        gs = gl.expand_dims(rs % 8, 1)
        hs = gl.expand_dims((rs // 8) % 2, 1)
        wts = gl.expand_dims(rs // 16, 1)
        s_offs = ((wts // 8) * 8 + wts % 8) * (stride_wsn * 16) + hs * 32 + 4 * gs + \\
            gl.expand_dims(cs, 0)
"""


def probe_module(scales_too=True):
    """The patched module: sm90 code addresses, and sm90 scale addresses if ``scales_too``
    (else the raw row-major scales)."""
    patches = [(RAW_W, PROBE_W), ("wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8))",
                                  "wd = gl.load(w_ptr + w_offs + i * 128)")]
    if scales_too:
        patches += [(RAW_S, PROBE_S), ("        s_step = i * (KSTEP // 32)\n",
                                       "        s_step = i * 64\n")]
    name = "fp4_gemv_sm90_probe" + ("" if scales_too else "_codes")
    return patched_module(name, open(S.__file__).read(), patches)


def main():
    P, PC = probe_module(), probe_module(scales_too=False)
    rows = []
    copies = 4
    cases = [("nvfp4_mm", 1), ("nvfp4_mm", 4), ("nvfp4_mm", 16), ("nvfp4_w4a16_mm", 1),
             ("nvfp4_w4a16_mm", 4), ("nvfp4_w4a16_mm", 16), ("nvfp4_w4a16_bf16", 1),
             ("nvfp4_w4a16_bf16", 4), ("nvfp4_w4a16_bf16", 16)]
    for op, M in cases:
        for N, K in ((18432, 3072), (8192, 8192)):
            if N == 8192 and M != 1:
                continue
            dt = torch.bfloat16 if op.endswith("bf16") else torch.float16
            p = Problem(op.replace("_bf16", ""), M, N, K, dtype=dt, copies=copies)
            nbytes = p.bytes_moved(torch.float16)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")
            heur = S.choose_config(M, N, K, x_fp4=op == "nvfp4_mm")
            cfgs = [heur] + [S.GemvSM90Config(heur.num_warps, 1, sp, 0, heur.row_tiles)
                             for sp in (2, 3, 4) if sp != heur.split_k]
            line = []
            for cfg in cfgs:
                for name, mod in (("raw", S), ("sm90_pieces", P), ("sm90_codes", PC)):
                    t = time_graph([lambda i=i, m=mod: run_new(p, i, out, cfg, m)
                                    for i in range(copies)])
                    rows.append(dict(op=op, M=M, N=N, K=K, layout=name, config=str(cfg),
                                     heuristic=cfg == heur, median_us=t[0], min_us=t[1],
                                     max_us=t[2], gbps=nbytes / (t[0] * 1e-6) / 1e9))
                    line.append(f"{name[-5:]} sp{cfg.split_k} {t[0]:6.2f}")
            print(f"{op:17s} M={M:2d} {N}x{K}: " + " | ".join(line), flush=True)
    save_rows("gemv-layout-probe", rows)


if __name__ == "__main__":
    main()
