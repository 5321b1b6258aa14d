# ruff: noqa: B023, E501  (closures timed at once; the anchors are kernel source lines)
"""Probe (session 20): the decode GEMV issues its first weight loads before ``griddepcontrol.wait``.

``_fp4_gemv_sm90_kernel`` (launched with PDL when it splits K) waits for the kernel before it
at its very start, before any memory access. Only x (and alpha) can come from that kernel: the
weights are the layer's parameters. The variant loads the register ring's weight slots (codes
and scales of its first steps) first, then waits, then loads x, so the first weight chunks
stream while the previous kernel (the split-K reduce of the call before, or the activation
quantiser in a layer) finishes. Outputs compared bit for bit with the shipped kernel, then
public ops timed back to back over 4 weight copies (CUDA-graph medians, A and B alternating
twice), as the decode bench rows are, and NVFP4Linear's static W4A4 forward.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_weights_before_wait.py`` (JSON to $OUT).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, seeded_linear, time_graph  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.formats import float_to_e4m3  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as shipped  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402

WAIT = '''    if PDL:  # launched early behind the previous kernel: wait for it before any memory access
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
'''
PROLOGUE = '''    wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, i_begin, True, MASKED, KSTEP, W_GROUP)
    xa0, xb0 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, i_begin, True, X_FP4, MASKED, KSTEP)
    wd1, sc1 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 1, last),
                       i_begin + 1 < i_end, MASKED, KSTEP, W_GROUP)
    if not X_AHEAD:
        xa1, xb1 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i_begin + 1, last),
                           i_begin + 1 < i_end, X_FP4, MASKED, KSTEP)
    if U == 3:
        wd2, sc2 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 2, last),
                           i_begin + 2 < i_end, MASKED, KSTEP, W_GROUP)
        if not X_AHEAD:
            xa2, xb2 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i_begin + 2, last),
                               i_begin + 2 < i_end, X_FP4, MASKED, KSTEP)
'''
EARLY = '''    wd0, sc0 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, i_begin, True, MASKED, KSTEP, W_GROUP)
    wd1, sc1 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 1, last),
                       i_begin + 1 < i_end, MASKED, KSTEP, W_GROUP)
    if U == 3:
        wd2, sc2 = _load_w(w_ptr, ws_ptr, w_offs, s_offs, gl.minimum(i_begin + 2, last),
                           i_begin + 2 < i_end, MASKED, KSTEP, W_GROUP)
''' + WAIT.replace("before any memory access", "before x (weights are not its output)") + '''    xa0, xb0 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, i_begin, True, X_FP4, MASKED, KSTEP)
    if not X_AHEAD:
        xa1, xb1 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i_begin + 1, last),
                           i_begin + 1 < i_end, X_FP4, MASKED, KSTEP)
    if U == 3:
        if not X_AHEAD:
            xa2, xb2 = _load_x(x_ptr, xs_ptr, xa_offs, xb_offs, gl.minimum(i_begin + 2, last),
                               i_begin + 2 < i_end, X_FP4, MASKED, KSTEP)
'''


def variant_kernel():
    src = open(shipped.__file__).read()
    mod = patched_module("fp4_gemv_sm90_early", src, [(WAIT, ""), (PROLOGUE, EARLY)])
    return mod._fp4_gemv_sm90_kernel


def use(kernel):
    shipped._fp4_gemv_sm90_kernel = kernel


def main():
    base, early = shipped._fp4_gemv_sm90_kernel, variant_kernel()
    rows = []
    cases = []
    for N, K in ((18432, 3072), (8192, 8192)):
        for op, Ms in (("nvfp4_mm", (1, 4, 16)), ("nvfp4_w4a16_mm", (1, 4)),
                       ("w4a16_mm", (1, 4))):
            if (N, K) == (8192, 8192) and op != "nvfp4_mm":
                Ms = (1,)
            for M in Ms:
                cases.append((op, M, N, K))
    for op, M, N, K in cases:
        ws = []
        for _ in range(4):
            wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda")
            if op == "w4a16_mm":
                sc = (torch.rand(N, K // 32, device="cuda") * 0.1 + 0.01).half()
            else:
                sc = float_to_e4m3(torch.rand(N, K // 16, device="cuda") * 1.5 + 0.5)
            ws.append((wq, sc))
        if op == "nvfp4_mm":
            xq = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, device="cuda")
            xs = float_to_e4m3(torch.rand(M, K // 16, device="cuda") * 1.5 + 0.5)
            alpha = torch.tensor(1 / 64, device="cuda")

            def call(i):
                return fp4mm.nvfp4_mm(xq, xs, ws[i][0], ws[i][1], alpha)
        elif op == "nvfp4_w4a16_mm":
            x = (torch.randn(M, K, device="cuda") * 0.5).bfloat16()

            def call(i):
                return fp4mm.nvfp4_w4a16_mm(x, ws[i][0], ws[i][1], 2.7)
        else:
            x = (torch.randn(M, K, device="cuda") * 0.5).half()

            def call(i):
                return fp4mm.w4a16_mm(x, ws[i][0], ws[i][1], 32)
        use(base)
        a = [call(i) for i in range(4)]
        use(early)
        b = [call(i) for i in range(4)]
        same = all(torch.equal(p, q) for p, q in zip(a, b))
        res = {}
        for run in range(2):
            for name, k in (("shipped", base), ("weights_first", early)):
                use(k)
                t = time_graph([lambda i=i: call(i) for i in range(4)])
                res.setdefault(name, []).append(t[0])
                rows.append(dict(op=op, M=M, N=N, K=K, variant=name, run=run, median_us=t[0],
                                 min_us=t[1], max_us=t[2], bit_identical=same))
        use(base)
        print(f"{op} {M}x{N}x{K} same={same}: " + "  ".join(
            f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    # the layer: quantiser (PDL) -> GEMV -> reduce, static scale, bf16 x
    layers = []
    for i in range(4):
        lin = seeded_linear(3072, 18432, i)
        layers.append(NVFP4Linear.from_linear(lin, mode="w4a4", activation_scale=672.0))
    for M in (1, 4):
        x = (torch.randn(M, 3072, device="cuda") * 0.5).bfloat16()
        use(base)
        a = layers[0](x)
        use(early)
        same = torch.equal(a, layers[0](x))
        res = {}
        for run in range(2):
            for name, k in (("shipped", base), ("weights_first", early)):
                use(k)
                t = time_graph([lambda la=la: la(x) for la in layers])
                res.setdefault(name, []).append(t[0])
                rows.append(dict(op="NVFP4Linear w4a4 static", M=M, N=18432, K=3072,
                                 variant=name, run=run, median_us=t[0], min_us=t[1],
                                 max_us=t[2], bit_identical=same))
        use(base)
        print(f"layer M={M} same={same}: " + "  ".join(
            f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()), flush=True)
    save_rows("gemv-weights-before-wait", rows)


if __name__ == "__main__":
    main()
