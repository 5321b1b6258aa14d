"""Per-unit timeline of the W4A4 Gluon GEMM (H100): when each work unit starts, waits for its
first stage, runs its K loop and finishes its epilogue, from ``%globaltimer`` stamps.

Usage: ``python scripts/gpu_gemm_unit_timeline.py``. It copies ``fp4_gemm_sm90.py`` to a
temporary module with the stamps patched in (exact-text replacements: it stops with an
AssertionError when the kernel source has moved on; adjust the anchors below), runs the GEMM on
fp16 x with prepacked weights for a few shapes and configs, and prints per round (units
``r*G .. (r+1)*G - 1`` of a grid of G CTAs): start, first-stage wait, us per K step, epilogue
(incl. the split-K pair sum), end. Session 12 found with it that split units' epilogues cost
4-8 us while their steps ran at the normal rate (docs/perf-log.md)."""

import os
import statistics as st
import sys

import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from gpu_decode import NOW_SRC, patched_module  # noqa: E402
from gpu_gluon import gen  # noqa: E402

from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402

PATCHES = [  # (anchor, replacement): each anchor must occur exactly once
    ("@gluon.jit\ndef _producer(", NOW_SRC + "@gluon.jit\ndef _producer("),
    ("num_units, num_full, split, k_per_split, num_m_tiles, k_tiles, fixup,\n"
     "              BN: gl.constexpr, STAGES: gl.constexpr, DTYPE: gl.constexpr):",
     "num_units, num_full, split, k_per_split, num_m_tiles, k_tiles, fixup, probe_ptr,\n"
     "              BN: gl.constexpr, STAGES: gl.constexpr, DTYPE: gl.constexpr):"),
    ("        acc = gl.zeros([_BM, BN], gl.float32, mma)\n        for j in range(k0, k1, 2):",
     "        t0 = _now()\n        t1 = t0\n"
     "        acc = gl.zeros([_BM, BN], gl.float32, mma)\n        for j in range(k0, k1, 2):"),
    ("            mbarrier.wait(ready.index(s0), (it // STAGES) & 1)\n            a_e =",
     "            mbarrier.wait(ready.index(s0), (it // STAGES) & 1)\n            if j == k0:\n"
     "                t1 = _now()\n            a_e ="),
    ("        mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES))\n        # one tile-store",
     "        mbarrier.arrive(empty.index((it + STAGES - 1) % STAGES))\n        t2 = _now()\n"
     "        # one tile-store"),
    ("            _store_tile(acc, y_desc, y_smem, alpha, pid_m, pid_n, BN)\n    tma.store_wait(0)",
     "            _store_tile(acc, y_desc, y_smem, alpha, pid_m, pid_n, BN)\n        t3 = _now()\n"
     "        base = probe_ptr + u * 6\n        gl.store(base, t0)\n"
     "        gl.store(base + 1, t1)\n        gl.store(base + 2, t2)\n"
     "        gl.store(base + 3, t3)\n        gl.store(base + 4, (k1 - k0).to(gl.int64))\n"
     "        gl.store(base + 5, slot.to(gl.int64))\n"
     "    tma.store_wait(0)"),
    ("num_m_tiles, k_tiles, fixup,\n                          BN: gl.constexpr,",
     "num_m_tiles, k_tiles, fixup, probe_ptr,\n                          BN: gl.constexpr,"),
    ("                          fixup, BN, STAGES, DTYPE)),",
     "                          fixup, probe_ptr, BN, STAGES, DTYPE)),"),
    ("        triton.cdiv(M, config.BN), sc.k_tiles, int(fixup),",
     "        triton.cdiv(M, config.BN), sc.k_tiles, int(fixup), PROBE[0],"),
    ("def gemm_sm90_dense_x(", "PROBE = [None]\n\n\ndef gemm_sm90_dense_x("),
]


def timeline_module():
    src = open(os.path.join(HERE, "..", "fp4mm", "kernels", "fp4_gemm_sm90.py")).read()
    return patched_module("fp4_gemm_sm90_timeline", src, PATCHES)


def main():
    g = timeline_module()
    C = g.SM90Config
    cases = [((128, 3072, 3072), C(64, 6, SPLIT=2)), ((128, 3072, 3072), C(128, 6, SPLIT=4)),
             ((1024, 3072, 3072), C(256, 4)), ((1024, 3072, 3072), C(256, 4, SPLIT=2)),
             ((2048, 3072, 3072), C(256, 4, SPLIT=2)), ((1024, 18432, 3072), C(256, 4, SPLIT=2))]
    for (M, N, K), cfg in cases:
        xq, xs, wq, ws = gen(M, N, K, seed=1)
        xd = dequant_nvfp4(xq, xs, order="high_first")
        packs = [g.prepack_weight_sm90(wq.clone(), ws.clone(), "high_first") for _ in range(8)]
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        sc = g.schedule(M, N, K, cfg, g.sm_count("cuda"))
        flags = torch.zeros(sc.num_tiles, dtype=torch.int32, device="cuda")
        probe = torch.zeros((sc.num_units, 6), dtype=torch.int64, device="cuda")
        g.PROBE[0] = probe
        for r in range(6):  # warm-up; the last call's stamps are read
            g.gemm_sm90_dense_x(xd, packs[r % len(packs)], 1 / 64, out, config=cfg, flags=flags)
        torch.cuda.synchronize()
        p = probe.cpu().tolist()
        t_first = min(r[0] for r in p)
        grid = min(sc.num_units, g.sm_count("cuda")) if cfg.PERSISTENT else sc.num_units
        span = (max(r[3] for r in p) - t_first) / 1e3
        print(f"== {M}x{N}x{K} {cfg} units {sc.num_units} span {span:.1f} us", flush=True)
        rounds: dict = {}
        for u, r in enumerate(p):
            rounds.setdefault(u // grid, []).append(r)
        for k, rs in sorted(rounds.items()):
            start = [(r[0] - t_first) / 1e3 for r in rs]
            wait = [(r[1] - r[0]) / 1e3 for r in rs]
            step = [(r[2] - r[1]) / 1e3 / max(r[4], 1) for r in rs]
            epi = [(r[3] - r[2]) / 1e3 for r in rs]
            end = [(r[3] - t_first) / 1e3 for r in rs]
            print(f"  round {k}: {len(rs)} units of {st.median([r[4] for r in rs])} K tiles; "
                  f"start {min(start):.1f}-{max(start):.1f}; first stage after "
                  f"{st.median(wait):.2f} (max {max(wait):.2f}); {st.median(step):.3f} us/step; "
                  f"epilogue {st.median(epi):.2f} (max {max(epi):.2f}); "
                  f"end {min(end):.1f}-{max(end):.1f} us", flush=True)


if __name__ == "__main__":
    main()
