"""The TMA decode GEMV's E4M3 scales in one box per CTA instead of one per chunk (session 30).

Session 29 (``scripts/gpu_gemv_tma_cp_async.py``) measured the stream floor of
``fp4_gemv_tma_sm90`` 1.1-1.5 us lower without its per-chunk scale boxes (64 rows x 16 bytes,
one TMA copy a chunk beside the codes' and x's). Scales by plain loads gave that back in the
consumers (``gpu_gemv_tma_scales.py``, variant ``ld``), and 32-byte boxes (whole sectors) changed
nothing (``box32``). Left: fewer scale copies. Variant ``once``: each CTA copies all its chunks'
scales with one TMA box at the start, on its own mbarrier, into a [NCH, rows, 16 B] buffer (NCH:
its chunk count rounded up to a power of two). The box reads the scales through a chunk-major
view of the (N, K/16) tensor, (K/256, N, 16) with strides (16, K/16, 1), so that each chunk's
[rows, 16 B] lands where a ring stage's scale box did and the consumers read it unchanged. The
box starts at chunk min(first, CHUNKS - NCH), so it never runs past the tensor's chunks.

Usage on an sm_90 machine: ``python -u scripts/gpu_gemv_tma_scales_once.py`` (JSON to $OUT):
oracle checks (NaN-poisoned output, both orders, fp16/bf16 x, ragged N, several configs and
splits), then 3 rotating rounds of CUDA-graph replays over 4 weight copies, shipped vs once.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as shipped  # noqa: E402
from scripts.gpu_decode import Problem, patched_module  # noqa: E402
from scripts.gpu_gemv_tma_scales import time_variants  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), "..", "fp4mm", "kernels", "fp4_gemv_tma_sm90.py")

PATCHES = [
    ("    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0,\n):",
     "    SDTYPE: gl.constexpr = gl.float16, X_ROWS: gl.constexpr = 0,\n"
     "    S_ONCE: gl.constexpr = 0,\n):"),
    ("    GROUPED: gl.constexpr = W_GROUP > 0\n",
     "    GROUPED: gl.constexpr = W_GROUP > 0\n"
     "    NO_S_TMA: gl.constexpr = (W_GROUP > 0) | (S_ONCE > 0)\n"),
    ("    if GROUPED:\n        s_bufs = w_bufs  # unused",
     "    s_box = w_bufs  # (unused without S_ONCE)\n"
     "    if S_ONCE > 0:\n"
     "        s_box = gl.allocate_shared_memory(gl.uint8, [S_ONCE, BN, 16], s_desc.layout)\n"
     "        s_bufs = s_box._reinterpret(gl.uint8, [S_ONCE, BN, 16], _PLAIN8)\n"
     "    elif GROUPED:\n        s_bufs = w_bufs  # unused"),
    ("        mbarrier.init(ready.index(i), count=1)\n    fence_async_shared()\n",
     "        mbarrier.init(ready.index(i), count=1)\n"
     "    sbar = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())\n"
     "    mbarrier.init(sbar.index(0), count=1)\n"
     "    fence_async_shared()\n"),
    ("    row0 = pid_n * BN\n",
     "    row0 = pid_n * BN\n"
     "    cs0 = c_begin\n"
     "    if S_ONCE > 0:  # every chunk's scales in one box, never past the last chunk\n"
     "        cs0 = gl.maximum(gl.minimum(c_begin, CHUNKS - S_ONCE), 0)\n"
     "        mbarrier.expect(sbar.index(0), S_ONCE * BN * 16)\n"
     "        tma.async_copy_global_to_shared(s_desc, [cs0, row0, 0], sbar.index(0), s_box)\n"),
    ("               t, row0, c_begin + t, t < n_c, GROUPED, X_ROWS)",
     "               t, row0, c_begin + t, t < n_c, NO_S_TMA, X_ROWS)"),
    ("               s, row0, c_begin + t + STAGES, t + STAGES < n_c, GROUPED, X_ROWS)",
     "               s, row0, c_begin + t + STAGES, t + STAGES < n_c, NO_S_TMA, X_ROWS)"),
    ("    acc = gl.zeros([BN, NT], gl.float32, mma)\n",
     "    acc = gl.zeros([BN, NT], gl.float32, mma)\n"
     "    if S_ONCE > 0:\n        mbarrier.wait(sbar.index(0), 0)\n"),
    ("            sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _scales_view(BN))",
     "            if S_ONCE > 0:\n"
     "                sv = s_bufs.index(c_begin + t - cs0)._reinterpret(gl.int16, [BN, 8], "
     "_scales_view(BN))\n"
     "            else:\n"
     "                sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _scales_view(BN))"),
    ("        s_desc = TensorDescriptor.from_tensor(w_scales, [bn, 16], _PLAIN8)",
     "        s_desc = TensorDescriptor.from_tensor(w_scales, [bn, 16], _PLAIN8)\n"
     "        n_ch = K // KCHUNK\n"
     "        nch = triton.next_power_of_2(triton.cdiv(n_ch, max(1, min(cfg.split_k, n_ch))))\n"
     "        if ONCE[0]:\n"
     "            s_desc = TensorDescriptor.from_tensor(\n"
     "                w_scales.view(N, n_ch, 16).permute(1, 0, 2), [nch, bn, 16],\n"
     "                gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8, rank=3))"),
    ("        X_ROWS=xr,\n",
     "        X_ROWS=xr, S_ONCE=nch if ONCE[0] and group_size is None else 0,\n"),
    ("MAX_M = 32  # tokens", "ONCE = [False]\nMAX_M = 32  # tokens"),
]


def module():
    return patched_module("fp4_gemv_tma_scales_once", open(SRC).read(), PATCHES)


def run(mod, once, p, i, out, cfg=None):
    """``once``: False (the shipped module, unpatched) or True (one scale box per CTA)."""
    if once:
        mod.ONCE[0] = True
        mod.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, p.order, out, config=cfg)
    else:
        shipped.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, p.order, out, config=cfg)


def check(mod):
    n = 0
    C = mod.GemvTMAConfig
    for (M, N, K), dt in [((16, 200, 512), torch.bfloat16), ((5, 77, 1280), torch.float16),
                          ((13, 300, 3072), torch.bfloat16), ((32, 1000, 2048), torch.float16),
                          ((4, 64, 256), torch.bfloat16), ((16, 130, 4096), torch.float16)]:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt)
        for order in ("low_first", "high_first"):
            p.order = order
            ref = p.reference(0)
            for cfg in (None, C(1, 3, 3, 2), C(2, 2, 1, 1), C(1, 2, 4, 4)):
                check_poisoned(lambda o, p=p, cfg=cfg: run(mod, True, p, 0, o, cfg),
                               ref, torch.float32, f"once {dt} M={M} N={N} K={K} {cfg}")
                n += 1
    print(f"correctness: {n} checks passed", flush=True)


def main():
    mod = module()
    check(mod)
    time_variants(lambda once, p, i, out: run(mod, once, p, i, out),
                  {"shipped": False, "once": True}, "gemv-tma-scales-once")


if __name__ == "__main__":
    main()
