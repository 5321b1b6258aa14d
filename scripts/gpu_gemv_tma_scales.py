"""The TMA decode GEMV's E4M3 scales by plain loads instead of a TMA box (session 29).

``scripts/gpu_gemv_tma_cp_async.py`` measured the stream floor of ``fp4_gemv_tma_sm90`` (stage
reads, decode and MMAs removed) without its scale copies: 1.1-1.6 us lower at 4-16 tokens, while
the x copies cost 0.1-0.3 us. A stage's scale box is 64 rows x 16 bytes (a row's 192-byte scale
line is read 16 bytes per chunk); the codes' TMA stream, with no evict-first policy, can push
those lines out of L2 between chunks. Variant ``ld``: each thread loads its rows' scale words from
global memory (through L1, which TMA's streams do not touch) one chunk ahead, as the group-scale
form already does: the int32 word c of a chunk's 16 bytes holds step 0's pair for quad lane c in
its low half and step 1's in its high half (the K permutation of ``_scales_view``).

Variant ``box32`` (written in session 29, not yet run): the scale box 32 bytes a row (this chunk's
16 and the next's), so each DRAM sector is fetched whole once: tests whether the 16-byte
half-sector reads (the other half re-fetched if the line left L2 meanwhile) are what the scale
boxes cost the stream floor.

Usage on an sm_90 machine: ``python -u scripts/gpu_gemv_tma_scales.py`` (JSON to $OUT): oracle
checks (NaN-poisoned output, both variants, fp16/bf16 x, both code orders, ragged N), then 3
rotating rounds of CUDA-graph replays over 4 weight copies at the decode rows.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from scripts.gpu_decode import Problem, patched_module, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), "..", "fp4mm", "kernels", "fp4_gemv_tma_sm90.py")

PATCHES = [
    ("    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0,\n):",
     "    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0,\n"
     "    SCALES_LD: gl.constexpr = False,\n):"),
    ("    GROUPED: gl.constexpr = W_GROUP > 0\n",
     "    GROUPED: gl.constexpr = W_GROUP > 0\n"
     "    NO_S_TMA: gl.constexpr = (W_GROUP > 0) | SCALES_LD\n"),
    ("    if GROUPED:\n        s_bufs = w_bufs  # unused",
     "    if NO_S_TMA:\n        s_bufs = w_bufs  # unused"),
    ("               t, row0, c_begin + t, t < n_c, GROUPED, X_ROWS)",
     "               t, row0, c_begin + t, t < n_c, NO_S_TMA, X_ROWS)"),
    ("               s, row0, c_begin + t + STAGES, t + STAGES < n_c, GROUPED, X_ROWS)",
     "               s, row0, c_begin + t + STAGES, t + STAGES < n_c, NO_S_TMA, X_ROWS)"),
    ("    acc = gl.zeros([BN, NT], gl.float32, mma)\n",
     "    if SCALES_LD:  # int32 words [BN, 4] of (N, K / 64); rows past N clamped\n"
     "        srow = gl.minimum(row0 + gl.arange(0, BN, layout=gl.SliceLayout(1, W_SCALES)), "
     "N - 1)\n"
     "        s_w = srow[:, None] * stride_wsn + gl.arange(0, 4, layout=gl.SliceLayout(0, "
     "W_SCALES))[None, :]\n"
     "        sw = gl.load(ws_ptr + s_w + c_begin * 4)\n"
     "    acc = gl.zeros([BN, NT], gl.float32, mma)\n"),
    ("        mbarrier.wait(ready.index(s), (t // STAGES) & 1)\n",
     "        if SCALES_LD:\n            scw = sw\n"
     "            sw = gl.load(ws_ptr + s_w + gl.minimum(c_begin + t + 1, CHUNKS - 1) * 4)\n"
     "        mbarrier.wait(ready.index(s), (t // STAGES) & 1)\n"),
    ("        if not GROUPED:\n            sv = s_bufs",
     "        if SCALES_LD:\n            sc0 = scw.to(gl.int16)\n"
     "            sc1 = (scw >> 16).to(gl.int16)\n"
     "        elif not GROUPED:\n            sv = s_bufs"),
    ("        ws, sdtype = w_scales, gl.float16\n",
     "        ws, sdtype = (w_scales.view(torch.int32) if SLD[0] else w_scales), gl.float16\n"),
    ("        ALPHA_PTR=alpha_on_device and not partial, W_GROUP=group_size or 0, SDTYPE=sdtype,",
     "        ALPHA_PTR=alpha_on_device and not partial, W_GROUP=group_size or 0, SDTYPE=sdtype,"
     "\n        SCALES_LD=SLD[0] and group_size is None,"),
    ("MAX_M = 32  # tokens", "SLD = [False]\nSBOX = [16]\nMAX_M = 32  # tokens"),
    ("@gluon.constexpr_function\ndef _x_view(",
     "@gluon.constexpr_function\ndef _scales_view32(rows):\n"
     "    return gl.SharedLinearLayout([[0, 4], [0, 1], [0, 2], [0, 8]] + _row_bases(rows, 0))\n"
     "\n\n@gluon.constexpr_function\ndef _x_view("),
    # scale boxes of 32 bytes a row (this chunk's 16 and the next's: whole 32-byte sectors)
    ("        s_bufs = gl.allocate_shared_memory(gl.uint8, [STAGES, BN, 16], s_desc.layout)",
     "        s_bufs = gl.allocate_shared_memory(gl.uint8, [STAGES, BN, "
     "s_desc.block_type.shape[1]], s_desc.layout)"),
    ("            sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _scales_view(BN))",
     "            if s_desc.block_type.shape[1] == 32:\n"
     "                sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 16], "
     "_scales_view32(BN)).slice(0, 8, dim=1)\n"
     "            else:\n"
     "                sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _scales_view(BN))"),
    ("        s_desc = TensorDescriptor.from_tensor(w_scales, [bn, 16], _PLAIN8)",
     "        s_desc = TensorDescriptor.from_tensor(w_scales, [bn, SBOX[0]], _PLAIN8)"),
]


def module():
    return patched_module("fp4_gemv_tma_scales", open(SRC).read(), PATCHES)


def run(mod, ld, p, i, out, cfg=None):
    """``ld``: False (the shipped 16-byte scale boxes), True (plain loads) or "box32"."""
    mod.SLD[0] = ld is True
    mod.SBOX[0] = 32 if ld == "box32" else 16
    mod.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, p.order, out, config=cfg)


def check(mod):
    n = 0
    C = mod.GemvTMAConfig
    for (M, N, K), dt in [((16, 200, 512), torch.bfloat16), ((5, 77, 1280), torch.float16),
                          ((13, 300, 3072), torch.bfloat16), ((32, 1000, 2048), torch.float16),
                          ((4, 64, 256), torch.bfloat16)]:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt)
        for order in ("low_first", "high_first"):
            p.order = order
            ref = p.reference(0)
            for ld in (False, True, "box32"):
                for cfg in (None, C(1, 3, 3, 2), C(2, 2, 1, 1)):
                    check_poisoned(lambda o, ld=ld, p=p, cfg=cfg: run(mod, ld, p, 0, o, cfg),
                                   ref, torch.float32, f"ld={ld} {dt} M={M} N={N} K={K} {cfg}")
                    n += 1
    print(f"correctness: {n} checks passed", flush=True)


SHAPES = [(16, 18432, 3072), (4, 18432, 3072), (8, 18432, 3072), (32, 18432, 3072),
          (16, 8192, 8192), (4, 8192, 8192), (16, 28672, 4096), (16, 3072, 3072)]


def time_variants(run_variant, variants, prefix):
    """Each variant (name -> its argument ``v`` of ``run_variant(v, problem, copy i, out)``) at
    every shape of SHAPES, bf16 x, in 3 rotating rounds of CUDA-graph medians over 4 weight
    copies; prints a line a shape and writes ``<prefix>_<time>.json`` (also the loop of
    ``gpu_gemv_tma_scales_once.py``)."""
    rows = []
    for M, N, K in SHAPES:
        dt = torch.bfloat16
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
        outs = [torch.empty((M, N), dtype=dt, device="cuda") for _ in range(4)]
        fns = {name: (lambda ld=ld, p=p, outs=outs: time_graph(
            [lambda i=i: run_variant(ld, p, i, outs[i]) for i in range(4)])[0])
            for name, ld in variants.items()}
        got = rounds(fns, 3)
        line = f"bf16 M={M} {N}x{K}:"
        for k, v in got.items():
            med = sorted(v)[1]
            rows.append(dict(op="nvfp4_w4a16_mm", M=M, N=N, K=K, dtype=str(dt), variant=k,
                             rounds_us=v, median_us=med))
            line += f" {k} {med:.2f}"
        print(line, flush=True)
    save_rows(prefix, rows)


def main():
    mod = module()
    check(mod)
    time_variants(lambda ld, p, i, out: run(mod, ld, p, i, out),
                  {"tma_scales": False, "ld_scales": True, "tma_scales32": "box32"},
                  "gemv-tma-scales")


if __name__ == "__main__":
    main()
