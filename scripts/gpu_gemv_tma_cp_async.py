"""Does the TMA decode GEMV (``fp4_gemv_tma_sm90``) gain from evict-first weight loads? (session 29)

Session 25 found the register-fed decode GEMVs 5-10% faster with their weight words loaded
evict-first (the scales' and x's lines, re-read, then stay in L1/L2). The TMA-fed GEMV could not
take the hint: Gluon 3.6's TMA copy has no cache policy. Gluon's Ampere ``cp.async`` has one. This
probe patches a copy of the kernel module so that each stage's weight codes come by per-thread
16-byte ``cp.async`` (into the same 128-byte-swizzled stage; completion tracked on the stage's
mbarrier with ``cp.async.mbarrier.arrive.noinc``); scales and x stay on TMA. Triton 3.6 lowers
that copy as ``cp.async.cg`` *without* the policy even when ``evict_first`` is asked for
(checked in the PTX), so the hint itself cannot be tested this way. Timed: ``tma`` (shipped)
against ``cp`` (the codes by cp.async; 128 registers against 63 at 16 tokens), each also as a stream
floor (stage reads, decode and MMAs removed; output not checked), and the stream floor without
the x copies and with the codes alone. Second section: x boxes that run past x's rows (TMA
zero-fills them) against x padded to the token tile, at 4-16 tokens (session 28's open question:
groups of 32 at 9-12 tokens took 27.4 us against 20.6 at 16).

Usage on an sm_90 machine: ``python -u scripts/gpu_gemv_tma_cp_async.py [--padding]`` (JSON to
$OUT; ``--padding``: the second section alone). Results: bench/results/2026-11-27-gemv-tma-stream-
parts-h100.json and -x-padding-h100.json (run against the kernel of 84a56aa). Every
full variant is checked against the oracle (NaN-poisoned output) first; then each shape is timed
in 3 rotating rounds of CUDA-graph replays over 4 weight copies.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from scripts.gpu_decode import Problem, patched_module, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402
from scripts.gpu_gemv_tma_timeline import STREAM  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), "..", "fp4mm", "kernels", "fp4_gemv_tma_sm90.py")

ISSUE_OLD = '''    mbarrier.expect(ready.index(s), nbytes, pred=live)
    tma.async_copy_global_to_shared(w_desc, [row0, chunk * 128], ready.index(s), w_bufs.index(s),
                                    pred=live)
'''
ISSUE_NEW = '''    if CP:  # the codes by per-thread cp.async (rows past N clamped); TMA: the rest
        nb: gl.constexpr = nbytes - w_desc.block_type.nbytes
        if live:
            async_copy.async_copy_global_to_shared(w_bufs.index(s), w_ptr + (cp_offs + chunk * 128))
            async_copy.mbarrier_arrive(ready.index(s), increment_count=False)
    else:
        nb: gl.constexpr = nbytes
    mbarrier.expect(ready.index(s), nb, pred=live)
    if not CP:
        tma.async_copy_global_to_shared(w_desc, [row0, chunk * 128], ready.index(s),
                                        w_bufs.index(s), pred=live)
'''

PATCHES = [
    ("from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared,",
     "from triton.experimental.gluon.language.nvidia.ampere import async_copy\n"
     "from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared,"),
    ("           row0, chunk, live, GROUPED: gl.constexpr, X_ROWS: gl.constexpr):",
     "           row0, chunk, live, GROUPED: gl.constexpr, X_ROWS: gl.constexpr, w_ptr, cp_offs,"
     "\n           CP: gl.constexpr):"),
    (ISSUE_OLD, ISSUE_NEW),
    ("    w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, ws_ptr, out_ptr, M, N, CHUNKS,",
     "    w_desc, s_desc, x_desc, xh_desc, xq_desc, xe_desc, ws_ptr, w_ptr, stride_wn,"
     "\n    CP: gl.constexpr, out_ptr, M, N, CHUNKS,"),
    ("        mbarrier.init(ready.index(i), count=1)",
     "        mbarrier.init(ready.index(i), count=1 + (32 * gl.num_warps() if CP else 0))"),
    ("    row0 = pid_n * BN\n",
     "    row0 = pid_n * BN\n"
     "    CPL: gl.constexpr = gl.BlockedLayout([1, 16], [4, 8], [gl.num_warps(), 1], [1, 0])\n"
     "    cp_r = gl.minimum(row0 + gl.arange(0, BN, layout=gl.SliceLayout(1, CPL)), N - 1)\n"
     "    cp_c = gl.arange(0, 128, layout=gl.SliceLayout(0, CPL))\n"
     "    cp_offs = cp_r[:, None] * stride_wn + cp_c[None, :]  # int32\n"),
    ("               t, row0, c_begin + t, t < n_c, GROUPED, X_ROWS)",
     "               t, row0, c_begin + t, t < n_c, GROUPED, X_ROWS, w_ptr, cp_offs, CP)"),
    ("               s, row0, c_begin + t + STAGES, t + STAGES < n_c, GROUPED, X_ROWS)",
     "               s, row0, c_begin + t + STAGES, t + STAGES < n_c, GROUPED, X_ROWS, w_ptr,"
     "\n               cp_offs, CP)"),
    (" xe_desc, ws, dst, M, N, chunks, per, a, alpha_ptr,\n",
     " xe_desc, ws, w_q, w_q.stride(0), MODE[0] == 'cp',"
     "\n        dst, M, N, chunks, per, a, alpha_ptr,\n"),
    ("MAX_M = 32  # tokens", "MODE = ['tma']\nMAX_M = 32  # tokens"),
]

# the stream floor without the x copies (x_off) or without x and scale copies (w_only)
X_COPY = ("        tma.async_copy_global_to_shared(x_desc, [0, chunk * 4, 0], ready.index(s), xs, "
          "pred=live)\n")
S_COPY = ("        tma.async_copy_global_to_shared(s_desc, [row0, chunk * 16], ready.index(s),\n"
          "                                        s_bufs.index(s), pred=live)\n")
X_BYTES = ("        xbytes: gl.constexpr = x_desc.block_type.nbytes\n")
X_OFF = [(X_COPY, "        pass\n"), (X_BYTES, "        xbytes: gl.constexpr = 0\n")]
W_ONLY = X_OFF + [(S_COPY, "        pass\n"),
                  ("        nbytes: gl.constexpr = w_desc.block_type.nbytes + s_desc.block_type"
                   ".nbytes + xbytes\n", "        nbytes: gl.constexpr = w_desc.block_type.nbytes"
                   "\n")]
# x padded to the token tile: the launcher's M (the rows stored) from M_OUT, x's rows = NT
M_OUT = [("    M, K = x.shape\n    N = w_q.shape[0]\n",
          "    M, K = x.shape\n    M = M_OUT[0] or M\n    N = w_q.shape[0]\n"),
         ("x.view(M, K // 64, 64)", "x.view(x.shape[0], K // 64, 64)"),
         ("MAX_M = 32  # tokens", "M_OUT = [0]\nMAX_M = 32  # tokens")]

MODES = ("tma", "cp")


def modules():
    src = open(SRC).read()
    return {name: patched_module(f"fp4_gemv_tma_cp_{name}", src, extra + PATCHES + M_OUT)
            for name, extra in (("full", []), ("stream", STREAM),
                                ("stream_x_off", STREAM + X_OFF),
                                ("stream_w_only", STREAM + W_ONLY))}


def run(mod, mode, p, i, out, cfg=None, group=None, x=None, m_out=0):
    mod.MODE[0] = mode
    mod.M_OUT[0] = m_out
    mod.gemv_tma_sm90(p.x[0] if x is None else x, *p.w[i], p.alpha, "low_first", out,
                      config=cfg, group_size=group)


def check(full):
    n = 0
    C = full.GemvTMAConfig
    for (M, N, K), dt, grp in [((16, 200, 512), torch.bfloat16, None),
                               ((5, 77, 1280), torch.float16, None),
                               ((13, 300, 3072), torch.bfloat16, None),
                               ((16, 130, 768), torch.float16, 32),
                               ((9, 1000, 2048), torch.float16, 32)]:
        op = "w4a16_mm" if grp else "nvfp4_w4a16_mm"
        p = Problem(op, M, N, K, group=grp or 16, dtype=dt)
        ref = p.reference(0)
        xp = padded(p.x[0])
        for mode in MODES:
            for cfg in (None, C(1, 3, 1, 2)):
                check_poisoned(lambda o, mode=mode, p=p, cfg=cfg, grp=grp:
                               run(full, mode, p, 0, o, cfg, grp),
                               ref, torch.float32, f"{mode} {op} {dt} M={M} N={N} K={K} {cfg}")
                n += 1
        check_poisoned(lambda o, p=p, grp=grp, xp=xp, M=M:
                       run(full, "tma", p, 0, o, None, grp, xp, M),
                       ref, torch.float32, f"padded x {op} {dt} M={M} N={N} K={K}")
        n += 1
    print(f"correctness: {n} checks passed", flush=True)


def padded(x):
    """x with zero rows up to the token tile (8, 16 or 32)."""
    nt = 8 if x.shape[0] <= 8 else (16 if x.shape[0] <= 16 else 32)
    out = torch.zeros((nt, x.shape[1]), dtype=x.dtype, device=x.device)
    out[:x.shape[0]] = x
    return out


def timed(fns, rows, **key):
    got = rounds(fns, 3)
    line = " ".join(f"{k}={v}" for k, v in key.items()) + ":"
    for k, v in got.items():
        med = sorted(v)[1]
        rows.append(dict(key, variant=k, rounds_us=v, median_us=med))
        line += f" {k} {med:.2f}"
    print(line, flush=True)


def graph(mod, mode, p, outs, grp, x=None, m_out=0):
    return time_graph([lambda i=i: run(mod, mode, p, i, outs[i], None, grp, x, m_out)
                       for i in range(4)])[0]


def main():
    mods = modules()
    check(mods["full"])
    rows = []
    if "--padding" not in sys.argv:
        floors(mods, rows)
    padding(mods["full"], rows)
    save_rows("gemv-tma-cp-async", rows)


def floors(mods, rows):
    # 1. where the stream floor comes from, and cp.async against TMA for the codes
    for op, M, N, K, grp in [("nvfp4_w4a16_mm", 16, 18432, 3072, None),
                             ("nvfp4_w4a16_mm", 4, 18432, 3072, None),
                             ("nvfp4_w4a16_mm", 16, 8192, 8192, None),
                             ("w4a16_mm", 16, 18432, 3072, 32)]:
        dt = torch.float16 if grp else torch.bfloat16
        p = Problem(op, M, N, K, group=grp or 16, dtype=dt, copies=4)
        outs = [torch.empty((M, N), dtype=dt, device="cuda") for _ in range(4)]
        fns = {f"{name}/{mode}": (lambda m=mods[name], mode=mode, p=p, outs=outs, grp=grp:
                                  graph(m, mode, p, outs, grp))
               for name in ("full", "stream") for mode in MODES}
        if not grp:  # (the group-scale form's byte count keeps x: without x it would hang)
            fns |= {f"{name}/tma": (lambda m=mods[name], p=p, outs=outs, grp=grp:
                                    graph(m, "tma", p, outs, grp))
                    for name in ("stream_x_off", "stream_w_only")}
        timed(fns, rows, op=op, M=M, N=N, K=K, group=grp, dtype=str(dt))


def padding(full, rows):
    """x boxes that run past x's rows (zero-filled by TMA) against x padded to the token tile
    (a box of x's own rows is not possible at 9-15 tokens: Gluon wants power-of-2 boxes)."""
    for op, M, grp in [("nvfp4_w4a16_mm", 4, None), ("nvfp4_w4a16_mm", 9, None),
                       ("nvfp4_w4a16_mm", 12, None), ("w4a16_mm", 9, 32), ("w4a16_mm", 12, 32),
                       ("w4a16_mm", 16, 32)]:
        N, K = 18432, 3072
        dt = torch.float16 if grp else torch.bfloat16
        p = Problem(op, M, N, K, group=grp or 16, dtype=dt, copies=4)
        outs = [torch.empty((M, N), dtype=dt, device="cuda") for _ in range(4)]
        xp = padded(p.x[0])
        fns = {"raw_x": lambda p=p, outs=outs, grp=grp: graph(full, "tma", p, outs, grp),
               "padded_x": lambda p=p, outs=outs, grp=grp, xp=xp, M=M:
               graph(full, "tma", p, outs, grp, xp, M)}
        timed(fns, rows, op=op, M=M, N=N, K=K, group=grp, dtype=str(dt), section="padding")


if __name__ == "__main__":
    main()
