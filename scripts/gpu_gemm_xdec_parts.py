# ruff: noqa: B023
"""Probe: where the XDEC worker warpgroup's time goes. Times the XDEC GEMM as shipped in the
source, then with parts of the decode removed (patched copies of the module; their outputs
are wrong and not checked): no decode (waits, fences and arrives only), no scale work
(codes decoded, scales not applied), and no proxy fences. CUDA-graph medians over 4 weight
copies, the pre-pass path and cuBLAS bf16 beside them.
The XDEC kernel was reverted: run at commit 348c250 (``git checkout 348c250``).
Usage on an sm_90 machine: ``python scripts/gpu_gemm_xdec_parts.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import inspect
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, time_graph  # noqa: E402
from gpu_gluon import gen  # noqa: E402

from fp4mm.formats import dequantize_nvfp4_blocks  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90 as g  # noqa: E402

SRC = inspect.getsource(g)
DECODE = ("    _decode_x(xq.slice(0, H), xs.slice(0, H), j, xd.slice(0, H), H, HIGH_FIRST)\n"
          "    _decode_x(xq.slice(H, H), xs.slice(H, H), j, xd.slice(H, H), H, HIGH_FIRST)\n")
VARIANTS = {
    "no_decode": [(DECODE, "")],
    "no_scales": [("    x_smem.store((v * gl.expand_dims(sc, 2)).reshape([R, _BK]))",
                   "    x_smem.store(v.reshape([R, _BK]))")],
    "no_fences": [("    fence_async_shared()  # the generic-proxy stores above",
                   "    pass  # the generic-proxy stores above"),
                  ("            fence_async_shared()  # this stage and raw slot",
                   "            pass  # this stage and raw slot")],
}


def main():
    mods = {"xdec": g}
    for name, patches in VARIANTS.items():
        mods[name] = patched_module(f"fp4_gemm_sm90_{name}", SRC, patches)
    rows = []
    order = "low_first"
    for M, N, K in ((1024, 3072, 3072), (2048, 18432, 3072)):
        xq, xs, wq0, ws0 = gen(M, N, K, seed=M)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=100 + i)[2:] for i in range(3)]
        packs = [g.prepack_weight_sm90(w, s, order) for w, s in wl]
        xb = dequantize_nvfp4_blocks(xq, xs, order).bfloat16()
        wbs = [dequantize_nvfp4_blocks(w, s, order).bfloat16() for w, s in wl]
        ob = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        res = {}
        cands = [("cublas_bf16", None, None), ("shipped", g, None)]
        for bn, st, lead in ((256, 3, 1), (128, 6, 2)):
            for name, mod in mods.items():
                cands.append((f"{name}_{bn}/{st}/L{lead}", mod, (g.SM90Config(bn, st), lead)))
        for name, mod, cfg in cands:
            def call(i):
                if mod is None:
                    torch.matmul(xb, wbs[i].T, out=ob)
                elif cfg is None:
                    g.fp4_gemm_sm90(xq, xs, None, None, 1 / 64, order, out, prepacked=packs[i])
                else:
                    mod.gemm_sm90_xdec(xq, xs, packs[i], 1 / 64, order, out, config=cfg[0],
                                       lead=cfg[1])
            try:
                t = time_graph([lambda i=i: call(i) for i in range(4)])
            except Exception as e:  # noqa: BLE001
                print(f"ERROR {M}x{N}x{K} {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            res[name] = t[0]
            rows.append(dict(M=M, N=N, K=K, variant=name, median_us=t[0], min_us=t[1],
                             max_us=t[2]))
        print(f"{M}x{N}x{K}: " + "  ".join(f"{n} {t:.1f}" for n, t in res.items()), flush=True)
    save_rows("gemm_xdec_parts", rows)


if __name__ == "__main__":
    main()
