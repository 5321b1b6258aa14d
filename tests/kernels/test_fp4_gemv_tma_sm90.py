"""fp4_gemv_tma_sm90 (Gluon decode GEMV fed by TMA, sm_90a): compile-only checks on any machine,
numerics on an sm_90 GPU.

Gluon cannot run in Triton's interpreter; the interpreter-tested twin is fp4mm/kernels/fp4_gemv.py.
CPU (CI): every config the heuristic ships compiles for sm_90a with no spills, TMA copies and
mma.sync; the predicate and the heuristic; the ops send 16-bit x at 9-32 tokens here.
GPU: vs the fp32 oracle on fresh random inputs (ragged N, M = 9..32, several K, fp16/bf16 x, both
nibble orders, split K, every config knob, fp16/fp32 out), NaN scale propagation, the ops running
it alone, unaligned operands falling back.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re

import pytest
import torch

from fp4mm import reference
from fp4mm.formats import dequantize_nvfp4_blocks

T = pytest.importorskip("fp4mm.kernels.fp4_gemv_tma_sm90")
_spec = importlib.util.spec_from_file_location(
    "_ptxas", os.path.join(os.path.dirname(__file__), "_ptxas.py"))
_ptxas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ptxas)

HAS_SM90 = torch.cuda.is_available() and T.is_hopper("cuda")
gpu = pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 CUDA device")
C = T.GemvTMAConfig


# ----------------------------------------------------------------------------------------------
# CPU
# ----------------------------------------------------------------------------------------------
def test_config_validity_and_heuristic():
    assert T.config_is_valid(C())
    for bad in (C(row_tiles=3), C(stages=1), C(stages=5), C(split_k=0), C(warps=3),
                C(warps=8)):
        assert not T.config_is_valid(bad)
    for M in range(9, T.MAX_M + 1):
        for N, K in ((18432, 3072), (8192, 8192), (3072, 3072), (4096, 256)):
            assert T.config_is_valid(T.choose_config(M, N, K))
    # NVFP4: four warps of one row tile, 2 stages, split 2 unless two splits of the row blocks
    # pass one wave (132 SMs x 6 CTAs at 16 tokens, x 4 at 32)
    assert T.choose_config(16, 18432, 3072) == C(1, 2, 2, 4)  # 576 CTAs <= 792
    assert T.choose_config(9, 28672, 4096) == C(1, 2, 1, 4)  # 896 > 792
    assert T.choose_config(32, 14336, 4096) == C(1, 2, 2, 4)  # 448 <= 528
    # ... unless another split fills the SMs much more evenly (session 38): the busiest SM's
    # chunks 15% fewer or better
    assert T.choose_config(32, 18432, 3072) == C(1, 2, 4, 4)  # 576 > 528: split 1 36, split 4 27
    for M in (4, 16, 32):
        assert T.choose_config(M, 5120, 5120) == C(1, 2, 3, 4)  # split 2 20, split 3 14
        assert T.choose_config(M, 6144, 4096) == C(1, 2, 4, 4)  # 16 -> 12
        assert T.choose_config(M, 5120, 27648) == C(1, 2, 3, 4)  # 108 -> 72
    assert T.choose_config(16, 14336, 4096) == C(1, 2, 2, 4)  # 32 -> 28: 12.5%, stays
    assert T.choose_config(16, 28672, 4096) == C(1, 2, 1, 4)  # 64 -> 56: stays
    # ... where a grid of at most one CTA an SM counts 1.25 times its chunks (session 41): 64
    # row blocks x split 2 = 128 CTAs, 28 chunks (35) -> split 4, 256 CTAs, 28 (down projections)
    for M in (4, 16, 32):
        assert T.choose_config(M, 4096, 14336) == C(1, 2, 4, 4)
        assert T.choose_config(M, 4096, 11008) == C(1, 2, 4, 4)  # 22 x 1.25 -> 22
        assert T.choose_config(M, 4096, 4096) == C(1, 2, 4, 4)  # 8 x 1.25 -> 8
        assert T.choose_config(M, 3584, 18944) == C(1, 2, 4, 4)  # 37 x 1.25 -> 38: 82%
        assert T.choose_config(M, 3072, 8192) == C(1, 2, 5, 4)  # 16 x 1.25 -> 2 x 7
        # and where the best of splits 1-5 is still one CTA an SM, up to 8 splits of 2 chunks
        # or more: 16 row blocks x 4 = 64 CTAs, 4 chunks (5) -> 128 CTAs, 2 (2.5)
        assert T.choose_config(M, 1024, 4096) == C(1, 2, 8, 4)
        assert T.choose_config(M, 2048, 8192) == C(1, 2, 8, 4)  # 128 CTAs (10) -> 256 (8)
        assert T.choose_config(M, 2048, 2048) == C(1, 2, 4, 4)  # 8 chunks: no 2-chunk split
        # not where splits 1-5 already give two CTAs an SM or more
        assert T.choose_config(M, 4608, 3584) == C(1, 2, 5, 4)  # 360 CTAs
        assert T.choose_config(M, 5120, 13824) == C(1, 2, 3, 4)  # 240 CTAs
    for M in (16, 32):
        assert T.choose_config(M, 8192, 8192) == C(1, 2, 2, 4)
    assert T.choose_config(16, 32768, 256) == C(1, 2, 1, 4)  # one chunk
    # 16-bit group scales: one row tile, split 2, two warps above 16 tokens
    assert T.choose_config(32, 18432, 3072, group_size=32) == C(1, 2, 2, 2)
    assert T.choose_config(16, 8192, 8192, group_size=32) == C(1, 2, 2, 1)
    assert T.choose_config(16, 8192, 256, group_size=32) == C(1, 2, 1, 1)
    # ... or up to 5 splits until a wave of CTAs is in flight (session 38; 10 CTAs an SM at 16
    # tokens, 5 at 32): 1320 // 320 row blocks, 660 // 160
    assert T.choose_config(16, 5120, 5120, group_size=32) == C(1, 2, 4, 1)
    assert T.choose_config(32, 5120, 5120, group_size=32) == C(1, 2, 4, 2)
    assert T.choose_config(9, 6144, 4096, group_size=32) == C(1, 2, 3, 1)
    assert T.choose_config(24, 1024, 4096, group_size=32) == C(1, 2, 5, 2)  # at most 5
    assert T.choose_config(16, 1024, 512, group_size=32) == C(1, 2, 2, 1)  # two chunks
    # at 5-8 tokens (the 8-token tile): four warps on the widest weights, split 3 from 20 chunks
    for M in range(5, 9):
        assert T.choose_config(M, 18432, 3072, group_size=32) == C(1, 2, 2, 4)
        assert T.choose_config(M, 14336, 4096, group_size=32) == C(1, 2, 2, 1)
        assert T.choose_config(M, 8192, 8192, group_size=32) == C(1, 2, 3, 1)
        assert T.choose_config(M, 28672, 5120, group_size=32) == C(1, 2, 3, 4)
    assert T.choose_config(9, 18432, 3072, group_size=32) == C(1, 2, 2, 1)
    assert T.choose_config(8, 16384, 512, group_size=32) == C(1, 2, 2, 4)  # two chunks
    assert T.choose_config(8, 16384, 256, group_size=32) == C(1, 2, 1, 4)  # one chunk


def test_busiest_sm_chunks_counts_the_fullest_sm_of_the_launchers_split():
    # the launcher's split: cdiv(chunks, split_k) chunks a CTA, cdiv(chunks, that) CTAs a row
    assert T.busiest_sm_chunks(80, 20, 2) == 2 * 10  # 160 CTAs on 132 SMs: two on some
    assert T.busiest_sm_chunks(80, 20, 3) == 2 * 7  # 240 CTAs of 7 (the last of 6)
    assert T.busiest_sm_chunks(33, 12, 5) == 3  # 3 chunks a CTA: 4 CTAs a row, 132 in all
    assert T.busiest_sm_chunks(132, 8, 1) == 8 and T.busiest_sm_chunks(133, 8, 1) == 16
    assert T.busiest_sm_chunks(10, 8, 2, sms=4) == 5 * 4


def test_split_load_counts_a_lone_cta_grid_more():
    # at most one CTA an SM (four warps) cannot keep an SM streaming: its chunks count 1.25 times
    assert T.split_load(64, 56, 2) == 1.25 * T.busiest_sm_chunks(64, 56, 2) == 1.25 * 28
    assert T.split_load(64, 56, 4) == T.busiest_sm_chunks(64, 56, 4) == 2 * 14  # 256 CTAs
    assert T.split_load(66, 8, 2) == 1.25 * 4 and T.split_load(67, 8, 2) == 2 * 4  # 132 / 134
    assert T.split_load(10, 8, 2, sms=4) == T.busiest_sm_chunks(10, 8, 2, sms=4)


def test_w4a16_groups_take_this_kernel_from_their_group_minimum(monkeypatch):
    """Inside ``run_gemv_sm90`` (CPU, every predicate true, the kernels recorded, not run):
    groups of 32 and 64 take the register ring at 1-4 tokens (its MMA-column forms), multiples
    of 128 from one token (GEMV_SM90_TMA_MIN_M_GROUPED): this kernel from there to 32
    tokens."""
    from fp4mm.kernels import fp4_gemv_sm90
    from fp4mm.ops.dispatch import GEMV_SM90_RING_MAX_M_GROUPED, GEMV_SM90_TMA_MIN_M_GROUPED

    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")
    ran = []
    monkeypatch.setattr(T, "is_supported", lambda *a, **k: True)
    monkeypatch.setattr(fp4_gemv_sm90, "is_supported", lambda *a, **k: True)
    monkeypatch.setattr(T, "gemv_tma_sm90", lambda *a, **k: ran.append("tma"))
    monkeypatch.setattr(fp4_gemv_sm90, "gemv_sm90", lambda *a, **k: ran.append("ring"))
    for group in (32, 64, 128, 256, 384):
        for M in range(1, T.MAX_M + 1):
            x = torch.empty((M, 3072), dtype=torch.float16)
            wq = torch.empty((256, 1536), dtype=torch.uint8)
            sc = torch.empty((256, 3072 // group), dtype=torch.float16)
            out = torch.empty((M, 256), dtype=torch.float16)
            ran.clear()
            done = ops.run_gemv_sm90(x, None, wq, sc, 1.0, "low_first", out, group_size=group)
            first = {32: 5, 64: 5}.get(group, 1)
            if M >= first:
                assert done and ran == ["tma"], (group, M)
            elif M <= GEMV_SM90_RING_MAX_M_GROUPED:
                assert done and ran == ["ring"], (group, M)
            else:  # the caller's plain-Triton GEMV
                assert not done and ran == [], (group, M)
    assert GEMV_SM90_TMA_MIN_M_GROUPED == {32: 5, 64: 5, 128: 1}


def test_w4a4_takes_the_prepass_and_this_kernel_at_17_to_32_tokens_of_large_weights(
        monkeypatch):
    """Inside ``run_gemv_sm90`` (CPU, the kernels recorded, not run): W4A4 at 1-4 tokens takes
    the E4M3 GEMV, at 5-16 the register ring, at 17-32 on weights of GEMV_W4A4_TMA_MIN_WEIGHT
    elements or more x dequantised to fp16 (PDL, the next launch after its stores) and this
    kernel, else the ring."""
    from fp4mm.kernels import dequant_nvfp4, fp4_gemv_fp8_sm90, fp4_gemv_sm90
    from fp4mm.ops.dispatch import GEMV_W4A4_TMA_MIN_M, GEMV_W4A4_TMA_MIN_WEIGHT

    assert GEMV_W4A4_TMA_MIN_M == 17 and GEMV_W4A4_TMA_MIN_WEIGHT == 2**25
    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")
    ran = []

    def dequant(q, s, **kw):
        ran.append(("dequant", kw.get("pdl", False) and kw.get("pdl_late", False),
                    kw["dtype"]))
        return torch.empty((q.shape[0], q.shape[1] * 2), dtype=kw["dtype"])

    monkeypatch.setattr(T, "is_supported", lambda d, M, K, *t: M <= T.MAX_M and K % 256 == 0)
    monkeypatch.setattr(fp4_gemv_sm90, "is_supported", lambda *a, **k: True)
    monkeypatch.setattr(fp4_gemv_fp8_sm90, "is_supported", lambda *a, **k: True)
    monkeypatch.setattr(dequant_nvfp4, "dequant_nvfp4", dequant)
    monkeypatch.setattr(T, "gemv_tma_sm90", lambda x, *a, **k: ran.append(
        ("tma", x.dtype, k.get("fair_share", True))))
    monkeypatch.setattr(fp4_gemv_sm90, "gemv_sm90", lambda *a, **k: ran.append(("ring",)))
    monkeypatch.setattr(fp4_gemv_fp8_sm90, "gemv_fp8_sm90", lambda *a, **k: ran.append(("fp8",)))
    # the pre-pass lets the GEMV launch after its stores, so the GEMV needs no fair-share cap
    tma = [("dequant", True, torch.float16), ("tma", torch.float16, False)]
    for N, K in ((16384, 2048), (8192, 8192), (16384, 2048 - 256), (16384, 2048 + 128)):
        large = N * K >= GEMV_W4A4_TMA_MIN_WEIGHT and K % 256 == 0
        for M in range(1, 41):
            xq = torch.empty((M, K // 2), dtype=torch.uint8)
            xs = torch.empty((M, K // 16), dtype=torch.uint8)
            wq = torch.empty((N, K // 2), dtype=torch.uint8)
            ws = torch.empty((N, K // 16), dtype=torch.uint8)
            out = torch.empty((M, N), dtype=torch.float16)
            ran.clear()
            assert ops.run_gemv_sm90(xq, xs, wq, ws, 1.0, "low_first", out)
            want = ([("fp8",)] if M <= 4 else tma if large and 17 <= M <= 32 else [("ring",)])
            assert ran == want, (N, K, M, ran)


def test_x_boxes_cover_the_tokens_and_run_at_most_one_row_past_x():
    """Group scales at M <= 3/4 of the token tile: M rows rounded up to even, as a power-of-two
    box and one box for each set bit of the rest (so each is a power of two, at most four; one
    token is one 2-row box); above that, and for NVFP4 weights, one box of the tile."""
    for M in range(1, T.MAX_M + 1):
        nt = T._token_tile(M)
        assert T.x_boxes(M, nt, False) == (nt, 0)
        xm, rows = T.x_boxes(M, nt, True)
        if rows == 0:
            assert xm == nt and M > 3 * nt // 4
            continue
        assert M <= 3 * nt // 4 and rows in (M, M + 1) and rows % 2 == 0 and rows < nt
        assert xm & (xm - 1) == 0 and xm <= rows < 2 * xm
        sizes = [xm] + [xm >> j for j in (1, 2, 3) if (rows - xm) & (xm >> j)]
        assert sum(sizes) == rows and min(sizes) >= 2
        assert [b for b in T.x_extra_boxes(xm, rows) if b] == sizes[1:]
    assert T.x_boxes(1, 8, True) == (2, 2) and T.x_boxes(2, 8, True) == (2, 2)
    assert T.x_boxes(9, 16, True) == (8, 10) and T.x_boxes(13, 16, True) == (16, 0)
    assert T.x_boxes(23, 32, True) == (16, 24) and T.x_boxes(25, 32, True) == (32, 0)


def test_is_supported_needs_hopper_m_and_k(monkeypatch):
    monkeypatch.setattr(T, "is_hopper", lambda device: True)
    t = torch.empty(64, dtype=torch.uint8)
    assert T.is_supported("cpu", 16, 3072, t)
    assert T.is_supported("cpu", T.MAX_M, 256, t)
    assert not T.is_supported("cpu", T.MAX_M + 1, 3072, t)
    assert not T.is_supported("cpu", 16, 3072 + 128, t)  # K % 256
    assert not T.is_supported("cpu", 16, 3072, t[1:])  # base not 16-byte aligned
    assert not T.is_supported("cpu", 16, 3072, torch.empty(8, 8, dtype=torch.uint8).T)
    monkeypatch.setattr(T, "is_hopper", lambda device: False)
    assert not T.is_supported("cpu", 16, 3072, t)


def _ops_choose(monkeypatch, M, K):
    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")
    monkeypatch.setattr(ops, "is_hopper", lambda device: True)
    return ops.choose_kernel("nvfp4_w4a16_mm", M, 18432, K, torch.device("cpu"))


def test_ops_send_16_bit_x_up_to_32_tokens_to_a_gluon_gemv(monkeypatch):
    from fp4mm.ops.dispatch import GEMV_SM90_MAX_M, GEMV_SM90_TMA_MIN_M

    assert GEMV_SM90_MAX_M["nvfp4_w4a16_mm"] == T.MAX_M
    assert 1 < GEMV_SM90_TMA_MIN_M <= 16
    for M in (1, 9, 16, 17, 32):
        assert _ops_choose(monkeypatch, M, 3072) == "gemv_sm90"
    assert _ops_choose(monkeypatch, 33, 3072) == "gemv"


def test_ops_send_grouped_tokens_here_from_their_group_minimum(monkeypatch):
    """w4a16_mm with groups of 32, 64 and multiples of 128 from their tma_min_m_grouped tokens to
    32: the Gluon GEMVs (inside them this kernel, see the previous test) where K % 256 == 0, else
    the register ring up to its 16 tokens and the plain-Triton GEMV above."""
    from fp4mm.ops.dispatch import (
        GEMV_SM90_RING_MAX_M_GROUPED,
        GEMV_SM90_TMA_MIN_M_GROUPED,
        tma_min_m_grouped,
    )

    assert GEMV_SM90_TMA_MIN_M_GROUPED == {32: 5, 64: 5, 128: 1}
    assert [tma_min_m_grouped(g) for g in (None, 16, 32, 64, 96, 128, 256, 384, 640)] == [
        None, None, 5, 5, None, 1, 1, 1, 1]
    assert all(1 <= m <= GEMV_SM90_RING_MAX_M_GROUPED + 1
               for m in GEMV_SM90_TMA_MIN_M_GROUPED.values())
    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")
    monkeypatch.setattr(ops, "is_hopper", lambda device: True)

    def choose(M, K, group):
        return ops.choose_kernel("w4a16_mm", M, 18432, K, torch.device("cpu"), group)
    top = GEMV_SM90_RING_MAX_M_GROUPED
    for group in (32, 64, 128, 256, 384):
        assert choose(5, 3072, group) == choose(top + 1, 3072, group) == "gemv_sm90"
        assert choose(32, 3072, group) == "gemv_sm90"
        assert choose(24, 3072 + 128, group) == "gemv"  # K % 256
        assert choose(33, 3072, group) in ("gemv", "gemm_sm90")
    assert not T.group_size_is_supported(16) and choose(24, 3072, 16) == "gemv"
    for bad in (0, 16, 48, 96):
        assert not T.group_size_is_supported(bad)


def _view_offsets(view, shape):
    """{(row, col): offset} of a ``SharedLinearLayout`` view (offsets in its elements); asserts
    that the view covers the [rows, cols] box exactly once."""
    table = {}
    for o in range(1 << len(view.offset_bases)):
        r = c = 0
        for bit, (br, bc) in enumerate(view.offset_bases):
            if o >> bit & 1:
                r, c = r ^ br, c ^ bc
        table[(r, c)] = o
    assert sorted(table) == [(r, c) for r in range(shape[0]) for c in range(shape[1])]
    return table


def _swizzled(row, byte):
    """Where a 128-byte-swizzled TMA box puts byte ``byte`` of its 128-byte row ``row``."""
    return row * 128 + ((byte // 16) ^ (row % 8)) * 16 + byte % 16


def _wavefronts(addresses, width):
    """Shared-memory wavefronts of one warp-wide load of ``width`` bytes per lane (lanes in
    order): 16-byte loads run in phases of 8 lanes, 4-byte loads in one of 32; a phase takes as
    many wavefronts as the most distinct words any one bank holds."""
    per_phase = 128 // width
    total = 0
    for p in range(0, len(addresses), per_phase):
        banks = {}
        for a in addresses[p:p + per_phase]:
            for w in range(a // 4, (a + width) // 4):
                banks.setdefault(w % 32, set()).add(w)
        total += max(len(words) for words in banks.values())
    return total


@pytest.mark.parametrize("interleaved", [True, False])
def test_stage_views_find_what_tma_wrote_and_read_without_bank_conflicts(interleaved):
    """The shared-memory views (``_codes_view``, ``_x_view``, ``_scales_view``) map each index the
    register layouts read (lane 4 g + c of a warp: rows / tokens g and g + 8, quad lane c) to
    the byte the 128-byte-swizzled TMA box holds it at, and each load of a warp is conflict-free
    (4 wavefronts for 16 bytes a lane, 1 for 4 bytes). NVFP4 weights (``interleaved``): step s
    of quad lane c reads the chunk's 32-K unit 2 c + s, a 16-byte vector each of codes and x.
    Group scales (natural K order): lane c reads word c of each 32-group (4 bytes) and the x
    pairs of its quarter of the group (16 bytes)."""
    rows, tokens = 64, 16
    codes = _view_offsets(T._codes_view(rows, interleaved), (rows, 32))
    x = _view_offsets(T._x_view(tokens, interleaved), (tokens, 128))
    for (r, word), off in codes.items():
        s, c, j = word // 16, word // 4 % 4, word % 4
        byte = 16 * (2 * c + s) + 4 * j if interleaved else 4 * word
        assert off * 4 == _swizzled(r, byte)
    for (t, pair), off in x.items():
        s, c, q = pair // 64, pair // 16 % 4, pair % 16
        byte = 4 * (32 * c + 16 * s + q if interleaved else pair)  # in the token's 512 bytes
        assert off * 4 == _swizzled(4 * t + byte // 128, byte % 128)
    lanes = [(g, c) for g in range(8) for c in range(4)]
    for base, s in itertools.product((0, 8, 16, 40), (0, 1)):
        if interleaved:
            loads = [([codes[(base + g, 16 * s + 4 * c)] * 4 for g, c in lanes], 16)]
            loads += [([x[(base % tokens + g, 64 * s + 16 * c + 4 * i)] * 4 for g, c in lanes], 16)
                      for i in range(4)]
        else:
            loads = [([codes[(base + g, 16 * s + 4 * p + c)] * 4 for g, c in lanes], 4)
                     for p in range(4)]
            loads += [([x[(base % tokens + g, 64 * s + 16 * p + 4 * c)] * 4 for g, c in lanes], 16)
                      for p in range(4)]
        for addresses, width in loads:  # one wavefront per phase
            assert _wavefronts(addresses, width) == (4 if width == 16 else 1)
    if interleaved:
        scales = _view_offsets(T._scales_view(rows), (rows, 8))
        for (r, pair), off in scales.items():
            assert off * 2 == 16 * r + 2 * (2 * (pair % 4) + pair // 4)
    # the count sees the conflicts of the plain layouts (rows 128 bytes apart, unit 4 s + c)
    plain = [g * 128 + 16 * c for g, c in lanes]
    assert _wavefronts(plain, 16) == 8


def _shipped() -> list[tuple]:
    """(x dtype, NT, config, partial, high_first, out) of every specialisation the heuristic
    returns at the decode shapes the ops send here, both nibble orders and fp32 out once."""
    from fp4mm.ops.dispatch import GEMV_SM90_TMA_MIN_M

    cases = set()
    for M in range(GEMV_SM90_TMA_MIN_M, T.MAX_M + 1):
        for N, K in ((18432, 3072), (28672, 4096), (8192, 8192), (3072, 3072)):
            cfg = T.choose_config(M, N, K)
            for x in ("fp16", "bf16"):
                partial = cfg.split_k > 1
                cases.add((x, T._token_tile(M), cfg.row_tiles, cfg.stages, partial, cfg.warps,
                           False, "fp16"))
    assert len({c[:6] for c in cases}) >= 8  # x dtype, NT 16 / 32, split or not
    cases.add(("fp16", 16, 1, 2, False, 4, True, "fp32"))
    # alpha read from a device tensor (fp4mm.kernels.alpha): where the GEMV applies it itself
    cases = {c + (False,) for c in cases} | {c + (True,) for c in cases if not c[4]}
    cases = {c + (0,) for c in cases}
    # 16-bit group scales at the tokens the ops send here (2-32 by group size), every group form
    from fp4mm.ops.dispatch import GEMV_SM90_TMA_MIN_M_GROUPED

    for M in range(min(GEMV_SM90_TMA_MIN_M_GROUPED.values()), T.MAX_M + 1):
        for N, K in ((18432, 3072), (8192, 8192), (3072, 3072)):
            cfg = T.choose_config(M, N, K, group_size=32)
            nt = T._token_tile(M)
            for x, group in itertools.product(("fp16", "bf16"), (32, 64, 128, 256, 384)):
                cases.add((x, nt, cfg.row_tiles, cfg.stages, cfg.split_k > 1, cfg.warps, False,
                           "fp16", False, group, (nt, 0)))
            # x in several boxes (x_boxes): the groups the ops send at M, one x dtype each
            boxes = T.x_boxes(M, nt, True)
            for group, first in GEMV_SM90_TMA_MIN_M_GROUPED.items():
                if boxes[1] and M >= first:
                    cases.add(("bf16" if boxes[1] % 4 else "fp16", nt, cfg.row_tiles, cfg.stages,
                               cfg.split_k > 1, cfg.warps, False, "fp16", False, group, boxes))
    return sorted({c if len(c) == 11 else c + ((c[1], 0),) for c in cases})


SHIPPED = _shipped()


def kernel_signature(x, nt, rt, stages, partial, warps, high, out, alpha_ptr=False,
                     group=0, x_boxes=None, pad=(0, 0, 0)) -> tuple[dict, dict]:
    """``(signature, constexprs)`` of the kernel as the launcher calls it for one case (the
    descriptors it does not read are None, so constexprs)."""
    from triton.experimental.gluon import language as gl

    bn = 16 * rt * warps
    # swizzled codes and x as [tokens, 4, 64] boxes
    wl = T._W_SWIZZLED
    xm, x_rows = x_boxes or (nt, 0)  # the first x box's rows, then a box per set bit
    xd = f"tensordesc<{x}[{xm}, 4, 64],{T._X_SWIZZLED!r}>"
    xhqe = [f"tensordesc<{x}[{rows}, 4, 64],{T._X_SWIZZLED!r}>" if rows else None
            for rows in T.x_extra_boxes(xm, x_rows)]
    dtype = gl.bfloat16 if x == "bf16" else gl.float16
    word = {32: "i64", 64: "i32"}.get(group, "i16")  # a step's packed group scales
    sig = {"w_desc": f"tensordesc<u8[{bn}, 128],{wl!r}>",
           "s_desc": None if group else f"tensordesc<u8[{bn}, 16],{T._PLAIN8!r}>",
           "x_desc": xd, "xh_desc": xhqe[0], "xq_desc": xhqe[1], "xe_desc": xhqe[2],
           "ws_ptr": f"*{word}" if group else "*u8",
           "out_ptr": "*fp32" if partial else f"*{out}", "M": "i32", "N": "i32", "CHUNKS": "i32",
           "CHUNKS_SPLIT": "i32", "alpha": "fp32", "alpha_ptr": "*fp32", "stride_om": "i32",
           "stride_wsn": "i32"}
    consts = dict(DTYPE=dtype, NT=nt, HIGH_FIRST=high, PARTIAL=partial, ROW_TILES=rt,
                  STAGES=stages, PDL=partial, ALPHA_PTR=alpha_ptr, W_GROUP=group, SDTYPE=dtype,
                  X_ROWS=x_rows, PAD_A=pad[0], PAD_B=pad[1], PAD_C=pad[2])
    return sig, consts


def compile_kernel(sig: dict, consts: dict, warps: int, partial: bool):
    """The kernel compiled for sm_90a from :func:`kernel_signature`'s pair (None entries of the
    signature become None constexprs)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    consts = consts | {k: None for k, v in sig.items() if v is None}
    sig = sig | {k: "constexpr" for k in consts}
    aligned = [["tt.divisibility", 16]]
    src = GluonASTSource(T._fp4_gemv_tma_sm90_kernel, sig, constexprs=consts,
                         attrs={(6,): aligned, (7,): aligned, (13,): aligned, (14,): aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "launch_pdl": partial})


def compile_report(*case) -> dict:
    partial, warps = case[4], case[5]
    k = compile_kernel(*kernel_signature(*case), warps, partial)
    ptx = k.asm["ptx"]
    return {"log": _ptxas.ptxas_log(ptx),
            "mma": len(re.findall(r"mma\.sync\.aligned\.m16n8k16", ptx)),
            "tma": len(re.findall(r"cp\.async\.bulk\.tensor\.2d", ptx)),
            "gdc": len(re.findall(r"griddepcontrol\.\w+", ptx)),
            "ld_shared_v4": len(re.findall(r"ld\.shared\.v4\.b32", ptx)),
            "shared": k.metadata.shared}


# fair_share_pad's padding at three decode shapes (one, two and five CTAs an SM), compiled
PADDED = [("bf16", 16, 1, 2, True, 4, False, "fp16", False, 0, (16, 0), (128, 64, 0)),
          ("fp16", 16, 1, 2, True, 4, False, "fp16", False, 0, (16, 0), (64, 8, 4)),
          ("bf16", 32, 1, 2, True, 4, False, "fp16", False, 0, (32, 0), (16, 8, 0))]


def test_fair_share_pad_holds_exactly_its_shared_memory():
    """Compile-only: each padding piece adds its KB to the CTA's shared memory (an unused
    allocation would be removed), with no spill; the ring's own size is what the launcher's
    estimate assumes."""
    reports = _ptxas.compile_in_child(__file__, configs="PADDED")
    for case, rep in zip(PADDED, reports):
        x, nt, rt, stages, partial, warps = case[:6]
        assert "0 bytes spill stores, 0 bytes spill loads" in rep["log"], rep["log"]
        ring = stages * (16 * rt * warps * 144 + nt * 256 * 2)
        assert rep["shared"] - 1024 * sum(case[11]) in range(ring, ring + 64 + 1)


@pytest.mark.parametrize("nt,stages,warps", [(8, 2, 4), (16, 2, 4), (32, 2, 4), (16, 3, 2)])
def test_fair_share_pad_caps_an_sm_at_its_share_of_the_grid(nt, stages, warps):
    cfg = T.GemvTMAConfig(1, stages, 2, warps)
    own = stages * (16 * warps * 144 + nt * 512) + 64
    smem, sms = 228 * 1024, 132
    for ctas in list(range(1, 1200, 7)) + [128, 256, 576]:
        pad = T.fair_share_pad(cfg, nt, ctas, sms, smem)
        fair = -(-ctas // sms)
        assert all(p == 0 or p & (p - 1) == 0 for p in pad) and list(pad) == sorted(pad)[::-1]
        if sum(pad):
            per_cta = own + 1024 * (sum(pad) + 1)
            assert smem // per_cta == fair and per_cta - 1024 <= 227 * 1024
        else:  # no padding only where the ring alone already caps an SM at its share
            assert smem // (own + 1024) <= fair
    # one CTA an SM where a wave does not fill the machine (4096 x 14336, 16 tokens: 128)
    assert smem // (own + 1024 * (sum(T.fair_share_pad(cfg, nt, 128, sms, smem)) + 1)) == 1


def test_launcher_pads_only_split_k_launches_of_e4m3_scales(monkeypatch):
    """CPU, the kernel launch recorded, not run: the fair-share padding goes to split-K launches
    (the ones launched with PDL) of E4M3-scale weights, unless the caller says the kernel before
    lets this one launch after its stores (``fair_share=False``); group scales never."""
    launched = []

    class Kernel:
        def __getitem__(self, grid):
            return lambda *a, **k: launched.append((grid, k))

    monkeypatch.setattr(T, "_fp4_gemv_tma_sm90_kernel", Kernel())
    monkeypatch.setattr(T, "sm_count", lambda device: 132)
    from fp4mm.kernels import fp4_gemv

    monkeypatch.setattr(fp4_gemv, "reduce_partials", lambda *a, **k: None)

    def pads(M, N, K, **kw):
        launched.clear()
        x = torch.empty((M, K), dtype=torch.bfloat16)
        wq = torch.empty((N, K // 2), dtype=torch.uint8)
        group = kw.get("group_size")
        ws = (torch.empty((N, K // group), dtype=torch.bfloat16) if group else
              torch.empty((N, K // 16), dtype=torch.uint8))
        T.gemv_tma_sm90(x, wq, ws, 1.0, "low_first", torch.empty((M, N)), **kw)
        (grid, k), = launched
        return grid, (k["PAD_A"], k["PAD_B"], k["PAD_C"]), k["launch_pdl"]

    two = T.GemvTMAConfig(1, 2, 2, 4)
    grid, pad, pdl = pads(16, 4096, 14336, config=two)  # 128 CTAs, split 2: one a SM
    assert grid == (64, 2) and pdl and pad == (128, 64, 0)
    grid, pad, pdl = pads(16, 4096, 14336)  # the rule's split 4 (session 41): two a SM
    assert grid == (64, 4) and pdl and pad == (64, 8, 4)
    assert pads(16, 4096, 14336, fair_share=False)[1] == (0, 0, 0)
    assert pads(16, 4096, 14336, group_size=32)[1] == (0, 0, 0)
    grid, pad, pdl = pads(16, 28672, 4096)  # unsplit: launched plainly, never early
    assert grid[1] == 1 and not pdl and pad == (0, 0, 0)


@pytest.fixture(scope="module")
def compile_reports():
    return dict(zip(SHIPPED, _ptxas.compile_in_child(__file__)))


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: "-".join(map(str, c)))
def test_shipped_configs_compile_without_spills(compile_reports, case):
    rep = compile_reports[case]
    x, nt, rt, stages, partial, warps = case[:6]
    assert "0 bytes spill stores, 0 bytes spill loads" in rep["log"], rep["log"]
    group = case[9]
    assert rep["mma"] > 0
    # codes, (E4M3 scales,) x by TMA; 16-bit group scales are loaded by the consumers
    assert rep["tma"] >= (2 if group else 3)
    assert rep["ld_shared_v4"] > 0  # 16-byte reads of each stage
    assert rep["gdc"] == 2 * partial  # split K: PDL wait + launch_dependents
    ring = stages * (16 * rt * warps * (128 + (0 if group else 16)) + nt * 256 * 2)
    assert ring <= rep["shared"] <= ring + 1024


# ----------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------
def _e4m3(rows, cols, gen):
    from fp4mm.formats import float_to_e4m3

    return float_to_e4m3(torch.rand(rows, cols, generator=gen, device="cuda") * 1.5 + 0.5)


def _problem(M, N, K, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    ws = _e4m3(N, K // 16, gen)
    x = (torch.randn((M, K), generator=gen, device="cuda") * 0.5).to(dtype)
    return x, wq, ws


def _oracle(x, wq, ws, alpha, order):
    w = dequantize_nvfp4_blocks(wq, ws, order)
    return (x.float() @ w.T) * alpha


def _check(out, ref):
    """fp32 out: exact up to the summation order; 16-bit out: one rounding of the result."""
    assert not torch.isnan(out).any()
    amax = float(ref.abs().max())
    tol = {torch.float32: 2e-5, torch.float16: 2.0**-10 * 1.01,
           torch.bfloat16: 2.0**-7 * 1.01}[out.dtype] * amax
    assert float((out.float() - ref).abs().max()) <= tol


def _forbidden(*args, **kwargs):
    raise AssertionError("another kernel ran")


def _only_this_kernel(monkeypatch, suffix):
    """Record this kernel's launches (their keyword arguments) and make the ops' other kernels
    for ``suffix`` (``nvfp4_mm``, ``nvfp4_w4a16_mm`` or ``w4a16_mm``) fail if they run."""
    from fp4mm.kernels import fp4_gemm, fp4_gemm_sm90, fp4_gemv, fp4_gemv_sm90

    calls = []
    real = T.gemv_tma_sm90
    monkeypatch.setattr(T, "gemv_tma_sm90", lambda *a, **k: calls.append(k) or real(*a, **k))
    gemm_sm90 = {"nvfp4_mm": "fp4_gemm_sm90", "nvfp4_w4a16_mm": "fp4_gemm_sm90_w4a16",
                 "w4a16_mm": "fp4_gemm_sm90_grouped"}[suffix]
    for mod, name in ((fp4_gemm, f"{suffix}_gemm"), (fp4_gemm_sm90, gemm_sm90),
                      (fp4_gemv, f"{suffix}_gemv"), (fp4_gemv_sm90, "gemv_sm90")):
        monkeypatch.setattr(mod, name, _forbidden)
    return calls


@gpu
@pytest.mark.parametrize("M,N,K", [(9, 200, 256), (13, 77, 768), (16, 130, 3072),
                                   (17, 64, 512), (24, 33, 1280), (32, 300, 2048)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_matches_oracle(M, N, K, dtype, order):
    x, wq, ws = _problem(M, N, K, dtype, seed=M * N + K)
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, ws, 0.37, order, out)
    _check(out, _oracle(x, wq, ws, 0.37, order))


@gpu
@pytest.mark.parametrize("cfg", [C(rt, st, sp, w) for w in (1, 2, 4) for rt in (1, 2)
                                 for st in (2, 3, 4) for sp in (1, 2, 3, 5)], ids=str)
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32], ids=str)
def test_every_config(cfg, out_dtype):
    M, N, K = 11, 97, 2560  # 10 chunks: uneven splits, rings longer and shorter than a split
    x, wq, ws = _problem(M, N, K, torch.float16, seed=5)
    out = torch.full((M, N), float("nan"), dtype=out_dtype, device="cuda")
    T.gemv_tma_sm90(x, wq, ws, 0.5, "low_first", out, config=cfg)
    _check(out, _oracle(x, wq, ws, 0.5, "low_first"))


@gpu
def test_nan_scale_bytes_propagate_to_exactly_their_outputs():
    M, N, K = 12, 70, 512
    x, wq, ws = _problem(M, N, K, torch.float16, seed=3)
    ws = ws.clone()
    ws.view(torch.uint8)[5, 7] = 0x7F
    out = torch.zeros((M, N), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, ws, 1.0, "low_first", out)
    nan = torch.isnan(out)
    assert nan[:, 5].all() and int(nan.sum()) == M


@gpu
def test_ops_run_it_alone_and_fall_back_on_unaligned_operands(monkeypatch):
    import fp4mm

    x, wq, ws = _problem(16, 256, 3072, torch.bfloat16, seed=12)
    ref = reference.nvfp4_w4a16_mm(x, wq, ws, 2.0)
    calls = _only_this_kernel(monkeypatch, "nvfp4_w4a16_mm")
    _check(fp4mm.nvfp4_w4a16_mm(x, wq, ws, 2.0), ref)
    assert calls == [{}]
    monkeypatch.undo()
    # a view 8 bytes into a buffer: not 16-byte aligned, so TMA cannot read it
    buf = torch.empty((16 * 3072 + 4,), dtype=torch.bfloat16, device="cuda")
    xu = buf[4:].view(16, 3072)
    xu.copy_(x)
    assert not T.is_supported(xu.device, 16, 3072, xu)
    _check(fp4mm.nvfp4_w4a16_mm(xu, wq, ws, 2.0), ref)


@gpu
def test_ops_keep_17_to_32_tokens_off_the_register_ring_where_tma_does_not_apply(monkeypatch):
    """K % 256 != 0 at M = 24: no TMA GEMV, and the register ring (1.4-1.7x slower than the
    plain-Triton GEMV at 17-32 tokens of 16-bit x, session 13) must not take it either."""
    import fp4mm
    from fp4mm.kernels import fp4_gemv_sm90

    x, wq, ws = _problem(24, 64, 384, torch.float16, seed=21)
    assert not T.is_supported(x.device, 24, 384, x, wq, ws)

    def forbidden(*args, **kwargs):
        raise AssertionError("the register-ring GEMV ran")
    monkeypatch.setattr(fp4_gemv_sm90, "gemv_sm90", forbidden)
    _check(fp4mm.nvfp4_w4a16_mm(x, wq, ws, 2.0), reference.nvfp4_w4a16_mm(x, wq, ws, 2.0))


@gpu
@pytest.mark.parametrize("M", [17, 24, 32])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_w4a4_at_17_to_32_tokens_runs_the_prepass_and_this_kernel(monkeypatch, M, out_dtype,
                                                                  order):
    """The public ``nvfp4_mm`` on 16400 x 2048 weights (ragged N, 2^25 elements and more): x
    decoded to fp16 and this kernel, nothing else; NaN-poisoned output, alpha as a device
    tensor, against the oracle. The route turns the fair-share pad off: its pre-pass triggers
    late, so nothing piles up behind it."""
    import fp4mm

    N, K = 16400, 2048
    gen = torch.Generator(device="cuda").manual_seed(700 + M)
    xq = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    xs = _e4m3(M, K // 16, gen)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    ws = _e4m3(N, K // 16, gen)
    alpha = torch.tensor([1 / 64], device="cuda")
    calls = _only_this_kernel(monkeypatch, "nvfp4_mm")
    out = torch.full((M, N), float("nan"), dtype=out_dtype, device="cuda")
    fp4mm.nvfp4_mm(xq, xs, wq, ws, alpha, out_dtype=out_dtype, order=order, out=out)
    assert calls == [{"fair_share": False}]
    _check(out, reference.nvfp4_mm(xq, xs, wq, ws, 1 / 64, order=order))


# ----------------------------------------------------------------------------------------------
# GPU: 16-bit group scales (w4a16_mm at 17-32 tokens)
# ----------------------------------------------------------------------------------------------
def _grouped_problem(M, N, K, group, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    sc = (torch.rand((N, K // group), generator=gen, device="cuda") * 0.1 + 0.01).to(dtype)
    x = (torch.randn((M, K), generator=gen, device="cuda") * 0.5).to(dtype)
    return x, wq, sc


@gpu
@pytest.mark.parametrize("M", [1, 2, 3, 5, 6, 9, 10, 11, 12, 17, 19, 21, 23, 24])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("group", [32, 128])
def test_grouped_x_in_several_boxes_matches_oracle(M, dtype, group):
    """Every token count whose x is not one box of the token tile (``x_boxes``: one 2-row box
    at one token, several boxes above), ragged N, NaN-poisoned output: the boxes land where the
    one box would have put those rows."""
    assert T.x_boxes(M, T._token_tile(M), True)[1]
    x, wq, sc = _grouped_problem(M, 77, 1280, group, dtype, seed=300 + M)
    out = torch.full((M, 77), float("nan"), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, sc, 1.0, "low_first", out, group_size=group)
    _check(out, reference.w4a16_mm(x, wq, sc, group))


@gpu
@pytest.mark.parametrize("M,N,K", [(5, 16400, 512), (7, 16390, 5120), (8, 300, 5120)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_grouped_rule_at_5_to_8_tokens_matches_oracle(M, N, K, dtype):
    """The 8-token tile's own rule (four warps from 16384 rows, split 3 from K = 5120), ragged N,
    x in split boxes at 5 tokens, NaN-poisoned output."""
    cfg = T.choose_config(M, N, K, group_size=32)
    assert (cfg.warps == 4) == (N >= 16384) and (cfg.split_k == 3) == (K >= 5120)
    x, wq, sc = _grouped_problem(M, N, K, 32, dtype, seed=400 + M + K)
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, sc, 1.0, "low_first", out, group_size=32)
    _check(out, reference.w4a16_mm(x, wq, sc, 32))


@gpu
@pytest.mark.parametrize("M,N,K", [(17, 200, 512), (24, 77, 1280), (32, 130, 3072),
                                   (9, 33, 2048), (7, 90, 768), (8, 64, 1024), (1, 64, 256)])
@pytest.mark.parametrize("group", [32, 64, 128, 256, 384])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_grouped_matches_oracle(M, N, K, group, dtype, order):
    if K % group:
        pytest.skip("group does not divide K")
    x, wq, sc = _grouped_problem(M, N, K, group, dtype, seed=M * N + K + group)
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, sc, 1.0, order, out, group_size=group)
    _check(out, reference.w4a16_mm(x, wq, sc, group, order=order))


@gpu
@pytest.mark.parametrize("cfg", [C(rt, st, sp, w) for w in (1, 2, 4) for rt in (1, 2)
                                 for st in (2, 4) for sp in (1, 3, 5)], ids=str)
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32], ids=str)
def test_grouped_every_config(cfg, out_dtype):
    M, N, K = 27, 97, 2560  # 10 chunks: uneven splits, rings longer and shorter than a split
    x, wq, sc = _grouped_problem(M, N, K, 32, torch.float16, seed=6)
    out = torch.full((M, N), float("nan"), dtype=out_dtype, device="cuda")
    T.gemv_tma_sm90(x, wq, sc, 1.0, "low_first", out, config=cfg, group_size=32)
    _check(out, reference.w4a16_mm(x, wq, sc, 32))


@gpu
def test_grouped_nan_scale_reaches_exactly_its_row():
    M, N, K = 20, 70, 512
    x, wq, sc = _grouped_problem(M, N, K, 32, torch.float16, seed=4)
    sc[5, 3] = float("nan")
    out = torch.zeros((M, N), dtype=torch.float32, device="cuda")
    T.gemv_tma_sm90(x, wq, sc, 1.0, "low_first", out, group_size=32)
    nan = torch.isnan(out)
    assert nan[:, 5].all() and int(nan.sum()) == M


@gpu
def test_grouped_rejects_group_sizes_it_cannot_serve():
    x, wq, sc = _grouped_problem(20, 64, 512, 16, torch.float16, seed=1)
    out = torch.empty((20, 64), dtype=torch.float16, device="cuda")
    with pytest.raises(ValueError, match="group_size"):
        T.gemv_tma_sm90(x, wq, sc, 1.0, "low_first", out, group_size=16)


@gpu
def test_w4a16_ops_run_it_alone_above_the_ring_and_fall_back_where_it_cannot(monkeypatch):
    import fp4mm
    from fp4mm.kernels import fp4_gemv_sm90

    x, wq, sc = _grouped_problem(24, 256, 3072, 32, torch.float16, seed=13)
    ref = reference.w4a16_mm(x, wq, sc, 32)
    calls = _only_this_kernel(monkeypatch, "w4a16_mm")
    _check(fp4mm.w4a16_mm(x, wq, sc, 32), ref)
    assert calls == [{"group_size": 32}]
    monkeypatch.undo()
    # K % 256 != 0: the plain-Triton GEMV, never the register ring at 24 tokens
    x, wq, sc = _grouped_problem(24, 64, 384, 32, torch.float16, seed=14)
    monkeypatch.setattr(fp4_gemv_sm90, "gemv_sm90", _forbidden)
    monkeypatch.setattr(T, "gemv_tma_sm90", _forbidden)
    _check(fp4mm.w4a16_mm(x, wq, sc, 32), reference.w4a16_mm(x, wq, sc, 32))
