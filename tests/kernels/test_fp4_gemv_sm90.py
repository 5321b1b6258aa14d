"""fp4_gemv_sm90 (Gluon decode GEMV, sm_90a): compile-only checks on any machine, numerics on an
sm_90 GPU.

Gluon cannot run in Triton's interpreter; its interpreter-tested twin is fp4mm/kernels/fp4_gemv.py.
CPU (CI): the K permutation is a bijection that keeps each (2j, 2j+1) pair together; every config
the heuristic ships compiles for sm_90a with no spills, no shared memory, mma.sync, and 16-byte
weight loads; the ops send Hopper decode shapes to it and nothing else.
GPU: vs the fp32 oracle on fresh random inputs (ragged N, M = 1..64, several K, both nibble
orders, split-K, every config knob), an identity-activation probe (output = dequantised weight,
bit for bit), NaN scale propagation, unaligned operands falling back to the Triton GEMV.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import itertools
import os
import re

import pytest
import torch

from fp4mm import reference
from fp4mm.formats import dequantize_nvfp4_blocks

S = pytest.importorskip("fp4mm.kernels.fp4_gemv_sm90")
_spec = importlib.util.spec_from_file_location(
    "_ptxas", os.path.join(os.path.dirname(__file__), "_ptxas.py"))
_ptxas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ptxas)

HAS_SM90 = torch.cuda.is_available() and S.is_hopper("cuda")
gpu = pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 CUDA device")


# ----------------------------------------------------------------------------------------------
# CPU
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ks", [128, 256])
def test_k_permutation_is_a_bijection_keeping_pairs(ks):
    phys = [S._slot_to_phys(k, ks) for k in range(ks)]
    assert sorted(phys) == list(range(ks))
    # the two values of an fp16x2 register (slots 2j, 2j+1) are neighbours in one code byte
    assert all(S._slot_to_phys(k ^ 1, ks) == S._slot_to_phys(k, ks) ^ 1 for k in range(ks))
    # each thread (lane c = slot bits 1-2) owns ks/4 contiguous physical values: 16-byte loads
    for c in range(4):
        mine = sorted(S._slot_to_phys(k, ks) for k in range(ks) if (k >> 1) & 3 == c)
        assert mine == list(range(ks // 4 * c, ks // 4 * (c + 1)))


def test_config_validity_and_heuristic():
    assert S.config_is_valid(S.GemvSM90Config())
    for bad in (dict(num_warps=3), dict(prefetch=3), dict(split_k=0), dict(row_tiles=4),
                dict(l2_ahead=-1), dict(k_step=64)):
        assert not S.config_is_valid(dataclasses.replace(S.GemvSM90Config(), **bad))
    for M, N, K, fp4 in itertools.product((1, 4, 16, 32), (64, 8192, 18432), (128, 3072, 8192),
                                          (False, True)):
        cfg = S.choose_config(M, N, K, fp4)
        assert S.config_is_valid(cfg), (M, N, K, cfg)
        assert cfg.split_k <= K // S.KS
    # the measured picks (run 5 and the grouped run, H100)
    assert S.choose_config(1, 18432, 3072) == S.GemvSM90Config(2, 1, 2, 0, 1)
    assert S.choose_config(1, 18432, 3072, True) == S.GemvSM90Config(2, 1, 4, 0, 2)
    assert S.choose_config(1, 8192, 8192).split_k == 4
    assert S.choose_config(4, 18432, 3072, True).split_k == 3
    assert S.choose_config(16, 18432, 3072) == S.GemvSM90Config(1, 1, 1, 0, 2)
    # long K, 16-bit x (session 38): where the warps rule wants more than its 4 splits, split on
    # until no CTA streams more than 32 steps; not where 4 splits hold its target, nor for W4A4
    assert S.choose_config(1, 5120, 27648, bf16_x=True).split_k == 7  # 216 steps, wants 7
    assert S.choose_config(1, 8192, 28672).split_k == 4  # wants round(4.5) = 4
    assert S.choose_config(8, 5120, 27648, True).split_k == 4
    # 16-bit x where the warps rule wants twice its cap (session 39): up to 8 splits, no more than
    # it wants, each of >= 8 steps (>= 4 on fewer row warps than SMs); not below twice the cap
    assert S.choose_config(1, 3584, 18944, group_size=32).split_k == 8  # wants 10, 148 steps
    assert S.choose_config(1, 4096, 14336, bf16_x=True).split_k == 8  # wants 9, 112 steps
    assert S.choose_config(2, 2048, 8192).split_k == 8  # wants 18, 64 steps
    assert S.choose_config(1, 1024, 4096).split_k == 8  # 64 row warps: splits of 4 steps
    assert S.choose_config(1, 2048, 2048).split_k == 4  # 16 steps: 4 splits of 4
    assert S.choose_config(1, 3072, 3072).split_k == 4  # 192 row warps: 8 steps, 24 of them
    assert S.choose_config(4, 5120, 5120, group_size=32).split_k == 5  # wants 14, 40 steps
    assert S.choose_config(4, 10240, 8192, group_size=32).split_k == 4  # wants 7
    assert S.choose_config(1, 6144, 4096).split_k == 4  # wants 6
    # 16-bit group scales: as MMA columns up to 8 columns (tokens x groups of a 128-K step;
    # groups of 16 up to 16), then per half step up to 8, else one MMA chain per group
    # (session 26)
    gc = S.GemvSM90Config(2, 1, 2, 0, 1, group_cols=128)
    assert S.choose_config(1, 18432, 3072, group_size=32) == gc
    assert S.choose_config(2, 18432, 3072, group_size=32) == gc
    assert S.choose_config(4, 18432, 3072, group_size=64) == gc
    assert [S.choose_config(M, 18432, 3072, group_size=16) for M in (1, 2)] == [gc, gc]
    assert S.choose_config(1, 8192, 8192, group_size=32).split_k == 4
    # bf16 x (a longer decode) splits to twice the warps
    assert [S.choose_config(1, n, k, group_size=32, bf16_x=bf).split_k
            for n, k in ((28672, 4096), (18432, 3072)) for bf in (False, True)] == [1, 3, 2, 4]
    half = S.GemvSM90Config(2, 1, 4, 0, 1, group_cols=64)
    assert [S.choose_config(M, 18432, 3072, group_size=32) for M in (3, 4)] == [half, half]
    assert [S.choose_config(M, 18432, 3072, group_size=64) for M in (5, 8)] == [half, half]
    assert S.choose_config(4, 28672, 4096, group_size=32).split_k == 3
    for M, group in ((5, 32), (16, 32), (9, 64)):
        assert S.choose_config(M, 18432, 3072, group_size=group) == S.GemvSM90Config(1, 1, 1, 0,
                                                                                     1)
    assert S.choose_config(1, 18432, 3072, group_size=128) == S.GemvSM90Config(1, 1, 2, 0, 1)
    assert S.choose_config(16, 18432, 3072, group_size=128).row_tiles == 1
    # W4A4 at 33-64 tokens: one row tile (two spill there)
    # W4A4 above 32 tokens: two row tiles with x held one step ahead (no spill)
    assert S.choose_config(64, 18432, 3072, True) == S.GemvSM90Config(2, 1, 3, 0, 2, x_ahead=True)
    assert S.choose_config(33, 8192, 8192, True) == S.GemvSM90Config(2, 1, 4, 0, 2, x_ahead=True)
    assert S.choose_config(32, 18432, 3072, True).row_tiles == 2
    # W4A4 at 9-16 tokens: up to a full wave of splits of >= 4 steps (8 before session 39), never
    # fewer than above
    assert [S.choose_config(16, n, k, True).split_k for n, k in
            ((18432, 3072), (8192, 8192), (5120, 5120), (3072, 3072), (1024, 4096),
             (4608, 3584), (2048, 2048), (11008, 4096))] == [3, 8, 8, 6, 8, 7, 4, 6]
    assert S.choose_config(12, 4096, 4096, True).split_k == 8
    assert not S.choose_config(32, 18432, 3072, True).x_ahead
    assert not S.config_is_valid(S.GemvSM90Config(x_ahead=1))
    for bad in (1, True, 32, 256):
        assert not S.config_is_valid(S.GemvSM90Config(group_cols=bad))


def test_group_columns_are_tokens_times_groups_per_step_padded_like_token_tiles():
    assert [S.group_columns(M, 32) for M in (1, 2, 3, 4)] == [8, 8, 16, 16]
    assert [S.group_columns(M, 16) for M in (1, 2)] == [8, 16]
    assert [S.group_columns(M, 64) for M in (1, 4, 5, 8)] == [8, 8, 16, 16]
    assert [S.group_columns(M, 32, 64) for M in (1, 4, 5)] == [8, 8, 16]
    assert [S.group_columns(M, 64, 64) for M in (1, 8, 9)] == [8, 8, 16]
    # every group size the column forms serve fits GROUP_COLS_MAX at its token limit, not above
    for block, group in ((128, 16), (128, 32), (128, 64), (64, 32), (64, 64)):
        top = S.group_cols_max_m(group, block)
        assert S.group_columns(top, group, block) == S.GROUP_COLS_MAX
        assert S.group_columns(top + 1, group, block) > S.GROUP_COLS_MAX
    assert S.max_m(False, 16) == 2


def test_token_limits_cover_the_dispatch_and_are_enforced():
    from fp4mm.kernels import fp4_gemv_tma_sm90
    from fp4mm.ops.dispatch import GEMV_SM90_MAX_M, GEMV_SM90_RING_MAX_M_GROUPED

    assert GEMV_SM90_MAX_M["nvfp4_mm"] <= S.max_m(True)
    assert GEMV_SM90_MAX_M["nvfp4_w4a16_mm"] <= S.max_m(False)
    # group scales: the ring up to its limit, the TMA-fed GEMV above it
    assert GEMV_SM90_RING_MAX_M_GROUPED <= S.max_m(False, 32)
    assert GEMV_SM90_MAX_M["w4a16_mm"] <= fp4_gemv_tma_sm90.MAX_M
    assert S.max_m(True) == S.MAX_M and S.max_m(False, 128) <= S.max_m(False) <= S.MAX_M
    # the launcher refuses a token count its kind does not compile cleanly for, before any
    # launch (so this runs on the CPU)
    K, N = 256, 16
    w_q = torch.zeros((N, K // 2), dtype=torch.uint8)
    w_s = torch.zeros((N, K // 16), dtype=torch.uint8)
    out = torch.empty((S.max_m(False) + 1, N), dtype=torch.float16)
    x = torch.zeros((S.max_m(False) + 1, K), dtype=torch.float16)
    with pytest.raises(ValueError, match="x: expected 1 to 32 rows"):
        S.gemv_sm90(x, None, w_q, w_s, 1.0, "low_first", out)
    g = torch.zeros((N, K // 32), dtype=torch.float16)
    with pytest.raises(ValueError, match="x: expected 1 to 16 rows"):
        S.gemv_sm90(x[:17], None, w_q, g, 1.0, "low_first", out[:17], group_size=32)
    g16 = torch.zeros((N, K // 16), dtype=torch.float16)
    with pytest.raises(ValueError, match="x: expected 1 to 2 rows"):
        S.gemv_sm90(x[:3], None, w_q, g16, 1.0, "low_first", out[:3], group_size=16)
    # the column form only where it applies: groups of 16-64, at most GROUP_COLS_MAX columns
    for block, group, M in ((128, 128, 1), (128, 32, 5), (64, 16, 1), (64, 32, 9)):
        gs = torch.zeros((N, K // group), dtype=torch.float16)
        with pytest.raises(ValueError, match=f"config: group_cols={block} needs"):
            S.gemv_sm90(x[:M], None, w_q, gs, 1.0, "low_first", out[:M], group_size=group,
                        config=S.GemvSM90Config(group_cols=block))
    with pytest.raises(ValueError, match="group_size: expected"):  # 16 needs the column form
        S.gemv_sm90(x[:1], None, w_q, g16, 1.0, "low_first", out[:1], group_size=16,
                    config=S.GemvSM90Config())
    assert not S.is_supported(torch.device("cpu"), 1, K, x)  # not Hopper


def _ops_choose(monkeypatch, op, M, K, hopper=True, group_size=None):
    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")  # the package re-exports the function
    monkeypatch.setattr(ops, "is_hopper", lambda device: hopper)
    return ops.choose_kernel(op, M, 18432, K, torch.device("cpu"), group_size)


@pytest.mark.parametrize("op,group", [("nvfp4_mm", None), ("nvfp4_w4a16_mm", None),
                                      ("w4a16_mm", 32), ("w4a16_mm", 64), ("w4a16_mm", 128),
                                      ("w4a16_mm", 384)])
def test_ops_route_hopper_decode_here(monkeypatch, op, group):
    from fp4mm.ops.dispatch import (
        GEMV_SM90_MAX_M,
        GEMV_SM90_RING_MAX_M_GROUPED,
        gemv_max_m,
        tma_min_m_grouped,
    )

    top = GEMV_SM90_MAX_M[op]
    if op == "w4a16_mm" and tma_min_m_grouped(group) is None:  # the ring only
        top = GEMV_SM90_RING_MAX_M_GROUPED
    assert _ops_choose(monkeypatch, op, 1, 3072, group_size=group) == "gemv_sm90"
    assert _ops_choose(monkeypatch, op, top, 3072, group_size=group) == "gemv_sm90"
    # above it: the plain-Triton GEMV, or the GEMM where the Gluon GEMV reaches the GEMV range
    above = "gemv" if top + 1 <= gemv_max_m(op, None, group) else "gemm_sm90"
    assert _ops_choose(monkeypatch, op, top + 1, 3072, group_size=group) == above
    assert _ops_choose(monkeypatch, op, 1, 3072 + 64, group_size=group) == "gemv"  # K % 128
    assert _ops_choose(monkeypatch, op, 1, 3072, hopper=False, group_size=group) == "gemv"


def test_ops_keep_narrow_w4a4_above_32_tokens_on_the_triton_gemv(monkeypatch):
    from fp4mm.ops.dispatch import GEMV_SM90_MIN_N_ABOVE_32, gemv_sm90_max_m

    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")
    monkeypatch.setattr(ops, "is_hopper", lambda device: True)
    wide, narrow = GEMV_SM90_MIN_N_ABOVE_32, GEMV_SM90_MIN_N_ABOVE_32 - 1
    cpu = torch.device("cpu")
    assert gemv_sm90_max_m("nvfp4_mm", wide) == 64 and gemv_sm90_max_m("nvfp4_mm", narrow) == 32
    assert ops.choose_kernel("nvfp4_mm", 33, wide, 3072, cpu) == "gemv_sm90"
    assert ops.choose_kernel("nvfp4_mm", 33, narrow, 3072, cpu) == "gemv"
    assert ops.choose_kernel("nvfp4_mm", 32, narrow, 3072, cpu) == "gemv_sm90"
    assert gemv_sm90_max_m("nvfp4_w4a16_mm", narrow) == 32


@pytest.mark.parametrize("group", [2, 4, 8, 48, 96, 160])
def test_ops_keep_other_groups_on_the_triton_gemv(monkeypatch, group):
    assert not S.group_size_is_supported(group)
    assert _ops_choose(monkeypatch, "w4a16_mm", 1, 3840, group_size=group) == "gemv"


def test_ops_route_groups_of_16_here_up_to_two_tokens(monkeypatch):
    assert S.group_size_is_supported(16)
    assert _ops_choose(monkeypatch, "w4a16_mm", 1, 3072, group_size=16) == "gemv_sm90"
    assert _ops_choose(monkeypatch, "w4a16_mm", 2, 3072, group_size=16) == "gemv_sm90"
    assert _ops_choose(monkeypatch, "w4a16_mm", 3, 3072, group_size=16) == "gemv"


@pytest.mark.parametrize("span", [0, 2, 4])
def test_blocked_permutations_put_each_block_of_mmas_on_one_run_of_k(span):
    """Span s (2: the chains' 32-groups, 4: the halves of the per-half column form; 0: the
    plain form, one block of 8): MMAs ``s b .. s b + s - 1`` hold exactly physical K
    ``16 s b .. 16 s (b + 1)``, and thread c 4 s contiguous values of each block (one load)."""
    s = span or 8
    phys = [S._slot_to_phys(k, S.KS, span) for k in range(S.KS)]
    assert sorted(phys) == list(range(S.KS))
    assert all(S._slot_to_phys(k ^ 1, S.KS, span) == phys[k] ^ 1 for k in range(S.KS))
    for b in range(8 // s):
        block = phys[16 * s * b:16 * s * (b + 1)]
        assert sorted(block) == list(range(16 * s * b, 16 * s * (b + 1)))
        for c in range(4):
            mine = sorted(p for k, p in enumerate(block) if (k >> 1) & 3 == c)
            start = 16 * s * b + 4 * s * c
            assert mine == list(range(start, start + 4 * s))


def _shipped() -> list[tuple]:
    """(x kind, NT, config) of every specialisation the heuristic returns at the decode shapes,
    for W4A4 and fp16/bf16 x at every token tile the kernel accepts for that kind
    (``S.max_m``), both nibble orders on one of them, fp32 output once."""
    cases = set()
    shapes = ((18432, 3072), (8192, 8192), (3072, 3072))
    for M, (N, K) in itertools.product((1, 4, 16, 32, 64), shapes):
        for x in ("fp4", "fp16", "bf16"):
            if M > S.max_m(x == "fp4"):
                continue
            cfg = S.choose_config(M, N, K, x == "fp4")
            partial = S._plan(K // S.KS, cfg)[0] > 1
            cases.add((x, S._token_tile(M), cfg.num_warps, cfg.prefetch, cfg.l2_ahead,
                       cfg.row_tiles, partial, False, "fp16", 0, cfg.x_ahead, False))
        for x, group in itertools.product(("fp16", "bf16"), (16, 32, 64, 128, 256)):
            for m in sorted({M, 2, 4, 8}):  # the column forms' limits
                if m > S.max_m(False, group):
                    continue
                cfg = S.choose_config(m, N, K, False, group, bf16_x=x == "bf16")
                partial = S._plan(K // S.KS, cfg)[0] > 1
                nt = (S.group_columns(m, group, cfg.group_cols) if cfg.group_cols
                      else S._token_tile(m))
                cases.add((x, nt, cfg.num_warps, cfg.prefetch, cfg.l2_ahead, cfg.row_tiles,
                           partial, False, "fp16", group, cfg.x_ahead, cfg.group_cols))
    cases.add(("fp4", 8, 2, 1, 0, 2, False, True, "fp32", 0, False, False))  # high_first, fp32
    cases.add(("fp4", 64, 2, 1, 0, 2, False, False, "fp16", 0, True, False))  # x ahead, no split
    # alpha read from a device tensor (fp4mm.kernels.alpha): where the GEMV applies it itself
    cases = {c + (False,) for c in cases} | {c + (True,) for c in cases if not c[6] and not c[9]}
    return sorted(cases)


SHIPPED = _shipped()


def compile_report(x, nt, nw, pf, l2, rt, partial, high, out, group, x_ahead=False,
                   group_cols=0, alpha_ptr=False) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    args = ["x_ptr", "xs_ptr", "w_ptr", "ws_ptr", "out_ptr", "M", "N", "STEPS", "STEPS_SPLIT",
            "alpha", "alpha_ptr", "stride_xm", "stride_xsm", "stride_wn", "stride_wsn",
            "stride_om"]
    # E4M3 pairs, or per row and step one packed word of group scales, or (group_cols) the
    # 16-bit scales themselves
    scales = ({"fp16": "*fp16", "bf16": "*bf16"}[x] if group_cols
              else {0: "*i16", 32: "*i64", 64: "*i32"}.get(group, "*i16"))
    pdl = S._uses_pdl(partial, group or None, nt)
    dtype = gl.bfloat16 if x == "bf16" else gl.float16
    types = ["*i32", "*i16", "*i32", scales, "*fp32" if partial else f"*{out}", "i32", "i32",
             "i32", "i32", "fp32", "*fp32", "i32", "i32", "i32", "i32", "i32"]
    consts = dict(X_FP4=x == "fp4", DTYPE=dtype, NT=nt,
                  HIGH_FIRST=high, PREFETCH=pf, PARTIAL=partial, L2_AHEAD=l2, MASKED=False,
                  ROW_TILES=rt, KSTEP=S.KS, W_GROUP=group, SDTYPE=dtype, PDL=pdl,
                  ALPHA_PTR=alpha_ptr, X_AHEAD=x_ahead, COLS_K=group_cols)
    sig = dict(zip(args, types)) | {k: "constexpr" for k in consts}
    div = (0, 1, 2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15)
    src = GluonASTSource(S._fp4_gemv_sm90_kernel, sig, constexprs=consts,
                         attrs={(i,): [["tt.divisibility", 16]] for i in div})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": nw, "launch_pdl": pdl})
    ptx = k.asm["ptx"]
    log = _ptxas.ptxas_log(ptx)
    mma = re.findall(r"mma\.sync\.aligned\.m16n8k16", ptx)
    return {"log": log, "mma": len(mma), "pdl": pdl,
            "gdc": len(re.findall(r"griddepcontrol\.\w+", ptx)),
            "ld_v4": len(re.findall(r"ld\.global(\.[\w:]+)*\.v4\.[bu]32", ptx)),
            "w_evict_first_asm": len(re.findall(r"ld\.global\.L1::evict_first\.v4\.u32", ptx)),
            "w_evict_first_triton": len(re.findall(
                r"ld\.global\.L1::evict_first\.L2::cache_hint", ptx)),
            "shared_ops": len(re.findall(r"(ld|st)\.shared", ptx)), "shared": k.metadata.shared}


@pytest.fixture(scope="module")
def compile_reports():
    return dict(zip(SHIPPED, _ptxas.compile_in_child(__file__)))


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: "-".join(map(str, c)))
def test_shipped_configs_compile_without_spills_or_shared_memory(compile_reports, case):
    rep = compile_reports[case]
    assert "0 bytes spill stores, 0 bytes spill loads" in rep["log"], rep["log"]
    assert rep["shared_ops"] == 0 and rep["shared"] == 0  # global -> registers -> MMA
    assert rep["mma"] > 0
    assert rep["gdc"] == 2 * rep["pdl"]  # split K: PDL wait + launch_dependents
    assert rep["ld_v4"] > 0  # NVFP4: one 16-byte load per thread, row and step; grouped: x
    # the weight words load evict-first: NVFP4 and the columns per step by asm, L1 only
    # (16-byte runs), one load per ring slot; the chains (4-byte words) and the columns per
    # half step (8-byte runs) by Triton's hint
    group, group_cols = case[9], case[11]
    if group and group_cols != 128:
        assert rep["w_evict_first_asm"] == 0 and rep["w_evict_first_triton"] > 0
    else:
        assert rep["w_evict_first_asm"] > 0 and rep["w_evict_first_triton"] == 0


# ----------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------
def _e4m3(rows, cols, gen):
    return (torch.rand((rows, cols), device="cuda", generator=gen) * 1.5 + 0.5).to(
        torch.float8_e4m3fn).view(torch.uint8)


def _problem(M, N, K, x_kind, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    ws = _e4m3(N, K // 16, gen)
    if x_kind == "fp4":
        x = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
        return x, _e4m3(M, K // 16, gen), wq, ws
    dt = torch.bfloat16 if x_kind == "bf16" else torch.float16
    return (torch.randn((M, K), device="cuda", generator=gen) * 0.5).to(dt), None, wq, ws


def _oracle(x, xs, wq, ws, alpha, order):
    if xs is not None:
        return reference.nvfp4_mm(x, xs, wq, ws, alpha, order=order)
    return (x.float() @ dequantize_nvfp4_blocks(wq, ws, order).T) * alpha


def _check(out, ref):
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN outputs"
    u = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 0.0}[out.dtype]
    tol = ref.abs() * u * 1.01 + ref.abs().amax() * 2.0**-19
    err = (out.float() - ref).abs()
    assert bool((err <= tol).all()), f"max excess {float((err - tol).max())}"


@gpu
@pytest.mark.parametrize("M,N,K", [(1, 200, 128), (3, 77, 384), (8, 130, 256), (13, 64, 512),
                                   (16, 250, 3072), (33, 96, 640), (64, 40, 256), (1, 4099, 1152)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("x_kind", ["fp4", "fp16", "bf16"])
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_matches_oracle(M, N, K, x_kind, order):
    x, xs, wq, ws = _problem(M, N, K, x_kind, seed=M * 31 + N)
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    if M > S.max_m(x_kind == "fp4"):  # 16-bit x above 32 tokens would spill: refused
        with pytest.raises(ValueError, match="x: expected 1 to 32 rows"):
            S.gemv_sm90(x, xs, wq, ws, 0.375, order, out)
        assert torch.isnan(out).all()
        return
    S.gemv_sm90(x, xs, wq, ws, 0.375, order, out)
    _check(out, _oracle(x, xs, wq, ws, 0.375, order))


@gpu
@pytest.mark.parametrize("cfg", [S.GemvSM90Config(nw, pf, sp, l2, rt)
                                 for nw, pf, sp, l2, rt in itertools.product(
                                     (1, 2, 4, 8), (1, 2), (1, 3), (0, 4), (1, 2))],
                         ids=lambda c: f"w{c.num_warps}p{c.prefetch}s{c.split_k}l{c.l2_ahead}"
                                       f"r{c.row_tiles}")
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_every_config(cfg, out_dtype):
    # 5 K steps: 3 splits of 2, 2, 1 (prefetch 1) or 3, 2 (prefetch 2: masked ring tails)
    x, xs, wq, ws = _problem(5, 300, 640, "fp4", seed=cfg.num_warps)
    out = torch.full((5, 300), float("nan"), dtype=out_dtype, device="cuda")
    S.gemv_sm90(x, xs, wq, ws, 1.0, "low_first", out, config=cfg)
    _check(out, _oracle(x, xs, wq, ws, 1.0, "low_first"))


@gpu
@pytest.mark.parametrize("M,N,K", [(9, 8200, 8192), (16, 5120, 5120), (12, 4608, 3584),
                                   (12, 300, 1152)], ids=str)
def test_w4a4_wave_splits_match_oracle(M, N, K):
    # 9-16 W4A4 tokens split K up to a full wave: 8 splits of 8 steps, 8 of 5, 7 of 4, and 3
    # splits of 4, 4, 1 steps (masked ring tail) where the old rule's 4 stands
    x, xs, wq, ws = _problem(M, N, K, "fp4", seed=M + N)
    cfg = S.choose_config(M, N, K, True)
    assert cfg.split_k == {8200: 8, 5120: 8, 4608: 7, 300: 4}[N]
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    S.gemv_sm90(x, xs, wq, ws, 0.25, "low_first", out)
    _check(out, _oracle(x, xs, wq, ws, 0.25, "low_first"))


@gpu
@pytest.mark.parametrize("M,x_kind,late", [(4, "fp4", False), (5, "fp4", True), (16, "fp4", True),
                                           (16, "bf16", False)], ids=str)
def test_reduce_lets_the_next_kernel_launch_late_behind_w4a4_from_5_tokens(monkeypatch, M, x_kind,
                                                                         late):
    """The split-K reduce of W4A4 at REDUCE_PDL_LATE_MIN_M_W4A4 tokens or more triggers the next
    launch after its stores (session 32); the sum stays exact either way."""
    from fp4mm.kernels import fp4_gemv

    real, asked = fp4_gemv.reduce_partials, []

    def spy(part, out, alpha, **kw):
        asked.append(kw)
        return real(part, out, alpha, **kw)

    monkeypatch.setattr(fp4_gemv, "reduce_partials", spy)
    x, xs, wq, ws = _problem(M, 300, 1024, x_kind, seed=M)
    out = torch.full((M, 300), float("nan"), dtype=torch.float32, device="cuda")
    S.gemv_sm90(x, xs, wq, ws, 0.5, "low_first", out,
                config=S.GemvSM90Config(4, 1, 2, 0, 1))
    assert asked == [{"pdl": True, "pdl_late": late}]
    _check(out, _oracle(x, xs, wq, ws, 0.5, "low_first"))


@gpu
@pytest.mark.parametrize("M", [5, 33, 64])
@pytest.mark.parametrize("x_kind", ["fp4", "fp16"])
def test_x_ahead_matches_oracle(M, x_kind):
    # x one step ahead of the ring: 5 K steps give masked ring tails (prefetch 2, and split 3
    # with prefetch 1), a NaN-poisoned fp32 output shows any unwritten element
    if M > S.max_m(x_kind == "fp4"):
        pytest.skip("16-bit x serves at most 32 tokens")
    x, xs, wq, ws = _problem(M, 300, 640, x_kind, seed=M)
    ref = _oracle(x, xs, wq, ws, 0.5, "high_first")
    for nw, pf, split, rt in itertools.product((1, 2), (1, 2), (1, 3), (1, 2)):
        cfg = S.GemvSM90Config(nw, pf, split, 0, rt, x_ahead=True)
        out = torch.full((M, 300), float("nan"), dtype=torch.float32, device="cuda")
        S.gemv_sm90(x, xs, wq, ws, 0.5, "high_first", out, config=cfg)
        _check(out, ref)


@gpu
@pytest.mark.parametrize("x_kind", ["fp4", "fp16"])
def test_k_step_256_matches_oracle(x_kind):
    x, xs, wq, ws = _problem(9, 300, 1280, x_kind, seed=5)  # 5 steps of 256: masked ring tails
    out = torch.full((9, 300), float("nan"), dtype=torch.float32, device="cuda")
    for cfg in (S.GemvSM90Config(k_step=256, split_k=1), S.GemvSM90Config(k_step=256, split_k=2),
                S.GemvSM90Config(k_step=256, row_tiles=2, num_warps=2)):
        S.gemv_sm90(x, xs, wq, ws, 1.0, "high_first", out, config=cfg)
        _check(out, _oracle(x, xs, wq, ws, 1.0, "high_first"))


@gpu
@pytest.mark.parametrize("x_dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_identity_probe_gives_the_dequantised_weight_bit_for_bit(x_dtype, order):
    """fp16 x decodes through E4M3 conversions, bf16 x through byte tables (fp4_decode): every
    code byte, both nibble orders, land on the dequantised weight exactly."""
    K, N = 256, 48
    T = S.max_m(False)  # K positions per call: one per token
    x, _, wq, ws = _problem(T, N, K, "fp16", seed=3)
    wq[:, :128] = torch.arange(256, dtype=torch.uint8, device="cuda").view(2, 128)[
        torch.arange(N, device="cuda") % 2]  # every byte value, in both row parities
    out = torch.full((T, N), float("nan"), dtype=torch.float32, device="cuda")
    for k0 in range(0, K, T):
        eye = torch.zeros((T, K), dtype=x_dtype, device="cuda")
        eye[torch.arange(T), k0 + torch.arange(T)] = 1.0
        S.gemv_sm90(eye, None, wq, ws, 1.0, order, out)
        ref = dequantize_nvfp4_blocks(wq, ws, order)[:, k0:k0 + T].T
        assert torch.equal(out, ref)


@gpu
def test_nan_scale_bytes_propagate_to_exactly_their_outputs():
    x, xs, wq, ws = _problem(5, 70, 256, "fp4", seed=9)
    ws[3, 2] = 0x7F  # weight row 3
    xs[1, 5] = 0xFF  # token 1
    out = torch.empty((5, 70), dtype=torch.float32, device="cuda")
    S.gemv_sm90(x, xs, wq, ws, 1.0, "low_first", out, config=S.GemvSM90Config(split_k=2))
    nan = torch.isnan(out)
    assert nan[:, 3].all() and nan[1, :].all()
    assert int(nan.sum()) == 5 + 70 - 1


@gpu
def test_ops_run_it_alone(monkeypatch):
    """Regression: the ops ran the Gluon GEMV and then, falling through, the GEMM as well (right
    answer, 3x the time; found by `fp4mm bench --timer graph`)."""
    import fp4mm
    from fp4mm.kernels import fp4_gemm, fp4_gemm_sm90, fp4_gemv

    def forbidden(*args, **kwargs):
        raise AssertionError("a second kernel ran")
    for mod, name in ((fp4_gemm, "nvfp4_mm_gemm"), (fp4_gemm, "nvfp4_w4a16_mm_gemm"),
                      (fp4_gemm_sm90, "fp4_gemm_sm90"), (fp4_gemm_sm90, "fp4_gemm_sm90_w4a16"),
                      (fp4_gemv, "nvfp4_mm_gemv"), (fp4_gemv, "nvfp4_w4a16_mm_gemv")):
        monkeypatch.setattr(mod, name, forbidden)
    x, xs, wq, ws = _problem(4, 256, 3072, "fp4", seed=12)
    _check(fp4mm.nvfp4_mm(x, xs, wq, ws, 0.5, out_dtype=torch.float32),
           reference.nvfp4_mm(x, xs, wq, ws, 0.5))
    xh = torch.randn((4, 3072), device="cuda").half()
    _check(fp4mm.nvfp4_w4a16_mm(xh, wq, ws, 2.0), reference.nvfp4_w4a16_mm(xh, wq, ws, 2.0))


@gpu
def test_ops_use_it_and_fall_back_on_unaligned_operands():
    import fp4mm

    x, xs, wq, ws = _problem(4, 256, 3072, "fp4", seed=11)
    ref = reference.nvfp4_mm(x, xs, wq, ws, 0.5)
    _check(fp4mm.nvfp4_mm(x, xs, wq, ws, 0.5, out_dtype=torch.float32), ref)
    # a view 8 bytes into a buffer: not 16-byte aligned, so the Triton GEMV serves it
    buf = torch.empty((4 * 1536 + 8,), dtype=torch.uint8, device="cuda")
    xu = buf[8:].view(4, 1536)
    xu.copy_(x)
    assert not S.is_supported(xu.device, 4, 3072, xu)
    _check(fp4mm.nvfp4_mm(xu, xs, wq, ws, 0.5, out_dtype=torch.float32), ref)


# ---- 16-bit group scales (w4a16_mm)
def _grouped(M, N, K, group, dt, seed, lo=0.01, hi=0.11):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    sc = (torch.rand((N, K // group), device="cuda", generator=gen) * (hi - lo) + lo).to(dt)
    x = (torch.randn((M, K), device="cuda", generator=gen) * 0.5).to(dt)
    return x, wq, sc


@gpu
@pytest.mark.parametrize("M,N,K", [(1, 200, 256), (3, 77, 512), (8, 130, 1024),
                                   (16, 250, 3072), (13, 64, 1536), (1, 4099, 768)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("group", [32, 64, 128, 256])
@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_grouped_matches_oracle(M, N, K, group, dt, order):
    if K % group:
        pytest.skip("group does not divide K")
    x, wq, sc = _grouped(M, N, K, group, dt, seed=M * 7 + group)
    for out_dtype in (torch.float32, dt):
        out = torch.full((M, N), float("nan"), dtype=out_dtype, device="cuda")
        S.w4a16_mm_gemv_sm90(x, wq, sc, group, order, out)
        _check(out, reference.w4a16_mm(x, wq, sc, group, order=order))


@gpu
@pytest.mark.parametrize("cfg", [S.GemvSM90Config(nw, pf, sp, 0, rt)
                                 for nw, pf, sp, rt in itertools.product(
                                     (1, 2, 4, 8), (1, 2), (1, 3), (1, 2))],
                         ids=lambda c: f"w{c.num_warps}p{c.prefetch}s{c.split_k}r{c.row_tiles}")
@pytest.mark.parametrize("group", [32, 64, 384])
def test_grouped_every_config(cfg, group):
    x, wq, sc = _grouped(5, 300, 768, group, torch.float16, seed=cfg.num_warps)  # 6 K steps
    out = torch.full((5, 300), float("nan"), dtype=torch.float32, device="cuda")
    S.w4a16_mm_gemv_sm90(x, wq, sc, group, "low_first", out, config=cfg)
    _check(out, reference.w4a16_mm(x, wq, sc, group))


# (block, group): the groups of each 128-K step or 64-K half as MMA columns
_COL_FORMS = [(128, 16), (128, 32), (128, 64), (64, 32), (64, 64)]


@gpu
@pytest.mark.parametrize("block,group", _COL_FORMS, ids=lambda v: str(v))
@pytest.mark.parametrize("dt", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_group_cols_match_oracle(block, group, dt, order):
    """The groups as MMA columns, at 1 token up to the column limit, on shapes with a partial
    row tile, one K step, K not a multiple of the ring and a split K."""
    top = S.group_cols_max_m(group, block)
    for M, N, K in ((1, 1, 128), (1, 130, 640), (top, 77, 384), (max(1, top - 1), 4099, 3072)):
        x, wq, sc = _grouped(M, N, K, group, dt, seed=M * 5 + N + group)
        ref = reference.w4a16_mm(x, wq, sc, group, order=order)
        for cfg in (S.GemvSM90Config(2, 1, 2, 0, 1, group_cols=block),
                    S.GemvSM90Config(1, 2, 3, 0, 2, group_cols=block)):
            for out_dtype in (torch.float32, dt):
                out = torch.full((M, N), float("nan"), dtype=out_dtype, device="cuda")
                S.w4a16_mm_gemv_sm90(x, wq, sc, group, order, out, config=cfg)
                _check(out, ref)


@gpu
@pytest.mark.parametrize("cfg", [S.GemvSM90Config(nw, pf, sp, 0, rt)
                                 for nw, pf, sp, rt in itertools.product(
                                     (1, 2, 4, 8), (1, 2), (1, 3), (1, 2))],
                         ids=lambda c: f"w{c.num_warps}p{c.prefetch}s{c.split_k}r{c.row_tiles}")
@pytest.mark.parametrize("block,group", [(128, 16), (128, 32), (64, 32), (64, 64)],
                         ids=lambda v: str(v))
def test_group_cols_every_config(cfg, block, group):
    cfg = dataclasses.replace(cfg, group_cols=block)
    M = S.group_cols_max_m(group, block)
    x, wq, sc = _grouped(M, 300, 768, group, torch.float16, seed=cfg.num_warps)  # 6 K steps
    out = torch.full((M, 300), float("nan"), dtype=torch.float32, device="cuda")
    S.w4a16_mm_gemv_sm90(x, wq, sc, group, "low_first", out, config=cfg)
    _check(out, reference.w4a16_mm(x, wq, sc, group))


@gpu
@pytest.mark.parametrize("lo,hi", [(3e4, 6e4), (1e-7, 1e-6)])
@pytest.mark.parametrize("group_cols", [0, 128, 64])
def test_grouped_is_exact_for_scales_no_16_bit_product_holds(lo, hi, group_cols):
    """``code * scale`` would overflow (6 * 6e4) or lose bits (subnormal) in 16 bits; the kernel
    scales fp32 group sums, so it stays exact up to summation order."""
    x, wq, sc = _grouped(4, 96, 512, 32, torch.float16, seed=1, lo=lo, hi=hi)
    out = torch.full((4, 96), float("nan"), dtype=torch.float32, device="cuda")
    S.w4a16_mm_gemv_sm90(x, wq, sc, 32, "low_first", out,
                         config=S.GemvSM90Config(1, 1, 1, 0, 1, group_cols=group_cols))
    _check(out, reference.w4a16_mm(x, wq, sc, 32))


@gpu
@pytest.mark.parametrize("group_cols", [0, 128, 64])
def test_grouped_nan_scale_propagates_to_exactly_its_row(group_cols):
    x, wq, sc = _grouped(5, 70, 256, 64, torch.float16, seed=2)
    sc[3, 2] = float("nan")
    out = torch.empty((5, 70), dtype=torch.float32, device="cuda")
    S.w4a16_mm_gemv_sm90(x, wq, sc, 64, "low_first", out,
                         config=S.GemvSM90Config(split_k=2, group_cols=group_cols))
    nan = torch.isnan(out)
    assert nan[:, 3].all() and int(nan.sum()) == 5


@gpu
def test_grouped_ops_run_it_alone_and_fall_back_on_unaligned_operands(monkeypatch):
    import fp4mm
    from fp4mm.kernels import fp4_gemm, fp4_gemv

    x, wq, sc = _grouped(4, 256, 3072, 32, torch.float16, seed=13)
    ref = reference.w4a16_mm(x, wq, sc, 32)
    calls = []
    real = S.gemv_sm90
    monkeypatch.setattr(S, "gemv_sm90", lambda *a, **k: calls.append(1) or real(*a, **k))
    for mod, name in ((fp4_gemm, "w4a16_mm_gemm"), (fp4_gemv, "w4a16_mm_gemv")):
        monkeypatch.setattr(mod, name, lambda *a, _name=name, **k: calls.append(_name))
    _check(fp4mm.w4a16_mm(x, wq, sc, 32), ref)
    assert calls == [1]
    monkeypatch.undo()
    # x 8 bytes into a buffer: not 16-byte aligned, so the Triton GEMV serves it
    buf = torch.empty((4 * 3072 + 4,), dtype=torch.float16, device="cuda")
    xu = buf[4:].view(4, 3072)
    xu.copy_(x)
    assert not S.is_supported(xu.device, 4, 3072, xu, group_size=32)
    _check(fp4mm.w4a16_mm(xu, wq, sc, 32), ref)
