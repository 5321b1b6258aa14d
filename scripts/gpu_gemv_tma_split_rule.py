# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The TMA GEMV's split rules with and without session 38's changes, at every (shape, tokens)
where the two pick different splits, on whatever card runs it:
- NVFP4 weights (default): the rebalancing (``fp4_gemv_tma_sm90.SPLIT_REBALANCE``: take the
  split that fills the SMs most evenly where it cuts the busiest SM's chunks by 15% or more);
- ``--grouped`` (groups of 32, fp16 x): at 9-32 tokens, split up to 5 ways until a wave of CTAs
  is in flight, against the old fixed split 2;
- ``--long-k`` (session 41, NVFP4 weights): the rebalancing with a one-CTA-an-SM grid counted
  1.25 times, and up to 8 splits of 2 chunks or more where the best of 1-5 is still such a grid,
  against session 38's (the two constants set back), at 4-32 tokens of the shapes where they differ
  (``LONG_K_SHAPES``), with bf16 x through the op's launch (fair-share padding) and fp16 x as
  the W4A4 layer's 16-bit-x route launches it (no padding); ``--long-k --w4a4``: the public
  ``nvfp4_mm`` at 17-32 tokens of the shapes whose weights take its pre-pass + TMA GEMV route
  (x dequantised to fp16, then this kernel unpadded behind the pre-pass's late trigger).

Each point: both configs checked against the fp32 oracle with a NaN-poisoned output (x's dtype
out), then CUDA-graph medians over 4 weight copies in 3 rotating rounds, through the launcher
as the ops call it. Usage on an sm_90 machine:
``python scripts/gpu_gemv_tma_split_rule.py [--grouped | --long-k] [--part=i/n]`` (JSON to
$OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts import gpu_decode  # noqa: E402
from scripts.gpu_decode import Problem  # noqa: E402

SHAPES = [(18432, 3072), (5120, 5120), (6144, 4096), (10240, 8192), (5120, 27648),
          (2048, 2048), (1024, 4096), (28672, 4096), (14336, 4096), (8192, 8192), (4096, 4096),
          (3072, 3072), (8192, 3072)]
TOKENS = (4, 8, 9, 12, 16, 24, 32)
GROUP = 32 if "--grouped" in sys.argv else None
LONG_K = "--long-k" in sys.argv
# shapes whose split the session-41 constants change: the long-K sweep's (gpu_gemv_tma_long_k)
# and ones it did not see
LONG_K_SHAPES = [(4096, 14336), (4096, 11008), (3584, 18944), (5120, 27648), (5120, 13824),
                 (2048, 8192), (1024, 4096), (3072, 3072), (4096, 4096), (1024, 3072),
                 (4096, 12288), (3072, 8192), (4608, 3584), (3584, 3584), (2560, 2560),
                 (2048, 5632), (512, 4096), (4096, 28672), (3072, 9216), (2048, 11008)]
LONG_K_TOKENS = (4, 8, 12, 16, 24, 32)
SESSION_38 = {"LONE_CTA_PENALTY": 1.0, "LONE_MAX_SPLIT": 5}


def tma_constants(values):
    """``fp4_gemv_tma_sm90``'s constants set to ``values`` inside the block."""
    return gpu_decode.module_constants(T, values, [T.choose_config])


def session38_config(M, N, K):
    """The NVFP4 split rule as session 38 left it (the lone-CTA constants set back)."""
    with tma_constants(SESSION_38):
        return T.choose_config(M, N, K)


def rules(M, N, K):
    new = T.choose_config(M, N, K, GROUP)
    if LONG_K:
        return session38_config(M, N, K), new
    if GROUP is not None:  # the rule before session 38: split 2 from the 16-token tile
        old = new if M <= 8 else T.GemvTMAConfig(1, 2, min(2, K // T.KCHUNK),
                                                 2 if M > 16 else 1)
        return old, new
    with tma_constants({"SPLIT_REBALANCE": 0.0}):
        old = T.choose_config(M, N, K)
    return old, new


def w4a4_route():
    """``--long-k --w4a4``: the op through its pre-pass + TMA GEMV route, both split rules."""
    import fp4mm
    from fp4mm.ops import dispatch

    path = gpu_decode.result_path("gemv-tma-split-rule-long-k-w4a4")
    rows = []
    for N, K in LONG_K_SHAPES:
        for M in (17, 24, 32):
            old, new = rules(M, N, K)
            if old == new or N * K < dispatch.GEMV_W4A4_TMA_MIN_WEIGHT:
                continue
            p = Problem("nvfp4_mm", M, N, K, copies=4)
            ref = p.reference(0)
            out = torch.empty((M, N), dtype=torch.float16, device="cuda")

            def run(session38, i, o):
                with tma_constants(SESSION_38 if session38 else {}):
                    fp4mm.nvfp4_mm(*p.x, *p.w[i], p.alpha, out=o)

            times, med = gpu_decode.checked_rounds({"old": True, "new": False}, run, out, ref,
                                                   f"w4a4 {N}x{K} M={M}")
            rows.append(dict(N=N, K=K, M=M, op="nvfp4_mm", old_split=old.split_k,
                             new_split=new.split_k, rounds_us=times, median_us=med,
                             speedup=med["old"] / med["new"]))
            print(f"w4a4 {N:6d}x{K:5d} M={M:2d} split {old.split_k} -> {new.split_k}: "
                  f"{med['old']:6.2f} -> {med['new']:6.2f} us (x{med['old'] / med['new']:.3f})",
                  flush=True)
            gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


def main():
    if LONG_K and "--w4a4" in sys.argv:
        return w4a4_route()
    kind = "-grouped" if GROUP else "-long-k" if LONG_K else ""
    part = next((a.split("=")[1] for a in sys.argv if a.startswith("--part=")), "0/1")
    i, n = (int(v) for v in part.split("/"))
    path = gpu_decode.result_path(f"gemv-tma-split-rule{kind}-part{i}")
    rows = []
    shapes, tokens = (LONG_K_SHAPES, LONG_K_TOKENS) if LONG_K else (SHAPES, TOKENS)
    # (x dtype, fair-share padding): the op's launch; with --long-k also the layer route's
    launches = ([(torch.bfloat16, True), (torch.float16, False)] if LONG_K
                else [(torch.bfloat16 if GROUP is None else torch.float16, True)])
    for N, K in shapes[i::n]:
        for M in tokens:
            old, new = rules(M, N, K)
            if old == new:
                continue
            for dtype, fair in launches:
                if GROUP is None:
                    p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dtype, copies=4)
                else:
                    p = Problem("w4a16_mm", M, N, K, group=GROUP, dtype=dtype, copies=4)
                alpha = 1.0 if GROUP else p.alpha
                out = torch.empty((M, N), dtype=p.x[0].dtype, device="cuda")
                ref = p.reference(0)
                cfgs = {"old": old, "new": new}

                def run(cfg, i, o):
                    T.gemv_tma_sm90(p.x[0], *p.w[i], alpha, "low_first", o, config=cfg,
                                    group_size=GROUP, fair_share=fair)

                times, med = gpu_decode.checked_rounds(cfgs, run, out, ref,
                                                       f"{N}x{K} M={M} {dtype} fair={fair}")
                rows.append(dict(N=N, K=K, M=M, group=GROUP, x=str(dtype), fair_share=fair,
                                 old_split=old.split_k, new_split=new.split_k,
                                 rounds_us=times, median_us=med,
                                 speedup=med["old"] / med["new"]))
                print(f"{N:6d}x{K:5d} M={M:2d} {str(dtype)[6:]:8s} fair={fair:d} split "
                      f"{old.split_k} -> {new.split_k}: {med['old']:6.2f} -> {med['new']:6.2f}"
                      f" us (x{med['old'] / med['new']:.3f})", flush=True)
                gpu_decode.save_rows(None, rows, path=path, quiet=True)
    print("wrote", path)


if __name__ == "__main__":
    main()
