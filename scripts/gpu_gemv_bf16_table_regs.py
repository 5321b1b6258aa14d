# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""The bf16-x decode with its byte tables' two low words in regular registers (session 24).

ptxas keeps the constants 0x3F3F3F00 and 0xC0800000 of ``E2M1_WORD_BF16_PTX`` in uniform
registers and copies one into a regular register at every table ``prmt`` (61 copies in the
ring's bf16 loop of 447 SASS instructions). Here they are asm operands derived from a per-thread
zero ptxas cannot fold (lane id x ctaid.z of a 2-D grid): the loop is 389 instructions, same 95
registers. The variant (a patched copy of ``fp4_gemv_sm90``) against the shipped ring, NVFP4
weights with bf16 x: oracle and bit-for-bit checks first, then CUDA-graph medians over weight
copies that fill 3x the L2, rotating rounds. Usage on an sm_90 machine:
``python scripts/gpu_gemv_bf16_table_regs.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, time_graph  # noqa: E402
from gpu_gluon import gen  # noqa: E402

from fp4mm import reference  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S0  # noqa: E402

_TABLES = ('.replace("prmt.b32 hA, 0x3F3F3F00,", "prmt.b32 hA, $20,")'
           '.replace("prmt.b32 hB, 0x3F3F3F00,", "prmt.b32 hB, $20,")'
           '.replace("prmt.b32 lA, 0xC0800000,", "prmt.b32 lA, $28,")'
           '.replace("prmt.b32 lB, 0xC0800000,", "prmt.b32 lB, $28,")')
PATCHES = [
    ('_DECODE_BF16_LOW = gl.constexpr(_bf16_decoder("low_first", True))',
     '_DECODE_BF16_LOW = gl.constexpr(_bf16_decoder("low_first", True)' + _TABLES + ')'),
    ('_DECODE_BF16_HIGH = gl.constexpr(_bf16_decoder("high_first", True))',
     '_DECODE_BF16_HIGH = gl.constexpr(_bf16_decoder("high_first", True)' + _TABLES + ')'),
    ('''    if DTYPE == gl.bfloat16:
        v = gl.inline_asm_elementwise(_DECODE_BF16_HIGH if HIGH_FIRST else _DECODE_BF16_LOW,
                                      "=r,=r,=r,=r" + ",r" * 16, [w8, s8], dtype=gl.bfloat16,
                                      is_pure=True, pack=8)''',
     '''    if DTYPE == gl.bfloat16:
        z = gl.inline_asm_elementwise(
            "{.reg .u32 a, b; mov.u32 a, %laneid; mov.u32 b, %ctaid.z; mul.lo.u32 $0, a, b;}",
            "=r", [], dtype=gl.int32, is_pure=True, pack=1)
        k18 = gl.zeros_like(w8) + (z | 0x3F3F3F00)
        k28 = gl.zeros_like(w8) + (z | -1065353216)
        v = gl.inline_asm_elementwise(_DECODE_BF16_HIGH if HIGH_FIRST else _DECODE_BF16_LOW,
                                      "=r,=r,=r,=r" + ",r" * 32, [w8, s8, k18, k28],
                                      dtype=gl.bfloat16, is_pure=True, pack=8)'''),
]


def main():
    S1 = patched_module("fp4_gemv_sm90_bf16_regs", open(S0.__file__).read(), PATCHES)
    rows, alpha = [], 0.37
    for M, N, K, order in ((1, 4099, 3072, "low_first"), (3, 200, 1024, "high_first"),
                           (8, 18432, 3072, "low_first")):
        _, _, wq, ws = gen(1, N, K, seed=M + N)
        x = (torch.randn(M, K, device="cuda") * 0.5).bfloat16()
        ref = reference.nvfp4_w4a16_mm(x, wq, ws, 1.0 / alpha, order=order)
        outs = []
        for mod in (S0, S1):
            o = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
            mod.nvfp4_w4a16_mm_gemv_sm90(x, wq, ws, alpha, order, o)
            outs.append(o)
        err = (outs[1].float() - ref).abs().max().item()
        ok = torch.equal(outs[0], outs[1]) and not torch.isnan(outs[1]).any()
        print(("ok  " if ok else "FAIL"), M, N, K, order, f"max err {err:.3g}", flush=True)
        if not ok:
            raise SystemExit("wrong results")
    for M, N, K in ((1, 18432, 3072), (4, 18432, 3072), (8, 18432, 3072), (1, 8192, 8192)):
        _, _, wq0, ws0 = gen(1, N, K, seed=N + K + M)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        wl = [(wq0, ws0)] + [gen(1, N, K, seed=300 + i)[2:] for i in range(copies - 1)]
        x = (torch.randn(M, K, device="cuda") * 0.5).bfloat16()
        out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        variants = {name: (lambda mod: lambda i: mod.nvfp4_w4a16_mm_gemv_sm90(
            x, wl[i][0], wl[i][1], 1.0, "low_first", out))(mod)
            for name, mod in (("shipped", S0), ("table regs", S1))}
        res = {k: [] for k in variants}
        names = list(variants)
        for r in range(6):
            for name in names[r % 2:] + names[:r % 2]:
                fn = variants[name]
                t = time_graph([lambda i=i: fn(i) for i in range(copies)])
                res[name].append(t[0])
                rows.append(dict(M=M, N=N, K=K, variant=name, round=r, median_us=t[0],
                                 min_us=t[1], max_us=t[2], copies=copies))
        print(f"M={M} {N}x{K}: " + " | ".join(
            f"{k} {sorted(v)[len(v) // 2]:.2f} (best {min(v):.2f})" for k, v in res.items()),
            flush=True)
    save_rows("gemv-bf16-table-regs", rows)


if __name__ == "__main__":
    main()
