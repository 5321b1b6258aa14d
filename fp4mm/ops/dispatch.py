"""Which kernel serves a matmul: the decode GEMV (``fp4mm.kernels.fp4_gemv``, and on Hopper up to
``GEMV_SM90_MAX_M`` the Gluon ``fp4mm.kernels.fp4_gemv_sm90``, or from ``GEMV_SM90_TMA_MIN_M``
tokens of 16-bit x ``fp4_gemv_tma_sm90``, which also takes W4A4 from ``GEMV_W4A4_TMA_MIN_M``
tokens on large weights, x dequantised first) for small M,
the prefill GEMM (``fp4mm.kernels.fp4_gemm`` / ``fp4_gemm_sm90``) above it.

The thresholds are measured, not guessed: ``scripts/gpu_decode.py`` times both kernels (and
cuBLAS bf16) on an M sweep at N = 18432, K = 3072 in one run on one card, and the table below
records the card, the file and the numbers that placed each threshold. Rule: the dispatched kernel
must never be more than 5% slower than the best single kernel at any M of the sweep.

Every threshold below was placed on an H100. Session 36 re-ran the W4A4 M sweep on an H200 (the
same compute, 1.4x the memory bandwidth; ``bench/results/20261128-085327_sweep.json``): the
dispatched raw-weight call was within -0.5% to +1.1% of the best forced kernel up to 16 tokens,
+0.3% at 64, and faster than every forced kernel at 32 and from 128. Session 39 checked every op
there, raw and prepacked, on three weight shapes (``scripts/gpu_dispatch_check.py``): within 5%
of the better of GEMV and GEMM at 304 of 312 points; the exception, prepacked W4A4 at 17-32
tokens, moved (``PREPACKED_SM90_GEMV_MAX_M``).

Override (tests, benchmarks, debugging): ``FP4MM_KERNEL=gemm|gemv|auto`` in the environment, or
the ``override`` argument of :func:`select_kernel` (it wins over the environment).
"""

from __future__ import annotations

import os

import torch

from fp4mm.backend import is_hopper

OPS = ("nvfp4_mm", "w4a16_mm", "nvfp4_w4a16_mm")
KERNELS = ("gemm", "gemv")
ENV_VAR = "FP4MM_KERNEL"

# op -> largest M served by the GEMV. Measured on an NVIDIA H100 80GB HBM3 (SXM), triton 3.6.0,
# 2026-11-26, bench/results/decode-h100-2026-11-26.json (CUDA-graph medians, 4 rotating weight
# copies, N = 18432, K = 3072; best GEMV config vs the GEMM helper's default, in us):
# - nvfp4_mm: M=1 32.7 vs 48.5, M=16 39.7 vs 47.3, M=32 49.6 vs 88.4, M=64 71.8 vs 89.4,
#   M=128 116.5 vs 104.3 (GEMM), M=256 215 vs 134 (GEMM)  -> GEMV up to 64.
# - nvfp4_w4a16_mm (fp16): M=1 29.8 vs 47.6, M=16 37.4 vs 45.2, M=64 59.5 vs 84.2 (first run)
#   -> GEMV up to 64 (M=128 not measured for this op; the W4A4 crossover is used).
# - w4a16_mm, group 32: M=1 34.0 vs 38.8, M=16 37.8 vs 38.7, M=64 72.0 vs 66.8 (GEMM) -> 16;
#   group 128: M=16 27.9 vs 39.4, M=64 44.1 vs 69.9 -> 64 (groups >= 64 decode fewer scales).
# GEMV v2 (bench/results/decode-v2-h100-2026-11-26*.json, same card type) only got faster at
# M <= 64 (nvfp4_mm M=16 30.8, M=32 41.8, M=64 52.5 us), so no threshold moves down; M = 128 was
# not re-measured against the GEMM, so none moves up either.
#
# Since then (2026-11-26, same card type, `fp4mm bench --suite sweep --timer read_flush`,
# bench/results/20261126-145444_decode-sweep.json): on Hopper the prefill kernel for NVFP4 weights
# is the Gluon GEMM, which re-lays raw weights out on every call (Triton prepack + host time).
# nvfp4_mm at M=128 with raw weights: GEMV 89.4 us, Gluon 117.7-141.5 us; at M=256: GEMV
# 147.1 us, Gluon 84.1 us. With prepacked weights the Gluon GEMM takes 42.1 us at M=128. So raw
# NVFP4 weights keep the GEMV up to M=128, prepacked ones up to 64 (nvfp4_w4a16_mm shares the
# kernels and is assumed to cross over at the same M). The groupwise GEMM became exact (fp4_gemm
# v4, per-group fp32 scaling) and about 2x slower than the one measured above (prefill 0.32x vs
# 0.62x cuBLAS fp16), so the GEMV's 72.0 us at M=64, group 32, now beats it: group 32 -> 64.
GEMV_MAX_M = {
    "nvfp4_mm": 64,
    "w4a16_mm": 64,
    "nvfp4_w4a16_mm": 64,
}
# Re-measured as GPU time (2026-11-26, same card type, `fp4mm bench --timer graph`, CUDA-graph
# replay: no Python launch cost; bench/results/dispatch/20261126-1626*_sweep-forced-*.json),
# nvfp4_mm with raw weights, GEMV vs Gluon GEMM incl. its per-call re-layout, in us: N = 18432:
# M=64 51.1 vs 70.9, M=96 84.2 vs 66.5, M=128 85.6 vs 66.9; N = 3072: M=64 12.7 vs 23.4, M=128
# 21.4 vs 22.3. The eager crossover of 128 above came from host time (the GEMM path makes more
# Python launches); as GPU time raw weights cross over at 64 too, so the table above holds for raw
# and prepacked weights alike (and for every group size: groups >= 64 measured 64 as well).
# Within the GEMV range, NVFP4 weights on Hopper take the Gluon decode GEMV (fp4_gemv_sm90) up to
# this M, where it beat the plain-Triton GEMV in the same run (H100, CUDA-graph medians, N = 18432,
# K = 3072, bench/results/2026-11-26-gemv_sm90-h100-run4.json, us, Gluon vs Triton): W4A4 M=1
# 19.5 vs 24.3, M=16 24.3 vs 30.6, M=32 33.7 vs 40.5, M=64 57.4 vs 51.6 (Triton); nvfp4_w4a16
# M=1 17.7 vs 23.5, M=16 29.6 vs 29.5 (tie). So 32; M = 33..64 stays on the Triton GEMV
# (until session 17, below).
# w4a16_mm (16-bit group scales, groups 32, 64 and multiples of 128; same card type,
# bench/results/2026-11-26-gemv_sm90-grouped-h100.json, us, Gluon vs Triton): group 32 M=1 21.2
# vs 28.8, M=4 21.2 vs 36.1, M=16 25.7 vs 39.3; group 128 M=1 17.8 vs 24.8. Not measured above
# 16, where 32 tokens spill registers (ptxas): 16. Session 26: groups of 16 join, at up to 2
# tokens (``fp4_gemv_sm90.max_m``: each group an MMA column, 8 a token), against the plain-Triton
# GEMV that served them (bench/results/2026-11-27-gemv-group-cols-verify-h100.json, fp16, us):
# 18432 x 3072 M=1 16.33 vs 28.96, M=2 25.20 vs 58.48; 8192 x 8192 M=1 18.94 vs 34.89, M=2
# 29.10 vs 67.55. From 3 tokens they stay on the Triton GEMV (``choose_kernel`` checks max_m).
# Session 13 measured nvfp4_w4a16_mm at M = 17-32, which had taken the W4A4 limit untested: the
# Gluon GEMV's 32-token tile with 16-bit x is 1.4-1.7x slower than the plain-Triton GEMV there
# (H100, raw weights, CUDA-graph medians through the op with the choice forced, Gluon vs Triton,
# us, bench/results/dispatch/20261126-230516_gemv-17-32.json): bf16 x 18432 x 3072 M=17 53.2 vs
# 39.7, M=32 64.3 vs 38.8; 8192 x 8192 M=32 75.4 vs 43.5; fp16 x M=24 57.8 vs 37.1; at M=16 they
# tie (27.6 vs 27.8). nvfp4_mm stays at 32 (M=32: 30.7 vs 40.1). -> 16 for nvfp4_w4a16_mm.
# Session 15: nvfp4_w4a16_mm at M >= 9 takes the TMA-fed Gluon GEMV (fp4_gemv_tma_sm90: weights
# and x copied by TMA into a shared-memory ring). H100 80GB HBM3, CUDA-graph medians, raw
# weights, bench/results/2026-11-27-gemv-tma-sweep-run1-h100.json (TMA at its best config vs the
# register ring at M <= 16 / the plain-Triton GEMV above, us, bf16 and fp16 x):
# - 18432 x 3072: M=9 22.0-23.1 vs 26.5-27.0, M=16 21.9-22.2 vs 27.7-28.1, M=24 31.1-31.5 vs
#   36.7-41.2, M=32 30.3-32.0 vs 38.3-39.4;
# - 8192 x 8192: M=16 22.0-22.2 vs 32.6-33.4, M=32 34.7-36.4 vs 41.9-43.7;
# - 3072 x 3072: M=16 6.8-7.1 vs 8.4-9.1, M=32 8.4-8.7 vs 9.2-9.3
# -> 32 for this op. Where the TMA GEMV does not apply (K % 256, unaligned operands)
# M <= GEMV_SM90_RING_MAX_M_16BIT_X keeps the register ring and above it the plain-Triton GEMV
# serves (session 13's numbers above).
# Session 17: W4A4 at 33-64 tokens takes the register ring with x held one step ahead
# (fp4_gemv_sm90 ``x_ahead``: two row tiles at 64 tokens without spills) on wide weights. H100
# 80GB HBM3, CUDA-graph medians, bench/results/2026-11-27-gemv-x-ahead-tune-h100.json (ring at
# the heuristic's split vs the plain-Triton GEMV, us): 18432 x 3072 M=33 41.5 vs 48.4, M=64 47.0
# vs 52.0; 8192 x 8192 M=33 41.7 vs 52.7, M=64 44.5 vs 55.0. At N = 3072 the Triton GEMV keeps
# it (3072 x 3072 M=33-64 11.5-12.5 vs the ring's best split 13.3-14.3; 3072 x 12288 a tie,
# 31.4-32.2 vs 31.7-32.9): too few row tiles to fill the card. So above 32 tokens the ring
# needs N >= GEMV_SM90_MIN_N_ABOVE_32. Below it (...-gemv-x-ahead-verify-narrow-h100.json, M=33 /
# 64, ring vs Triton GEMV, us): 4096 x 4096 21.6 / 23.2 vs 17.3 / 20.0, 4096 x 14336 63.4 / 66.7
# vs 47.1 / 49.9, 5120 x 5120 27.1 / 28.0 vs 26.0 / 27.5, 6144 x 4096 a tie, 7168 x 2048 13.9 /
# 15.2 vs 16.8 / 18.4: the ring wants about 800 warps in flight (N / 32 x its split of 4), so
# the cut stays at 8192 (7168 would win on this shape; 4096 rows lose by up to 35%). Checked on five
# more shapes with N >= 8192 (...-gemv-x-ahead-verify-h100.json, ring vs Triton GEMV, M=33 / 64,
# us): 14336 x 4096 43.5 / 46.6 vs 49.7 / 53.4; 8192 x 28672 131.3 / 133.6 vs 167.3 / 174.3;
# 28672 x 8192 143.6 / 151.5 vs 153.0 / 161.3; 8192 x 3072 19.6 / 20.7 vs 23.8 / 25.7;
# 10240 x 8192 a tie (63.5 / 67.9 vs 64.0 / 66.6, the ring 1.9% slower at M=64).
# Session 27: w4a16_mm with groups of 32 at 17-32 tokens takes the TMA-fed GEMV with group
# scales (one MMA chain per group, as the register ring's grouped form; two warps share each x
# stage), where it applies (K % 256 == 0, aligned operands); else the plain-Triton GEMV, as
# before. H100, raw weights, fp16 x, CUDA-graph medians, 3 rotating rounds (TMA vs the
# plain-Triton GEMV, us; bench/results/2026-11-27-gemv-tma-grouped-rule-h100.json):
# - group 32, M = 17 / 24 / 32: 18432 x 3072 33.3 / 33.4 / 34.6 vs 43.8 / 45.2 / 47.4; 8192 x
#   8192 31.7 / 32.0 / 32.1 vs 48.6 / 49.6 / 51.0; 4096 x 4096 15.5 / 16.3 / 17.2 vs 17.4 /
#   17.9 / 18.3 (faster at all nine);
# - groups of 64 and 128 (the Triton GEMV is quicker on them): 18432 x 3072 g64 30.4-32.1 vs
#   29.3-31.4 (slower), g128 29.7-30.7 vs 31.2-32.3; 8192 x 8192 30.1-31.5 vs 33.1-35.9; 4096 x
#   4096 13.5-16.3 vs 11.9-13.4 (slower): mixed, so they stay on the Triton GEMV.
# Up to 16 tokens the register ring stays (...-gemv-tma-grouped-h100.json, group 32: 18432 x
# 3072 M=16 24.1 vs TMA 25.9, M=9 22.8 vs 25.2; it loses at 8192 x 8192, 26.2 vs 29.3, and
# 28672 x 4096, 43.1 vs 56.6, where its config is not tuned).
GEMV_SM90_MAX_M = {
    "nvfp4_mm": 64,
    "w4a16_mm": 32,
    "nvfp4_w4a16_mm": 32,
}
GEMV_SM90_MIN_N_ABOVE_32 = 8192
# Session 28: the TMA GEMV reads its stages without bank conflicts and runs one row tile per
# warp (fp4_gemv_tma_sm90.choose_config), and now takes nvfp4_w4a16_mm from 4 tokens. H100,
# raw weights, bf16 x, 3 rotating rounds (TMA vs the register ring, us;
# bench/results/2026-11-27-tma-dispatch-h100.json): 18432 x 3072 M=1 17.56 vs 16.48, M=2 18.01
# vs 17.28, M=4 17.77 vs 17.69, M=8 17.55 vs 18.66; 8192 x 8192 M=1 19.12 vs 18.34, M=2 19.04
# vs 19.42, M=4 19.32 vs 20.58, M=8 19.52 vs 23.90; 4096 x 4096 M=1-8 7.04-7.79 vs 8.10-9.75.
# So 4 (at M = 1-2 the ring is 4-7% faster on the wide shapes).
GEMV_SM90_TMA_MIN_M = 4
GEMV_SM90_RING_MAX_M_16BIT_X = 16
GEMV_SM90_RING_MAX_M_GROUPED = 16
# Session 28: the group-scale form reads the swizzled stages too (without bank conflicts), and
# with one row tile (one warp per CTA up to 16 tokens, two above) it beats the register ring at
# 16 tokens. H100, group 32, 3 rotating rounds (TMA at the session-28 rule / the ring / the
# session-27 TMA kernel, fp16 x then bf16 x, us; bench/results/2026-11-27-gemv-tma-swizzle-
# grouped-rule-h100.json): 18432 x 3072 M=16 20.64 / 24.14 / 29.26, 21.65 / 24.94 / 28.49;
# 8192 x 8192 M=16 21.43 / 29.98, 22.38 / 29.85; 4096 x 4096 M=16 10.10 / 12.75, 9.71 / 11.97;
# 28672 x 4096 M=16 34.79 / 56.02, 37.11 / 57.95; M=24-32 25.3-33.0 against 33.1-35.8 before.
# But at 9 and 12 tokens of 18432 x 3072 the ring is as fast or faster (M=9 22.72 vs 27.42 fp16,
# 24.05 vs 27.86 bf16; M=12 23.46 vs 23.65, 24.06 vs 25.84; not understood: the same tile at 16
# tokens takes 20.64), so the TMA GEMV took groups of 32 from 16 tokens.
# Session 29 found why: x's 16-row box ran past x's 9-12 rows, and a zero-filled box is slow in
# proportion to the rows past the end (x padded to 16 rows: M=9 21.11 vs 28.38 us). With x in
# boxes that stay inside x's rows (fp4_gemv_tma_sm90.x_boxes) the TMA GEMV beats the ring at
# every 9-15 tokens measured, fp16 x, us (TMA / ring; bench/results/2026-11-27-gemv-tma-x-boxes-
# h100.json, 3 rotating rounds): 18432 x 3072 M=9 19.72 / 23.48, M=10 19.32 / 23.15, M=11
# 20.30 / 23.63, M=13 22.80 / 23.84, M=14 22.70 / 23.88, M=15 22.42 / 24.30; 8192 x 8192 M=9
# 21.49 / 27.68, M=11 21.07 / 27.84, M=13 21.48 / 28.19, M=14 21.02 / 28.47; bf16 x and 4096 x
# 4096 / 28672 x 4096 the same way (the -2row file beside it) -> 9 (groups of 64 and 128 then
# kept the ring up to 16 tokens).
# Session 30: with those boxes the TMA GEMV beats the ring at 5-8 tokens too, where the ring's
# groups of 32 no longer fit its MMA columns (fp4_gemv_sm90.group_columns) and it runs one chain
# per group. H100, raw weights, 3 rotating rounds (TMA at its rule / the ring, us, fp16 then bf16
# x; bench/results/2026-11-27-w4a16-grouped-small-dispatch{,-verify}-h100.json): 18432 x 3072
# M=5 19.04 / 19.98, 20.38 / 21.43; M=6 19.23 / 20.50; M=8 19.09 / 20.77, 20.17 / 22.03;
# 28672 x 4096 M=5 31.64 / 44.25; 14336 x 4096 M=5 17.85 / 21.64; 8192 x 8192 M=6 19.44 / 23.73;
# 4096 x 14336, 3072 x 3072 and 4096 x 4096 4-25% faster at 5-8. The exception: 5120 x 5120 at
# M=5-6 (12.39 / 11.92, bf16 M=6 12.96 / 12.51), within 4%. At 2-4 tokens the ring's MMA columns
# win on the widest weights (18432 x 3072 M=4 17.70 / 19.12 fp16, M=2 16.68 / 19.26), though
# not at 8192 x 8192 from 3 tokens or at 4096 x 4096 -> 5.
# Groups of 64 and 128 (session 30; the same probe with --wide-groups and --wide-group-edges,
# bench/results/2026-11-27-w4a16-grouped-small-dispatch-wide-groups-h100.json and
# ...-w4a16-wide-group-edges-h100.json, 3 rotating rounds, TMA at its rule / the other kernel, us,
# fp16 x): against the ring at 2-16 tokens the TMA GEMV wins everywhere for groups of 128 (18432 x
# 3072 M=2 16.30 / 21.93, M=16 20.82 / 30.06; 28672 x 4096 M=16 31.61 / 53.94: the ring runs one
# chain per group, its columns form stops below 128) and for groups of 64 from 6 tokens (18432 x
# 3072 M=6 17.48 / 18.55, M=12 18.71 / 22.76; at 2-4 the ring's columns win there, M=4 16.77 /
# 16.44, bf16 18.44 / 17.34; 5 tokens not measured, taken with 6 as for groups of 32). At one token
# the ring keeps both (a one-token x is an 8-row box, 7 rows zero-filled: g64 8192 x 8192 22.00 /
# 17.68; g128 mixed, 21.53 / 20.04 there, 16.35 / 17.24 at 18432 x 3072). At 17-32 tokens on raw
# weights it beats the plain-Triton GEMV that served them (g64 18432 x 3072 M=17 22.38 / 29.66, M=32
# 23.20 / 31.22; g128 28672 x 4096 M=24 39.64 / 52.79; 4096 x 4096 M=32 11.60 / 13.48). Groups of
# 256 and 512 the same way (...-w4a16-big-groups-h100.json, fp16 x): 18432 x 3072 g256 M=2 15.80 /
# 21.36, M=16 20.24 / 30.13, M=32 21.70 / 32.84 (Triton GEMV); g512 M=8 16.32 / 23.42; 8192 x 8192
# g256 M=2 16.96 / 19.66 but M=1 21.03 / 19.55; g384 (...-w4a16-big-groups-384-h100.json, after the
# kernel read the second step's group right for odd multiples of 128) 18432 x 3072 M=2 16.41 /
# 22.04, M=16 19.82 / 31.03, 6144 x 6144 M=2 12.80 / 13.92, M=1 15.06 / 13.93 -> every multiple of
# 128 from 2 tokens.
# Session 31: one token as a 2-row x box (fp4_gemv_tma_sm90.x_boxes; one row zero-filled, not
# seven) against the ring, 3 rotating rounds, fp16 / bf16 x, us (TMA / ring; bench/results/
# 2026-11-27-w4a16-one-token-box-h100.json): multiples of 128 win at all four shapes in both
# dtypes: g128 18432 x 3072 15.91 / 16.65, 17.20 / 17.78; 8192 x 8192 17.24 / 20.30, 17.88 /
# 20.48; 4096 x 4096 6.98 / 8.42; 28672 x 4096 27.94 / 29.82, 31.66 / 32.48; g256 16.00 / 17.29
# ... 26.61 / 30.22. Groups of 32 and 64 lose on the widest weights (g32 18432 x 3072 17.60 /
# 16.11, 28672 x 4096 bf16 34.90 / 31.42; g64 17.18 / 16.03) and stay on the ring's columns ->
# every multiple of 128 from 1 token.
# Group size -> the fewest tokens from which the TMA GEMV serves it (up to its MAX_M, 32); the
# 128 entry stands for every multiple of 128 (tma_min_m_grouped).
GEMV_SM90_TMA_MIN_M_GROUPED = {32: 5, 64: 5, 128: 1}


def tma_min_m_grouped(group_size: int | None) -> int | None:
    """The fewest tokens from which the TMA-fed GEMV serves 16-bit group scales of
    ``group_size`` (``GEMV_SM90_TMA_MIN_M_GROUPED``); None where it never does."""
    if group_size is None or group_size <= 0:
        return None
    return GEMV_SM90_TMA_MIN_M_GROUPED.get(128 if group_size % 128 == 0 else group_size)


# W4A4 at 17-32 tokens on large raw weights: x dequantised to fp16 by the GEMM's pre-pass
# (fp4mm.kernels.dequant_nvfp4, exact), then the TMA GEMV on 16-bit x, which streams the weights
# faster than the W4A4 register ring there. Session 31, H100, 3 rotating rounds, the public op
# (the ring) / pre-pass + TMA GEMV, us (bench/results/2026-11-27-w4a4-prepass-tma-rule-h100.json):
# 18432 x 3072 M=17 26.55 / 25.51, M=24 26.93 / 23.71, M=32 27.88 / 23.83; 14336 x 4096 M=17
# 27.20 / 25.48, M=32 29.06 / 24.96; 28672 x 4096 M=17 47.37 / 39.58, M=32 49.09 / 37.44; 12288 x
# 4096 M=17 21.83 / 21.19, M=32 22.96 / 20.12; 8192 x 8192 M=17 26.68 / 24.93, M=32 26.96 / 25.18;
# 16384 x 2048 M=17 17.02 / 16.82, M=32 18.43 / 16.77 (faster at all 30 points, M = 17, 20, 24,
# 28, 32: 1-24%). The pre-pass costs about 3 us (...-w4a4-prepass-tma-parts-h100.json: the TMA
# GEMV alone on x decoded beforehand 20.04 at M=16 of 18432 x 3072, the ring 20.91), so 16
# tokens stay on the ring; the smallest weight measured, 16384 x 2048 (2^25 elements), is the
# closest (1% at M=17-20): the route needs that many. Those runs launched the pre-pass without
# PDL: launched with PDL as the GEMM launches it (the next kernel may launch at its start), the
# TMA GEMV behind it cost 11-44 us more at K = 8192-14336 (8192 x 8192 M=16 30.99 vs 23.06
# plain; 4096 x 14336 66.62 vs 25.24; ...-w4a4-prepass-tma-pdl-h100.json; the cause, found in
# session 32: the GEMV's early CTAs pile onto the SMs the pre-pass leaves free, see
# quantiser_pdl_late; the GEMM behind it gains 1-19 us from PDL,
# ...-w4a4-gemm-prepass-pdl-h100.json). With PDL but the
# next launch allowed only after the pre-pass's stores (dequant_nvfp4's pdl_late), it is 1.0-1.4
# us faster than plain at 6 of 8 points and 0.2 slower at one (M=16 / 24: 18432 x 3072 20.68 /
# 24.64 vs 22.02 / 24.44; 8192 x 8192 21.86 / 24.18 vs 23.06 / 25.17; 4096 x 14336 24.33 /
# 25.81 vs 25.59 / 26.99; 14336 x 4096 20.66 / 23.16 vs 21.96 / 24.32; ...-pdl-late-h100.json),
# so the route launches it that way (session 32: the early trigger with the pre-pass's
# carve-out at the maximum spreads the GEMV again, but against this it was at most 0.47 us
# faster and up to 1.6 slower, 2026-11-28-pdl-carve-route-h100.json). Prepacked weights of
# PREPACKED_GEMM_MIN_WEIGHT or more took the GEMM from 17 tokens (18432 x 3072 M=32 24.12 us,
# about the same); from session 39 the GEMV keeps them to 32 where this route runs (H200: 8192 x
# 8192 1.15-1.18x faster, PREPACKED_SM90_GEMV_MAX_M).
GEMV_W4A4_TMA_MIN_M = 17
GEMV_W4A4_TMA_MIN_WEIGHT = 2**25


# W4A4 tokens served by the E4M3-wgmma GEMV (fp4_gemv_fp8_sm90; K % 256 == 0), the register ring
# above. H100, CUDA-graph medians over weight copies that fill 3x the L2, each kernel's best split
# against the ring's heuristic in the same run, us. Session 21, one token
# (bench/results/2026-11-27-gemv-fp8-split-h100.json): 18432 x 3072 15.7 vs 18.0, 8192 x 8192
# 17.8 vs 20.2, 14336 x 4096 15.6 vs 19.6, 28672 x 4096 28.7 vs 32.1, 3072 x 3072 5.4 vs 7.2
# (faster at all eight shapes, 10-27%). Session 22, 2-4 tokens as 2 or 4 accumulators of 16
# columns a window (...-gemv-fp8-tokens-h100.json; a session-21 version with 16 block columns per
# token, b230709, was slower than the ring from two tokens): M=2 18432 x 3072 16.5 vs 17.8,
# 8192 x 8192 17.9 vs 20.2; M=4 17.4 vs 18.0, 18.4 vs 20.5, 14336 x 4096 16.5 vs 18.3, 28672 x
# 4096 30.2 vs 31.8, 3072 x 3072 5.6 vs 7.1 (faster at all six shapes for M = 2, 3 and 4).
GEMV_FP8_SM90_MAX_M = 4


# The activation quantiser before a W4A4 matmul lets the matmul launch with PDL. Where the
# matmul is the register ring (fp4_gemv_sm90: W4A4 tokens above GEMV_FP8_SM90_MAX_M and below
# GEMV_W4A4_TMA_MIN_M), it lets it launch only after its stores (``quantize_nvfp4_triton``'s
# ``pdl_late``). Session 32 (scripts/gpu_pdl_timeline.py): CTAs launched at the start of a
# kernel do not start beside its running CTAs, so they pile onto the SMs it left free: the TMA
# GEMV behind the x pre-pass ran 128 CTAs on 23 SMs, 6 on the busiest, 69.6 us against 24.3
# with the late trigger (there the two kernels' shared-memory carve-outs differed: with the
# pre-pass's set to the maximum the GEMV spread again). The ring's grid is about one wave at
# these tokens, so it pays the same way behind the quantiser. NVFP4Linear W4A4, bf16
# x, H100, early / late, us (bench/results/2026-11-28-layer-w4a4-pdl-sweep-h100.json): 14336 ->
# 4096 M=8 28.82 / 25.89, M=12 28.34 / 23.02, M=16 28.74 / 23.38; 12288 -> 4096 M=12 25.00 /
# 20.85; 11008 -> 4096 M=16 20.99 / 20.28; but 8192 -> 8192 M=16 25.26 / 25.49 and 4096 -> 14336
# M=16 23.12 / 23.37 (the late trigger's cost where nothing piles up: 0.1-0.4 us). At 1-4 tokens
# (the E4M3 GEMV) and 24-32 the early launch is as fast or faster at most points, and stays.
# Checked with this rule in place at 5, 6, 8, 12, 16 tokens on the six shapes (rule / forced
# early, ...-layer-w4a4-pdl-rule-h100.json): 14336 -> 4096 M=5 25.76 / 28.68, M=12 22.98 /
# 28.08; 12288 -> 4096 M=5 22.85 / 25.43, M=12 20.46 / 24.49; 11008 -> 4096 0.5-1.2 us faster;
# the worst points 8192 -> 8192 M=12 24.63 / 24.23 and 4096 -> 14336 M=12 23.31 / 22.88. A
# quantiser carve-out of 0%, 25% or 100% did not spread the ring's CTAs (no faster than early).
# NVFP4Linear W4A4 at 9-32 tokens on Hopper: the quantiser writes x's NVFP4 values e2m1 * e4m3 in
# fp16 (exact, one pass, no code bytes), then the 16-bit-x TMA GEMV runs on them
# (fp4mm::nvfp4_linear_w4a4), instead of quantise -> W4A4 kernel (the ring at 5-16 tokens, the x
# pre-pass + TMA GEMV or the ring at 17-32). Session 40, H200, layer forward with the route off /
# on, 4 layer copies, CUDA-graph medians, 3 rotating rounds, every output checked against the
# oracle (scripts/gpu_w4a4_layer_16bit_x_rule.py, bench/results/2026-11-28-w4a4-layer-16bit-x-
# rule-part{0,1}-h200.json; fp16 and bf16 models, static and dynamic scale; speed-up ranges over
# those four): 17-32 tokens faster at all 5 shapes, 3072->18432 1.02-1.05x, 8192->8192
# 1.03-1.05x, 4096->14336 1.02-1.04x, 14336->4096 1.04-1.08x, 4096->4096 1.15-1.44x (where the
# W4A4 op runs the ring behind the quantiser's early trigger); 9-16 tokens 1.01-1.09x at the four
# shapes of K <= 8192 but 0.88-0.91x at 14336->4096, so there only up to W4A4_16BIT_X_SHORT_MAX_K;
# 5-8 tokens 0.94-1.08x (not taken). Quantiser trigger late and no fair-share pad ("late") against
# early with the pad: within 3% either way; early without the pad 0.48-0.91x where the GEMV's CTAs
# pile up behind it. Validated at five shapes it was not placed on (--validate, ...-validate-
# part{0,1}-h200.json): 9-16 tokens 5120->5120 1.10-1.12x, 2048->8192 1.06-1.12x, 8192->10240
# 1.16-1.20x, 8192->28672 1.13-1.15x (28672->8192 not taken); 17-32 tokens 1.26-1.32x,
# 1.05-1.17x, 1.01-1.06x, 0.97-1.01x (17 tokens the worst), 28672->8192 1.00-1.05x.
# Session 41 lifted the K limit: 14336->4096 had lost because the TMA GEMV's split rule gave it
# one CTA an SM (fp4_gemv_tma_sm90.split_load, fixed). With that rule, route forced on / off at
# 9-16 tokens (--long-k, ...-w4a4-layer-16bit-x-long-k-h200.json): 14336->4096 1.05-1.08x,
# 11008->4096 1.08-1.15x, 12288->4096 1.06-1.08x, 18944->3584 1.07-1.10x, 13824->5120
# 1.14-1.19x, 28672->8192 1.05-1.06x.
W4A4_16BIT_X_MIN_M = 9
W4A4_16BIT_X_MAX_M = 32
W4A4_16BIT_X_QUANTISER_PDL_LATE = True
W4A4_16BIT_X_FAIR_SHARE = False


def w4a4_linear_via_16bit_x(M: int, K: int, dtype: torch.dtype) -> bool:
    """Whether ``NVFP4Linear``'s W4A4 forward of ``M`` tokens of ``dtype`` (on Hopper, with the
    Triton backend) takes ``fp4mm::nvfp4_linear_w4a4``: fp16/bf16 x, K % 256 == 0 (the TMA
    GEMV's), ``W4A4_16BIT_X_MIN_M <= M <= W4A4_16BIT_X_MAX_M``, and no ``FP4MM_KERNEL``
    override (a forced kernel is the W4A4 op's)."""
    return (dtype in (torch.float16, torch.bfloat16) and K % 256 == 0
            and W4A4_16BIT_X_MIN_M <= M <= W4A4_16BIT_X_MAX_M and _requested(None) == "auto")


def quantiser_pdl_late(M: int) -> bool:
    """Whether the activation quantiser of an ``M``-token W4A4 call should let the matmul
    launch only after its stores (the register ring's token range), not at its start."""
    return GEMV_FP8_SM90_MAX_M < M < GEMV_W4A4_TMA_MIN_M


# w4a16_mm on Hopper, where prefill with groups of 32 or multiples of 64 runs the Gluon GEMM
# (fp4_gemm_sm90, session 10: 2x the plain-Triton GEMM) and the crossover moves with the group
# width and with the weight layout (a raw weight is re-laid out on every call: 16 us at
# 8192 x 3072, 34 us at 18432 x 3072). (group_k, prepacked) -> largest M on the GEMV. Measured
# on an H100 80GB HBM3, CUDA-graph medians through the public op with the kernel forced,
# K = 3072 (bench/results/2026-11-26-gluon_grouped-crossover-h100.json; GEMV vs GEMM, us):
# - group 32, raw: first N=18432 M=64 83.3 vs 97.8, M=96 142.2 vs 97.0; N=8192 M=64 34.1 vs
#   54.3, M=96 57.6 vs 54.6. Then the group scales' re-layout became one Triton pass (30 -> 16 us
#   at 8192 x 3072, 59 -> 34 us at 18432 x 3072; ...-crossover-raw-h100.json): N=18432 M=48
#   78.6 vs 74.1, M=64 83.2 vs 73.1; N=8192 M=48 31.4 vs 39.8, M=64 34.5 vs 40.0 -> 48 (the
#   GEMV is 6% slower at N=18432, M=48; the GEMM 16% slower at N=8192, M=64: the crossover moves
#   with N, the table only with M).
# - group 32, prepacked: N=18432 M=16 24.5 vs 44.2, M=32 49.7 vs 44.6; N=8192 M=32 22.8 vs
#   23.3. Between 16 and 32 (M = 17..32 is the plain-Triton GEMV; the GEMM is flat up to 128),
#   on an H200 (bench/results/2026-11-26-gluon_grouped-crossover-fine-h200.json): N=18432
#   M=24 46.5 vs 45.5, M=28 46.8 vs 45.3, M=32 47.9 vs 44.6; N=8192 the GEMV wins at 17..32
#   (20.8-22.3 vs 23.5-23.9) -> 28 (within 3% of the better kernel on both shapes up to 28).
# - group 128, raw: first N=18432 M=128 71.7 vs 82.3, M=192 106.8 vs 106.5; with the Triton
#   scale re-layout M=64 43.3 vs 69.2, M=96 70.0 vs 68.2, M=128 71.7 vs 68.8 -> 64.
# - group 128, prepacked: M=32 36.5 vs 42.1, M=48 40.7 vs 41.2, M=64 43.6 vs 39.2 -> 48.
# Session 13: the GEMM's decode-size token tiles (BN 16/32/64 for M <= 64) made it 1.4-2.4x faster
# at M <= 64 (g32 16x18432x3072 prepacked: 56.3 -> 23.6 us). Re-measured the same way, fp16 x,
# raw / prepacked, GEMV vs GEMM, us (bench/results/dispatch/20261126-225906_w4a16-crossover.json):
# - group 32, raw: 18432 x 3072 M=32 49.1 vs 59.8, M=40 78.6 vs 64.2, M=48 78.5 vs 64.5; 8192 x
#   3072 M=32 22.7 vs 29.7, M=40 31.6 vs 32.4, M=48 32.1 vs 32.7 -> 32 (the GEMM is within 3%
#   at 8192 x 3072 above it, the GEMV 22% slower at 18432 x 3072).
# - group 32, prepacked: M=8 21.4 vs 23.4 and 12.1 vs 12.6; M=16 24.8 vs 23.2 and 15.0 vs 12.6
#   -> 8.
# - group 128, raw: the GEMV wins at every M <= 64 (M=64 44.0 vs 60.1, 21.9 vs 30.2) -> 64.
# - group 128, prepacked: M=1 17.2 vs 22.5; M=8 23.6 vs 23.0 and 12.2 vs 12.3; M=16 28.2 vs 22.7
#   and 14.3 vs 12.4 -> 8.
# Session 29, group 32 prepacked, the public op with FP4MM_KERNEL=gemv vs =gemm, fp16 / bf16 x,
# us (bench/results/2026-11-27-w4a16-prepacked-dispatch-h100.json, 3 rotating rounds; the GEMV
# side then ran the ring at 9-15 tokens): 18432 x 3072 M=8 21.06 / 22.70, M=12 23.89 / 22.61
# (ring), M=16 21.13 / 22.68 and 23.08 / 23.20 (TMA), M=24 26.36 / 24.96, M=32 25.24 / 24.80;
# 8192 x 8192 M=16 21.84 / 25.11, M=24 27.93 / 27.76, M=32 32.28 / 27.96; 4096 x 4096 M=16
# 9.48 / 10.22, M=24 12.30 / 10.90. With the TMA GEMV from 9 tokens (19.3-22.4 us at 9-15 on
# 18432 x 3072 against the GEMM's 22.6) -> 16.
# Session 30, groups of 64 and 128 prepacked (...-w4a16-wide-group-edges-h100.json): the TMA
# GEMV on the raw tensors the prepacked weight keeps against the GEMM on the prepacked layout,
# fp16 x, us: g64 18432 x 3072 M=8 17.42 / 22.34, M=16 20.20 / 22.28, M=24 22.97 / 22.86; g128
# 8192 x 8192 M=16 18.82 / 23.95, M=24 25.28 / 25.34; 4096 x 4096 g64 M=24 11.09 / 10.40; 28672
# x 4096 g64 M=16 32.65 / 41.40 -> 16 (the GEMV 15-30% faster at 8-16 tokens on all four
# shapes, within 7% either way at 24).
W4A16_SM90_GEMV_MAX_M = {(32, False): 32, (32, True): 16, (64, False): 64, (64, True): 16}
# The prepacked limits above 8 (here and PREPACKED_SM90_GEMV_MAX_M["nvfp4_w4a16_mm"] below) stand
# on the TMA GEMV, which needs K % 256 == 0; elsewhere the register ring serves up to 16 tokens
# and the plain-Triton GEMV above, and prepacked weights leave them for the GEMM above 8. Session
# 13 (in the note above: ring / GEMM at 16 tokens, g32 24.8 / 23.2 us, g128 28.2 / 22.7); session
# 31 with K % 256 == 128, the public op with FP4MM_KERNEL=gemv / =gemm, fp16 x, us (bench/results/
# 2026-11-27-prepacked-k-odd-dispatch-h100.json, 3 rotating rounds): w4a16_mm g32 18432 x 2944
# M=8 21.25 / 21.50, M=12 24.54 / 21.62, M=16 25.44 / 22.02; g128 16384 x 1408 M=8 10.21 /
# 10.64, M=12 13.74 / 10.68 (groups 32, 64 and 128 on three shapes: the GEMV ahead at 4 and 8
# tokens, the GEMM at 12 and 16); nvfp4_w4a16_mm 18432 x 2944 M=8 17.91 / 21.98, M=16 27.45 /
# 22.15, M=20 39.89 / 22.36, M=32 41.14 / 22.52 (the GEMM up to 1.8x faster from 16 tokens on all
# three shapes) -> 8 for both ops.
SM90_RING_PREPACKED_MAX_M = 8
# NVFP4 weights on Hopper, *prepacked* (the Gluon GEMM then skips its per-call re-layout; until
# session 13 it was flat in M up to its tile, about 40 us at N = 18432): above GEMV_SM90_MAX_M the
# plain-Triton GEMV loses to it on large weights. H100 80GB HBM3, `fp4mm bench --suite sweep
# --timer graph` with FP4MM_KERNEL forced
# (bench/results/dispatch/20261126-2028*_sweep-forced-prepacked-*.json), nvfp4_mm prepacked,
# GEMV vs GEMM, us: 18432 x 3072: M=32 30.2 vs 41.5, M=48 49.3 vs 41.5, M=64 51.5 vs 39.7;
# 8192 x 8192: M=32 29.8 vs 40.1, M=64 54.7 vs 35.4; 3072 x 3072: M=32 9.5 vs 17.3, M=64 12.7 vs
# 16.4, M=96 20.7 vs 15.9. So prepacked weights of at least this many
# elements (N * K) leave the GEMV above PREPACKED_SM90_GEMV_MAX_M; smaller ones keep GEMV_MAX_M.
# nvfp4_w4a16_mm with bf16 x (bench/results/dispatch/20261126-2029*_decode-*.json, prepacked,
# GEMV vs GEMM, us): 18432 x 3072 M=32 63.1 vs 42.1 (the Gluon GEMV's 32-token tile; M=16 took
# 27.5 in bench/results/20261126-181353_decode.json), M=40 47.2 vs 41.8, M=64 46.8 vs 39.7;
# 3072 x 3072 M=64 12.3 vs 16.2; 8192 x 8192 M=64 51.6 vs 40.0 -> 16 for this op.
# Session 13: the Gluon GEMM got decode-size token tiles (BN 16/32/64 for M <= 64; it was BN 128
# at every M <= 128) and is no longer flat in M: 24.7 us at M = 1-16 on 18432 x 3072 (W4A4,
# x pre-pass included), 26.7-26.9 at M = 24-32, 30.1-30.3 at M = 48-64 (it was 39.7 at
# M = 64). Forced kernels through the public ops, prepacked weights, GEMV vs GEMM, us
# (H100 80GB HBM3, `fp4mm bench --suite decode --timer graph`, bench/results/dispatch/
# 20261126-224742_decode-forced-gemm.json and 20261126-224823_decode-forced-gemv.json):
# - nvfp4_mm, 18432 x 3072: M=12 22.2 vs 24.7, M=16 22.8 vs 24.7, M=24 29.4 vs 26.7, M=32 30.1
#   vs 26.9, M=48 49.2 vs 30.1 -> 16. (8192 x 8192 crosses earlier: M=16 30.5 vs 25.7; the
#   table keys on M, and the M-sweep bar is at 18432 x 3072.)
# - nvfp4_w4a16_mm (bf16 x), 18432 x 3072: M=8 19.1 vs 26.5, M=12 27.5 vs 26.3, M=16 27.6 vs
#   26.4, M=24 59.0 vs 28.6; 8192 x 8192 M=16 35.7 vs 29.6 -> 8.
# - 3072 x 3072 (below PREPACKED_GEMM_MIN_WEIGHT) still favours the GEMV up to 64 (W4A4 M=64
#   13.0 vs 13.7), so the weight-size condition stays.
PREPACKED_GEMM_MIN_WEIGHT = 16 * 2**20
# Session 15, the TMA-fed GEMV against the GEMM on prepacked weights (same sweep file as
# GEMV_SM90_MAX_M's session-15 note; TMA at its heuristic vs the public op with the GEMM forced,
# us, bf16 / fp16 x): 18432 x 3072 M=9 23.1 / 22.0 vs 24.8 / 22.3, M=16 21.9 / 22.2 vs 23.8 /
# 22.5, M=24 31.1 / 31.5 vs 24.4 / 22.9; 8192 x 8192 M=16 22.0 / 22.3 vs 27.8 / 25.2, M=24 29.9 /
# 32.0 vs 27.4 / 25.3 -> 16 for nvfp4_w4a16_mm.
# Session 28 (the swizzled TMA GEMV; same file as GEMV_SM90_TMA_MIN_M's note, bf16 x, TMA vs the
# GEMM on the prepacked layout, us): 18432 x 3072 M=16 19.32 vs 24.43, M=24 23.75 vs 24.69, M=32
# 23.16 vs 24.10; 8192 x 8192 M=16 20.36 vs 27.94, M=24 23.62 vs 27.47, M=32 28.43 vs 27.76;
# 4096 x 4096 M=16 9.24 vs 10.88, M=24 11.31 vs 10.97, M=32 9.06 vs 11.16 -> 32 for
# nvfp4_w4a16_mm (the GEMM ahead by 2-3% at two of the nine points).
# Session 39, H200 (scripts/gpu_dispatch_check.py, bench/results/2026-11-28-dispatch-check-part
# {0,1}-h200.json: every op as dispatched against its GEMV and GEMM forced, raw and prepacked, M =
# 1-128 on 18432 x 3072, 8192 x 8192 and 4096 x 4096, 3 rotating rounds): within 5% of the better
# kernel at 304 of 312 points; off at prepacked W4A4 from 17 tokens, where the GEMVs (since
# session 31 the x pre-pass + TMA GEMV route on large weights, the ring below 2^25 elements) beat
# the GEMM: GEMV / GEMM, us, 8192 x 8192 M=20 23.80 / 28.52, M=24 24.39 / 28.18, M=32 24.42 /
# 28.35; 4096 x 4096 M=20 10.71 / 11.16, M=32 11.29 / 11.35; 18432 x 3072 M=20 24.14 / 23.94,
# M=24 23.67 / 24.02, M=32 24.39 / 24.12 -> 32 for nvfp4_mm (from 33 tokens the GEMM is 1.3-1.6x
# faster on all three). Only where the x pre-pass + TMA GEMV route runs (K % 256 == 0 and
# GEMV_W4A4_TMA_MIN_WEIGHT elements): elsewhere the ring serves 17-32 tokens, which loses in a
# layer. A prepacked W4A4 NVFP4Linear, forward with the quantiser, GEMM / GEMVs, us
# (scripts/gpu_layer_prepacked_w4a4.py, ...-layer-prepacked-w4a4-h200.json, static and dynamic
# activation scale): 8192 -> 8192 M=17-32 29.9-32.7 / 25.9-29.1 (1.11-1.17x), 4096 -> 14336
# 1.08-1.13x, 3072 -> 18432 1.03-1.10x, 14336 -> 4096 0.99-1.01x; but 4096 -> 4096 (the ring)
# 14.0-15.6 / 17.0-19.1 at 17-24 tokens (0.82x): behind the quantiser, which triggers its
# dependent launch early from 17 tokens, the ring's CTAs pile onto the SMs it leaves free
# (quantiser_pdl_late), so there W4A4 keeps PREPACKED_SM90_W4A4_RING_MAX_M, as it does where K %
# 256 != 0 (session 31, H100: the ring at 17-32 tokens 26.6-27.9 us against the GEMM's 24.1 at
# 18432 x 3072). (Groups of 128 prepacked gain 2-5% from the GEMV at 20-24 tokens and lose 3-6%
# at 32: left at 16.)
PREPACKED_SM90_GEMV_MAX_M = {"nvfp4_mm": 32, "nvfp4_w4a16_mm": 32}
PREPACKED_SM90_W4A4_RING_MAX_M = 16


def gemv_sm90_max_m(op: str, N: int) -> int:
    """The most tokens the Gluon decode GEMVs serve for ``op`` with ``N`` weight rows
    (``GEMV_SM90_MAX_M``, at most 32 below ``GEMV_SM90_MIN_N_ABOVE_32`` rows)."""
    top = GEMV_SM90_MAX_M[op]
    return top if N >= GEMV_SM90_MIN_N_ABOVE_32 else min(top, 32)


def _requested(override: str | None) -> str:
    value = override if override is not None else os.environ.get(ENV_VAR, "auto")
    value = value.strip().lower() or "auto"
    if value not in (*KERNELS, "auto"):
        source = "override" if override is not None else ENV_VAR
        raise ValueError(f"{source}: expected one of {(*KERNELS, 'auto')}, got {value!r}")
    return value


def select_kernel(op: str, M: int, N: int, K: int, device=None, *,
                  group_size: int | None = None, prepacked: bool = False,
                  override: str | None = None) -> str:
    """``"gemv"`` or ``"gemm"`` for an ``(M, N, K)`` problem of ``op`` on ``device``.

    Args:
        op: ``"nvfp4_mm"``, ``"w4a16_mm"`` or ``"nvfp4_w4a16_mm"``.
        M, N, K: problem size (tokens, weight rows, reduction length); positive ints.
        device: the tensors' device (kept for per-architecture tables; every sm_90 card uses
            the H100 table).
        group_size: ``w4a16_mm`` only (optional); on Hopper the crossover depends on it
            (``W4A16_SM90_GEMV_MAX_M``).
        prepacked: the weight is a ``PrepackedNVFP4Weight`` / ``PrepackedW4A16Weight`` (the GEMM
            then skips its per-call re-layout); on Hopper the crossover is then lower: for
            ``w4a16_mm`` by group size, for NVFP4 weights of ``PREPACKED_GEMM_MIN_WEIGHT``
            elements or more.
        override: ``"gemm"``, ``"gemv"`` or ``"auto"``; default: ``FP4MM_KERNEL`` or ``"auto"``.
    """
    if op not in OPS:
        raise ValueError(f"op: expected one of {OPS}, got {op!r}")
    for name, v in (("M", M), ("N", N), ("K", K)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device: expected a torch.device or str, got {type(device).__name__}")
    requested = _requested(override)
    if requested != "auto":
        return requested
    return "gemv" if M <= gemv_max_m(op, device, group_size, prepacked, N * K, K) else "gemm"


def gemv_max_m(op: str, device=None, group_size: int | None = None,
               prepacked: bool = False, weight_elems: int | None = None,
               k: int | None = None) -> int:
    """The largest M that ``select_kernel`` gives the GEMV (the tables above);
    ``weight_elems``: N * K, for prepacked NVFP4 weights on Hopper; ``k``: K, for prepacked
    weights on Hopper whose limit stands on the TMA GEMV (``SM90_RING_PREPACKED_MAX_M`` where
    K % 256 != 0)."""
    if op == "w4a16_mm" and group_size is not None and device is not None and is_hopper(device):
        from fp4mm.kernels.fp4_gemm_sm90 import group_k

        gk = group_k(group_size)
        if gk:
            top = W4A16_SM90_GEMV_MAX_M[(gk, prepacked)]
            return _without_tma_gemv(top, k) if prepacked else top
    if (op in PREPACKED_SM90_GEMV_MAX_M and prepacked and weight_elems is not None
            and weight_elems >= PREPACKED_GEMM_MIN_WEIGHT and device is not None
            and is_hopper(device)):
        top = PREPACKED_SM90_GEMV_MAX_M[op]
        if op == "nvfp4_mm":  # above the ring's limit only on the x pre-pass + TMA GEMV route
            if weight_elems < GEMV_W4A4_TMA_MIN_WEIGHT:
                return min(top, PREPACKED_SM90_W4A4_RING_MAX_M)
            return _without_tma_gemv(top, k, PREPACKED_SM90_W4A4_RING_MAX_M)
        return _without_tma_gemv(top, k)
    return GEMV_MAX_M[op]


def _without_tma_gemv(top: int, k: int | None, ring_top: int = SM90_RING_PREPACKED_MAX_M) -> int:
    """A prepacked limit that stands on the TMA GEMV, capped at ``ring_top`` (default
    ``SM90_RING_PREPACKED_MAX_M``) where K rules that kernel out (K % 256 != 0)."""
    from fp4mm.kernels.fp4_gemv_tma_sm90 import KCHUNK

    return min(top, ring_top) if k is not None and k % KCHUNK else top
