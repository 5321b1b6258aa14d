"""fp4_gemm_sm90 (Gluon, sm_90a): compile-only checks on any machine, numerics on an sm_90 GPU.

Gluon cannot run in Triton's interpreter; its interpreter-tested twin is fp4mm/kernels/fp4_gemm.py.
CPU (CI): every shipped config compiles for sm_90a with register-A wgmma, no spills, no C7512
wgmma serialisation, and 0 A-register overwrites of an in-flight HGMMA (checker vendored as
tests/kernels/_sass_hazard.py); the host prepack puts every byte where the kernel reads it.
GPU: vs the fp32 oracle on fresh random inputs at shapes that hit every tile boundary, an
identity-activation one-hot probe (output = dequantised weight, bit for bit), and scales that vary
only by row or only by K-block (a mis-laid scale tile fails these).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import itertools
import os
import re

import pytest
import torch

from fp4mm import reference
from fp4mm.formats import dequantize_fp4_groupwise, dequantize_nvfp4_blocks

g = pytest.importorskip("fp4mm.kernels.fp4_gemm_sm90")
_spec = importlib.util.spec_from_file_location(
    "_sass_hazard", os.path.join(os.path.dirname(__file__), "_sass_hazard.py"))
_sass_hazard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sass_hazard)
_spec = importlib.util.spec_from_file_location(
    "_ptxas", os.path.join(os.path.dirname(__file__), "_ptxas.py"))
_ptxas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ptxas)

HAS_SM90 = torch.cuda.is_available() and g.is_supported("cuda")
gpu = pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 CUDA device")

# (BN, STAGES, activation dtype, out dtype, special, alpha_ptr): every kernel specialisation
# choose_config can return (SPLIT is a runtime argument: one kernel serves every split factor),
# plus bf16/fp32 paths, plus the int arguments Triton's launcher specialises when they are 1:
# special True (split == 1) and "fixup" (split-K pairs summed in the kernel, fixup == 1); each
# shipped tile also with alpha read from a device tensor (ALPHA_PTR: NVFP4Linear's calls).
_TILES = sorted({(c.BN, c.STAGES) for c in g.shipped_configs()})
SHIPPED = [(bn, st, "fp16", "fp16", False, ap) for bn, st in _TILES for ap in (False, True)] + [
    (256, 4, "bf16", "bf16", False, False), (256, 2, "fp16", "fp32", False, False),
    (128, 4, "fp16", "fp32", False, False), (256, 4, "fp16", "fp16", True, False),
    (128, 6, "fp16", "fp16", True, False), (256, 4, "fp16", "fp16", "fixup", False),
    (128, 6, "fp16", "fp16", "fixup", False), (128, 6, "fp16", "fp32", "fixup", False),
    (16, 6, "fp16", "fp16", "fixup", False), (64, 6, "bf16", "fp32", "fixup", False),
    (256, 4, "bf16", "bf16", "fixup", True)]
_GL = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


# Group-scale (w4a16_mm) specialisations choose_config(grouped=True) can return (BN 16/32/64 with
# 6 stages for M <= 64, BN 128 with 4 above); the op's output dtype is x's dtype.
# (GK, BN, STAGES, x dtype, out dtype, split == 1).
_GROUPED_TILES = sorted({(c.BN, c.STAGES) for c in (
    g.choose_config(M, N, 3072, grouped=True) for M in (1, 16, 32, 64, 128, 2048)
    for N in (8192, 18432))})
SHIPPED_GROUPED = [(gk, bn, st, dt, dt, False) for gk in (32, 64) for bn, st in _GROUPED_TILES
                   for dt in ("fp16", "bf16")] + [(32, 128, 4, "fp16", "fp16", True)]


def _compile(bn, stages, dt, ot, split1=False, gk=0, alpha_ptr=False):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    gdt = getattr(gl, _GL[dt])
    xl = gl.NVMMASharedLayout.get_default_for([bn, 64], gdt)
    yl = gl.NVMMASharedLayout.get_default_for([bn, 128], getattr(gl, _GL[ot]))
    s_desc = (f"tensordesc<u8[8, 64],{g._PLAIN8!r}>" if gk == 0 else
              f"tensordesc<fp32[{64 // gk * 128}],{g._GROUP_SCALE_LAYOUT!r}>")
    sig = {"w_desc": f"tensordesc<u8[16, 256],{g._PLAIN8!r}>", "s_desc": s_desc,
           "x_desc": f"tensordesc<{dt}[{bn}, 64],{xl!r}>",
           "y_desc": f"tensordesc<{ot}[{bn}, 128],{yl!r}>",
           "ws_ptr": "*fp32", "flags_ptr": "*i32", "alpha": "fp32", "alpha_ptr": "*fp32",
           "num_units": "i32", "num_full": "i32", "split": "i32", "k_per_split": "i32",
           "num_m_tiles": "i32", "k_tiles": "i32", "fixup": "i32", "BN": "constexpr",
           "STAGES": "constexpr", "DTYPE": "constexpr", "GK": "constexpr", "PDL": "constexpr",
           "ALPHA_PTR": "constexpr"}
    constexprs = {"BN": bn, "STAGES": stages, "DTYPE": gdt, "GK": gk, "PDL": True,  # as launched
                  "ALPHA_PTR": alpha_ptr}
    if split1 == "fixup":
        sig["fixup"] = "constexpr"
        constexprs["fixup"] = 1
    elif split1:
        sig["split"] = "constexpr"
        constexprs["split"] = 1
    src = GluonASTSource(g._fp4_gemm_sm90_kernel, sig, constexprs=constexprs,  # as at launch:
                         attrs={(4,): [["tt.divisibility", 16]],  # ws_ptr
                                (5,): [["tt.divisibility", 16]]})  # flags_ptr
    with contextlib.redirect_stdout(io.StringIO()):
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


def compile_report(bn, stages, dt, ot, split1=False, alpha_ptr=False) -> dict:
    """Compile one config for sm_90a and collect what the test asserts on."""
    k = _compile(bn, stages, dt, ot, split1, alpha_ptr=alpha_ptr)
    ptx, sass = k.asm["ptx"], k.asm["sass"]
    t = {"fp16": "f16", "bf16": "bf16"}[dt]
    # register-A wgmma: {4 registers} for A, a descriptor for B
    wgmma = re.search(rf"wgmma\.mma_async\.sync\.aligned\.m64n{bn}k16\.f32\.{t}\.{t} "
                      r"\{[^}]+\}, \{%r\d+,%r\d+,%r\d+,%r\d+\}, %rd\d+", ptx)
    with contextlib.redirect_stdout(io.StringIO()):
        hazards = _sass_hazard.check(sass, f"bn{bn}_s{stages}")
    return {"register_a_wgmma": bool(wgmma),
            "warp_specialised": "setmaxnreg.dec" in ptx and "cp.async.bulk.tensor" in ptx,
            "ld_shared_v4": ptx.count("ld.shared.v4.b32"), "ptxas_log": _ptxas.ptxas_log(ptx),
            "st_global_v2": ptx.count("st.global.v2.b32"),
            "st_global_v4": ptx.count("st.global.v4.b32"),
            "st_global_scalar": len(re.findall(r"st\.global\.b32", ptx)),
            "shared": k.metadata.shared, "hazards": hazards,
            "pdl_wait": ptx.count("griddepcontrol.wait")}


def compile_report_grouped(gk, bn, stages, dt, ot, split1=False) -> dict:
    """Compile one group-scale config for sm_90a and collect what the test asserts on."""
    k = _compile(bn, stages, dt, ot, split1, gk)
    sass = k.asm["sass"]
    with contextlib.redirect_stdout(io.StringIO()):
        hazards = _sass_hazard.check(sass, f"gk{gk}_bn{bn}_s{stages}")
    return {"ptxas_log": _ptxas.ptxas_log(k.asm["ptx"]), "shared": k.metadata.shared,
            "hazards": hazards, "hgmma": sass.count("HGMMA.64x"),
            "wait_1": sass.count("WARPGROUP.DEPBAR.LE gsb0, 0x1"),
            "ffma": len(re.findall(r"\bFFMA\b", sass))}


def _reports_in_child(report: str, configs: str) -> dict:
    """``{config: report(*config)}`` for every config in the module list ``configs``, compiled
    in clean child processes (``_ptxas.compile_in_child``)."""
    return dict(zip(globals()[configs], _ptxas.compile_in_child(__file__, report, configs)))


@pytest.fixture(scope="module")
def compile_reports():
    """Every shipped NVFP4 config (see :func:`_reports_in_child`)."""
    return _reports_in_child("compile_report", "SHIPPED")


@pytest.fixture(scope="module")
def compile_reports_grouped():
    """Every shipped group-scale config (see :func:`_reports_in_child`)."""
    return _reports_in_child("compile_report_grouped", "SHIPPED_GROUPED")


@pytest.mark.parametrize("cfg", SHIPPED_GROUPED, ids=lambda v: str(v))
def test_grouped_configs_compile_pipelined_without_hazards(compile_reports_grouped, cfg):
    """Group scales: no spills, no serialised wgmma (C7512/C7514/C7517: ptxas injects waits when
    non-wgmma code reads an in-flight accumulator), the MMAs of one group overlap the previous
    group's FMAs (``wait_group 1``), and no A register is rewritten while its wgmma is in
    flight."""
    rep = compile_reports_grouped[cfg]
    log = rep["ptxas_log"]
    assert "0 bytes spill stores, 0 bytes spill loads" in log, log
    for code in ("C7512", "C7514", "C7517"):
        assert code not in log, log
    assert rep["wait_1"] > 0, "every wgmma retired before the next: the group pipeline is lost"
    assert rep["hgmma"] == 8  # 2 tiles x (2 groups x 2 k16 steps | 1 group x 4 k16 steps)
    # one FMA per accumulator element (BN / 2 per thread) per group, 2 tiles per iteration
    assert rep["ffma"] >= cfg[1] // 2 * (4 if cfg[0] == 32 else 2)
    assert rep["shared"] <= g.SMEM_LIMIT
    assert rep["hazards"] == 0, "an instruction overwrites A registers of an in-flight HGMMA"


@pytest.mark.parametrize("bn,stages,dt,ot,split1,alpha_ptr", SHIPPED, ids=lambda v: str(v))
def test_compiles_for_sm90a_without_hazards(compile_reports, bn, stages, dt, ot, split1,
                                            alpha_ptr):
    rep = compile_reports[(bn, stages, dt, ot, split1, alpha_ptr)]
    assert rep["register_a_wgmma"]
    assert rep["warp_specialised"]
    # the thread-ordered prepack gives one 16-byte load of codes and one of scales per tile
    assert rep["ld_shared_v4"] >= 2
    # split-K partials leave as vector stores, not scalar ones: 8 bytes (a token pair) in the
    # reduce pass's row-major slots, 16 bytes in the thread-ordered slots of a pair summed here
    assert rep["st_global_v4" if split1 == "fixup" else "st_global_v2"] > 0
    assert rep["st_global_scalar"] == 0
    log = rep["ptxas_log"]
    assert "0 bytes spill stores, 0 bytes spill loads" in log, log
    assert "C7512" not in log, log  # wgmma serialised for lack of registers
    assert rep["shared"] <= g.SMEM_LIMIT
    assert rep["hazards"] == 0, "an instruction overwrites A registers of an in-flight HGMMA"
    # launched with programmatic dependent launch: one wait before any memory access
    assert rep["pdl_wait"] == 1


def test_hazard_checker_flags_a_planted_overwrite():
    """The checker itself can fail: an A register rewritten before the DEPBAR is flagged."""
    sass = ("--:-:-:-:1\tHGMMA.64x256x16.F32 R24, R152, gdesc[UR8], R24, gsb0;\n"
            "--:-:-:-:1\tPRMT R152, R1, R2, RZ;\n"
            "--:-:-:-:1\tWARPGROUP.DEPBAR.LE gsb0, 0x0;\n--:-:-:-:1\tEXIT;\n")
    with contextlib.redirect_stdout(io.StringIO()):
        assert _sass_hazard.check(sass.replace("PRMT R152", "PRMT R100"), "clean") == 0
    with contextlib.redirect_stdout(io.StringIO()):
        assert _sass_hazard.check(sass, "planted") == 1


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_prepack_puts_every_byte_where_the_kernel_reads_it(order):
    """Emulate the kernel's reads (module docstring) and rebuild the padded row-major tensors."""
    torch.manual_seed(0)
    N, K = 200, 208  # N, K not multiples of 128: padding with zeros
    w_q = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8)
    w_s = torch.randint(0, 256, (N, K // 16), dtype=torch.uint8)
    p = g.prepack_weight_sm90(w_q, w_s, order)
    Np, Kp = 256, 256
    codes = p.codes.view(Np // 128, 8, 2, Kp // 64, 16, 16)  # nb, w, lane//16, kt, lane%16, r
    got = torch.zeros((Np, Kp // 2), dtype=torch.uint8)
    for nb, w, lane, kt in itertools.product(range(2), range(8), range(32), range(Kp // 64)):
        gg, c = divmod(lane, 4)
        for r in range(16):
            got[nb * 128 + 16 * w + 8 * (r % 2) + gg, kt * 32 + 4 * (r // 2) + c] = \
                codes[nb, w, lane // 16, kt, lane % 16, r]
    want = torch.zeros_like(got)
    want[:N, :K // 2] = w_q if order == "low_first" else (w_q >> 4) | (w_q << 4)
    assert torch.equal(got, want)
    sc = p.scales.view(Np // 128, 8, Kp // 64, 8, 8)  # nb, w, kt, g, j = h + 2 kb
    got_s = torch.zeros((Np, Kp // 16), dtype=torch.uint8)
    for nb, w, kt, gg, j in itertools.product(range(2), range(8), range(Kp // 64), range(8),
                                              range(8)):
        h, kb = j % 2, j // 2
        row, col = nb * 128 + 16 * w + 8 * h + gg, kt * 4 + kb
        got_s[row, col] = sc[nb, w, kt, gg, j]
    want_s = torch.zeros_like(got_s)
    want_s[:N, :K // 16] = w_s
    assert torch.equal(got_s, want_s)


@pytest.mark.parametrize("group_size", [32, 64, 128, 192])
def test_grouped_prepack_puts_every_scale_where_the_kernel_reads_it(group_size):
    """Emulate the producer's 1-D TMA box per (row block, 64-K tile) and the consumer's reads
    (group j of the tile, row r); codes are laid out as for NVFP4."""
    torch.manual_seed(1)
    N, K = 200, {32: 608, 64: 704, 128: 640, 192: 576}[group_size]  # ragged N; K % 128 != 0
    w_q = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8)
    scales = torch.rand((N, K // group_size), dtype=torch.float32).to(torch.float16)
    p = g.prepack_grouped_sm90(w_q, scales, group_size, "high_first")
    gk = g.group_k(group_size)
    assert p.group_k == gk and p.scales.dtype == torch.float32
    codes, _ = g.prepack_sm90_torch(w_q, None, "high_first")
    assert torch.equal(p.codes, codes)
    assert torch.equal(codes, g.prepack_weight_sm90(
        w_q, torch.zeros((N, K // 16), dtype=torch.uint8), "high_first").codes)
    Np, Kp = 256, -(-K // 128) * 128
    k_tiles, box = Kp // 64, 128 * 64 // gk
    for nb, kt in itertools.product(range(Np // 128), range(k_tiles)):
        tile = p.scales[(nb * k_tiles + kt) * box:][:box].view(64 // gk, 128)
        for j in range(64 // gk):
            k0 = kt * 64 + j * gk
            rows = torch.arange(nb * 128, nb * 128 + 128)
            want = torch.zeros(128)
            ok = rows < N
            if k0 < K:
                want[ok] = scales[rows[ok], k0 // group_size].float()
            assert torch.equal(tile[j], want), (nb, kt, j)


def test_group_k_and_its_errors():
    assert [g.group_k(s) for s in (2, 16, 32, 48, 64, 96, 128, 192, 256)] == \
        [0, 0, 32, 0, 64, 0, 64, 64, 64]
    with pytest.raises(ValueError, match="group_size: the Gluon GEMM takes 32 or a multiple"):
        g.prepack_grouped_sm90(torch.zeros((8, 8), dtype=torch.uint8),
                               torch.zeros((8, 1), dtype=torch.float16), 16)


def test_configs_are_valid_and_fit_shared_memory():
    for M in (1, 16, 17, 64, 100, 128, 129, 1024, 2048, 4096):
        for N in (8, 3072, 18432):
            for ot in (torch.float16, torch.bfloat16, torch.float32):
                assert g.config_is_valid(g.choose_config(M, N, 3072, ot), ot)
    assert not g.config_is_valid(g.SM90Config(BN=256, STAGES=8))
    assert not g.config_is_valid(g.SM90Config(BN=48))
    assert not g.config_is_valid(g.SM90Config(SPLIT=0))
    assert not g.config_is_valid(g.SM90Config(SPLIT=17))
    # group scales: the fp32 partial doubles the accumulator, so BN 256 would spill
    assert g.config_is_valid(g.SM90Config(BN=256), grouped=False)
    assert not g.config_is_valid(g.SM90Config(BN=256), grouped=True)
    for M in (65, 128, 2048):
        assert g.choose_config(M, 8192, 3072, grouped=True).BN == 128
        assert g.choose_config(M, 8192, 3072, grouped=True) in {
            g.SM90Config(BN=128, STAGES=4, SPLIT=s) for s in (1, 2, 4, 6)}


def test_heuristic_splits_k_only_where_the_grid_is_short():
    """N = 3072 has 24 row blocks: M = 128 gives 24 tiles for 132 SMs, so K is split; the
    challenge case (1152 tiles) and 4096 x 3072 keep whole 128 x 256 tiles, as measured."""
    assert g.choose_config(128, 3072, 3072).SPLIT > 1
    assert g.choose_config(128, 3072, 16384).SPLIT > 1
    assert g.choose_config(2048, 18432, 3072) == g.SM90Config(BN=256, STAGES=4)
    assert g.choose_config(2048, 18432, 3072) == g.SM90Config(BN=256, STAGES=4)
    assert g.choose_config(4096, 3072, 3072) == g.SM90Config(BN=256, STAGES=4)


def test_heuristic_takes_the_smallest_token_tile_at_decode_sizes():
    """M <= SMALL_BN streams the weights: a step costs about the same for any BN, so the
    smallest power-of-two tile that holds M wins (session 13 sweep: 1x18432x3072 BN 16 split 6
    23.7 us against BN 128's 40.4); above it the compute-bound tiles stay."""
    for M, bn in ((1, 16), (16, 16), (17, 32), (32, 32), (33, 64), (64, 64), (65, 128)):
        assert g.choose_config(M, 18432, 3072).BN == bn, M
    # split 8 since the reduce issues its slices' loads together (session 14 split sweep)
    assert g.choose_config(1, 18432, 3072) == g.SM90Config(BN=16, STAGES=6, SPLIT=8)
    assert g.choose_config(16, 18432, 3072, grouped=True).SPLIT <= 6  # not measured there
    assert g.choose_config(1, 8192, 8192) == g.SM90Config(BN=16, STAGES=6, SPLIT=2)
    assert g.choose_config(16, 8192, 3072, grouped=True).BN == 16  # group scales too
    assert g.choose_config(64, 3072, 3072) == g.SM90Config(BN=64, STAGES=6, SPLIT=4)
    # 64 < M <= 128: one 128-token tile, K split where the grid is short (session 14, with the
    # reduce's slices loaded together: 128x3072x3072 W4A4 14.8 us against BN 64 split 2's 15.5)
    assert g.choose_config(128, 3072, 3072) == g.SM90Config(BN=128, STAGES=6, SPLIT=4)
    for N in (3072, 8192, 18432):
        assert g.choose_config(128, N, 3072).BN == 128


@pytest.mark.parametrize("M,N,K,cfg,sms", [
    (128, 3072, 3072, g.SM90Config(BN=128, SPLIT=4), 132),  # 4 slices: the reduce pass
    (128, 3072, 3072, g.SM90Config(BN=128, SPLIT=2), 132),
    (2048, 3072, 3072, g.SM90Config(BN=256, SPLIT=2), 132),
    (4096, 3072, 3072, g.SM90Config(BN=256, SPLIT=2), 132),  # 240 split units over 132 CTAs
    (2048, 3072, 3072, g.SM90Config(BN=256, SPLIT=2, PERSISTENT=False), 132),  # 252 CTAs
    (300, 3500, 1040, g.SM90Config(BN=64, SPLIT=4), 132),  # 28 K tiles in 4: 3 slices
    (17, 200, 208, g.SM90Config(BN=16, SPLIT=5), 2),  # 4 K tiles: 2 slices
    (1024, 18432, 3072, g.SM90Config(BN=256, SPLIT=2), 132),
], ids=lambda v: str(v))
def test_split_k_pairs_summed_in_the_kernel(M, N, K, cfg, sms):
    """The in-kernel sum (``fixup_in_kernel``) takes tiles cut in exactly two slices, whatever
    the grid: units ``num_full + v`` of one tile are v = 2j and 2j + 1, so each slice's partner
    is slot ``v ^ 1`` (what ``_sum_pair`` reads), and their K ranges are complementary."""
    sc = g.schedule(M, N, K, cfg, sms)
    assert g.fixup_in_kernel(sc) == (sc.split == 2)
    if sc.split != 2:
        return
    split_units = sc.num_units - sc.num_full
    assert split_units % 2 == 0  # every slot's partner exists
    for v in range(split_units):
        assert (sc.num_full + v // 2) == (sc.num_full + (v ^ 1) // 2)
    k0 = [(v % 2) * sc.k_per_split for v in (0, 1)]
    k1 = [min(k + sc.k_per_split, sc.k_tiles) for k in k0]
    assert (k0[0], k1[0], k1[1]) == (0, k0[1], sc.k_tiles)


@pytest.mark.parametrize("M,N,K,cfg,sms", [
    (128, 3072, 3072, g.SM90Config(BN=128, SPLIT=4), 132),  # 24 tiles, all split in 4 x 12
    (300, 3500, 1040, g.SM90Config(BN=64, SPLIT=4), 132),  # 5 x 28 = 140 tiles: 8 split in 3
    (17, 200, 208, g.SM90Config(BN=16, SPLIT=5), 2),  # K tiles 4: slices of 2, 1 whole wave
    (1, 300, 1024, g.SM90Config(BN=16, SPLIT=8), 2),  # 8 slices of 2 K tiles (decode sizes)
    (33, 130, 96, g.SM90Config(BN=32, SPLIT=16), 132),  # more slices than K-tile pairs
], ids=lambda v: str(v))
def test_split_schedule_and_reduce_cover_every_k_tile_once(M, N, K, cfg, sms):
    """Emulate the kernel's units (``_unit``) in torch, run the Triton reduce (interpreter on the
    CPU): every (tile, K tile) is computed exactly once, slices are even, the sum is right."""
    import triton

    sc = g.schedule(M, N, K, cfg, sms)
    assert sc.split == 1 or sc.num_full == (sc.num_tiles // sms) * sms
    assert sc.k_per_split % 2 == 0 and sc.k_tiles % 2 == 0
    torch.manual_seed(0)
    bn, mt, kp = cfg.BN, triton.cdiv(M, cfg.BN), sc.k_tiles * 64
    x = torch.zeros(mt * bn, kp)
    w = torch.zeros(triton.cdiv(N, 128) * 128, kp)
    x[:M, :K] = torch.randint(-8, 8, (M, K)).float()
    w[:N, :K] = torch.randint(-8, 8, (N, K)).float()
    alpha = 0.5
    out = torch.full((M, triton.cdiv(N, 8) * 8), float("nan"), dtype=torch.float16)
    ws = torch.full((max(sc.num_units - sc.num_full, 1), 128, bn), float("nan"))
    seen = torch.zeros(sc.num_tiles, sc.k_tiles, dtype=torch.int32)
    for u in range(sc.num_units):
        if u < sc.num_full:
            t, k0, k1, v = u, 0, sc.k_tiles, -1
        else:
            v = u - sc.num_full
            t = sc.num_full + v // sc.split
            k0 = (v % sc.split) * sc.k_per_split
            k1 = min(k0 + sc.k_per_split, sc.k_tiles)
        assert k1 > k0 and (k1 - k0) % 2 == 0
        seen[t, k0:k1] += 1
        pm, pn = t % mt, t // mt
        acc = (w[pn * 128:(pn + 1) * 128, k0 * 64:k1 * 64]
               @ x[pm * bn:(pm + 1) * bn, k0 * 64:k1 * 64].T)
        if v >= 0:
            ws[v] = acc
        else:
            tile = (acc * alpha).T.half()[:max(0, min(bn, M - pm * bn)),
                                          :max(0, min(128, out.shape[1] - pn * 128))]
            out[pm * bn:pm * bn + tile.shape[0], pn * 128:pn * 128 + tile.shape[1]] = tile
    assert bool((seen == 1).all())
    if sc.num_units > sc.num_full:  # the reduce runs on the GPU when there is one
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        out_dev = out.to(dev)
        g.splitk_reduce(ws.to(dev), out_dev, alpha, sc, bn)
        out = out_dev.cpu()
    want = (alpha * x[:M] @ w[:out.shape[1]].T).half()
    assert torch.equal(out, want)  # small integers: exact in any summation order


# ----------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------
def _gen(M, N, K, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    xq = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    xs = (torch.rand((M, K // 16), device="cuda", generator=gen) * 1.5 + 0.5)
    ws = (torch.rand((N, K // 16), device="cuda", generator=gen) * 1.5 + 0.5)
    return (xq, xs.to(torch.float8_e4m3fn).view(torch.uint8), wq,
            ws.to(torch.float8_e4m3fn).view(torch.uint8))


def _assert_close(out, xq, xs, wq, ws, alpha, order):
    ref = reference.nvfp4_mm(xq, xs, wq, ws, alpha, order=order)
    bound = (dequantize_nvfp4_blocks(xq, xs, order).abs()
             @ dequantize_nvfp4_blocks(wq, ws, order).abs().T) * abs(alpha)
    u = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-20}[out.dtype]
    err = (out.float() - ref).abs()
    tol = ref.abs() * u + bound * 2.0**-20  # output rounding + fp32 summation order
    assert not torch.isnan(out).any()
    assert bool((err <= tol).all()), f"max excess {float((err - tol).max())}"


def _run(xq, xs, wq, ws, alpha, order, out_dtype=torch.float16, config=None):
    out = torch.full((xq.shape[0], wq.shape[0]), float("nan"), dtype=out_dtype, device="cuda")
    g.fp4_gemm_sm90(xq, xs, wq, ws, alpha, order, out, config=config)
    return out


@gpu
@pytest.mark.parametrize("M,N,K", [(1, 8, 16), (1, 130, 64), (17, 128, 128), (129, 264, 208),
                                   (257, 392, 1040), (300, 136, 96), (512, 1024, 1024)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_matches_oracle(M, N, K, order):
    xq, xs, wq, ws = _gen(M, N, K, seed=M * 7 + N)
    _assert_close(_run(xq, xs, wq, ws, 0.125, order), xq, xs, wq, ws, 0.125, order)


@gpu
@pytest.mark.parametrize("cfg", [(bn, st, p) for bn in (16, 32, 64, 128, 256) for st in (2, 4)
                                 for p in (True, False)], ids=lambda v: str(v))
def test_every_config_path(cfg):
    config = g.SM90Config(BN=cfg[0], STAGES=cfg[1], PERSISTENT=cfg[2])
    xq, xs, wq, ws = _gen(333, 392, 640, seed=3)
    out = _run(xq, xs, wq, ws, 1.0, "low_first", config=config)
    _assert_close(out, xq, xs, wq, ws, 1.0, "low_first")


@gpu
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32])
def test_out_dtypes(out_dtype):
    xq, xs, wq, ws = _gen(200, 264, 320, seed=5)
    _assert_close(_run(xq, xs, wq, ws, 0.5, "low_first", out_dtype), xq, xs, wq, ws, 0.5,
                  "low_first")


@gpu
@pytest.mark.parametrize("bn", [64, 256])
def test_identity_probe_gives_the_dequantised_weight_bit_for_bit(bn):
    K, N = 256, 264
    codes = torch.zeros((K, K), dtype=torch.uint8, device="cuda")
    codes[torch.arange(K), torch.arange(K)] = 0x2  # 1.0
    xq = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()
    xs = torch.full((K, K // 16), 0x38, dtype=torch.uint8, device="cuda")  # 1.0
    _, _, wq, ws = _gen(K, N, K, seed=9)
    out = _run(xq, xs, wq, ws, 1.0, "low_first", config=g.SM90Config(BN=bn, STAGES=4))
    assert torch.equal(out.float(), dequantize_nvfp4_blocks(wq, ws, "low_first").T)


@gpu
@pytest.mark.parametrize("vary", ["row", "kblock"])
def test_scales_varying_only_by_row_or_only_by_kblock(vary):
    M, N, K = 200, 256, 512
    xq, xs, wq, _ = _gen(M, N, K, seed=11)
    if vary == "row":
        ws = (torch.arange(N, device="cuda") % 7 + 0x30).to(torch.uint8)[:, None]
    else:
        ws = (torch.arange(K // 16, device="cuda") % 9 + 0x30).to(torch.uint8)[None, :]
    ws = ws.expand(N, K // 16).contiguous()
    _assert_close(_run(xq, xs, wq, ws, 1.0, "low_first"), xq, xs, wq, ws, 1.0, "low_first")


@gpu
def test_w4a16_entry_and_prepacked_reuse():
    M, N, K = 100, 264, 320
    xq, xs, wq, ws = _gen(M, N, K, seed=13)
    x = dequantize_nvfp4_blocks(xq, xs).half()
    packed = g.prepack_weight_sm90(wq, ws)
    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
    g.fp4_gemm_sm90_w4a16(x, wq, ws, 0.25, "low_first", out, prepacked=packed)
    _assert_close(out, xq, xs, wq, ws, 0.25, "low_first")


@gpu
@pytest.mark.parametrize("M,N,K,cfg", [
    (128, 3072, 3072, None),  # the heuristic's split-K (24 tiles for 132 SMs)
    (100, 392, 1040, g.SM90Config(BN=128, STAGES=6, SPLIT=4)),  # ragged M, N, K; all tiles split
    (300, 3500, 1040, g.SM90Config(BN=64, STAGES=4, SPLIT=4)),  # 140 tiles: whole + split tail
    (33, 136, 208, g.SM90Config(BN=32, STAGES=2, SPLIT=16)),  # slices of one K-tile pair
    (129, 264, 640, g.SM90Config(BN=256, STAGES=4, SPLIT=3, PERSISTENT=False)),
], ids=lambda v: str(v))
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_split_k_matches_oracle(M, N, K, cfg, out_dtype):
    if cfg is not None and not g.config_is_valid(cfg, out_dtype):
        cfg = dataclasses.replace(cfg, STAGES=2)  # an fp32 epilogue tile leaves less smem
        assert g.config_is_valid(cfg, out_dtype)
    xq, xs, wq, ws = _gen(M, N, K, seed=M + N + K)
    out = _run(xq, xs, wq, ws, 0.25, "high_first", out_dtype, config=cfg)
    _assert_close(out, xq, xs, wq, ws, 0.25, "high_first")


@gpu
def test_split_k_is_deterministic():
    """The reduce sums the slices in a fixed order: two runs agree bit for bit."""
    xq, xs, wq, ws = _gen(128, 3072, 3072, seed=21)
    cfg = g.SM90Config(BN=128, STAGES=6, SPLIT=4)
    a = _run(xq, xs, wq, ws, 1.0, "low_first", torch.float32, config=cfg)
    b = _run(xq, xs, wq, ws, 1.0, "low_first", torch.float32, config=cfg)
    assert torch.equal(a, b)


@gpu
@pytest.mark.parametrize("M,N,K,cfg,out_dtype", [
    (128, 3072, 3072, g.SM90Config(BN=128, STAGES=6, SPLIT=2), torch.float32),  # 24 x 2
    (2048, 3072, 3072, g.SM90Config(BN=256, STAGES=4, SPLIT=2), torch.float16),  # 132 + 60 x 2
    (300, 3496, 1040, g.SM90Config(BN=64, STAGES=4, SPLIT=2), torch.bfloat16),  # 132 + 8 x 2
    (33, 136, 208, g.SM90Config(BN=32, STAGES=2, SPLIT=2), torch.float32),  # 2 x 2, 1 pair
    (4096, 3072, 3072, g.SM90Config(BN=256, STAGES=4, SPLIT=2), torch.float16),  # 240 > 132
    (2048, 3072, 3072, g.SM90Config(BN=256, STAGES=4, PERSISTENT=False, SPLIT=2),
     torch.float16),  # one CTA per unit: 252 CTAs, not all resident at once
], ids=lambda v: str(v))
def test_split_k_summed_in_the_kernel_equals_the_reduce_pass(M, N, K, cfg, out_dtype):
    """The second slice of a pair to finish adds the other's partial: a sum of two, the same
    bits as the reduce kernel's in either order. The outputs agree bit for bit, also on a
    second call and in three replays of a CUDA graph (the counters reset themselves), and they
    match the oracle, with more split units than SMs and with CTAs that are not all resident
    (nobody waits for a CTA that has not started). (``gemm_sm90_dense_x`` takes N % 8 == 0:
    16-byte TMA rows of the output.)"""
    xq, xs, wq, ws = _gen(M, N, K, seed=M + K)
    packed = g.prepack_weight_sm90(wq, ws, "low_first")
    sc = g.schedule(M, N, K, cfg, g.sm_count("cuda"))
    assert g.fixup_in_kernel(sc)
    x = g.dequant_nvfp4(xq, xs, order="low_first")
    want = torch.full((M, N), float("nan"), dtype=out_dtype, device="cuda")
    g.gemm_sm90_dense_x(x, packed, 0.5, want, config=cfg)  # no flags: the reduce pass
    out = torch.full_like(want, float("nan"))
    flags = torch.zeros(sc.num_tiles, dtype=torch.int32, device="cuda")

    def call():
        g.gemm_sm90_dense_x(x, packed, 0.5, out, config=cfg, flags=flags)

    call()
    assert torch.equal(out, want)
    out.fill_(float("nan"))
    call()
    assert torch.equal(out, want)
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        call()
    for _ in range(3):
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, want)
    assert int(flags.abs().sum()) == 0  # the second of each pair reset its tile's counter
    _assert_close(out, xq, xs, wq, ws, 0.5, "low_first")


# ----------------------------------------------------------------------------------------------
# GPU: 16-bit group scales (w4a16_mm)
# ----------------------------------------------------------------------------------------------
def _gen_grouped(M, N, K, group, dtype, seed, scale_kind="challenge"):
    """Challenge rev-1 data (x = 0.5 randn, scales 0.1 rand + 0.01), or fp16 scales whose
    products with the codes overflow fp16 ('huge', x shrunk to keep y finite) or are subnormal
    ('tiny'): a kernel that formed code * scale in 16 bits fails those."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = (0.5 * torch.randn((M, K), device="cuda", generator=gen)).to(dtype)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=gen)
    r = torch.rand((N, K // group), device="cuda", generator=gen)
    lo, span = {"challenge": (0.01, 0.1), "huge": (3e4, 3e4), "tiny": (1e-7, 9e-7)}[scale_kind]
    s = (r * span + lo).to(dtype if scale_kind == "challenge" else torch.float16)
    if scale_kind == "huge":
        x = x * 1e-3
    return x, wq, s


def _assert_close_grouped(out, x, wq, s, group, order):
    ref = reference.w4a16_mm(x, wq, s, group, order=order)
    bound = x.float().abs() @ dequantize_fp4_groupwise(wq, s, group, order).abs().T
    u = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 2.0**-20}[out.dtype]
    sub = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133, torch.float32: 2.0**-149}
    err = (out.float() - ref).abs()
    tol = ref.abs() * u + bound * 2.0**-20 + sub[out.dtype]  # + subnormal output spacing
    assert not torch.isnan(out).any()
    assert bool((err <= tol).all()), f"max excess {float((err - tol).max())}"


def _run_grouped(x, wq, s, group, order, out_dtype=None, config=None, prepacked=None):
    N = prepacked.N if prepacked is not None else wq.shape[0]
    out = torch.full((x.shape[0], N), float("nan"), dtype=out_dtype or x.dtype, device="cuda")
    g.fp4_gemm_sm90_grouped(x, wq, s, group, order, out, prepacked=prepacked, config=config)
    return out


@gpu
@pytest.mark.parametrize("M,N,K,group,dtype,order", [
    (1, 128, 128, 32, torch.float16, "low_first"),
    (100, 200, 160, 32, torch.float16, "high_first"),  # K % 128 != 0: a zero-padded K tile
    (129, 264, 96, 32, torch.bfloat16, "low_first"),
    (255, 100, 128, 32, torch.float16, "high_first"),  # a challenge functional case
    (300, 520, 384, 64, torch.float16, "low_first"),
    (300, 520, 384, 128, torch.bfloat16, "high_first"),
    (77, 3000, 1280, 256, torch.float16, "low_first"),
], ids=lambda v: str(v))
def test_grouped_matches_oracle(M, N, K, group, dtype, order):
    x, wq, s = _gen_grouped(M, N, K, group, dtype, seed=M + N + K)
    for out_dtype in (None, torch.float32):
        _assert_close_grouped(_run_grouped(x, wq, s, group, order, out_dtype), x, wq, s, group,
                              order)


@gpu
@pytest.mark.parametrize("kind,group", [("huge", 32), ("tiny", 32), ("huge", 64), ("tiny", 128)])
def test_grouped_is_exact_where_16_bit_products_would_not_be(kind, group):
    x, wq, s = _gen_grouped(200, 1000, 3072, group, torch.float16, seed=7, scale_kind=kind)
    _assert_close_grouped(_run_grouped(x, wq, s, group, "low_first", torch.float32), x, wq, s,
                          group, "low_first")


@gpu
@pytest.mark.parametrize("group", [32, 128])
def test_grouped_identity_probe_gives_the_dequantised_weight_bit_for_bit(group):
    """x = I: every output is one code times its scale, exact in fp32 (11-bit scales)."""
    K, N = 256, 264
    x = torch.eye(K, device="cuda", dtype=torch.float16)
    _, wq, _ = _gen_grouped(1, N, K, group, torch.float16, seed=9)
    s = (1 + torch.randint(0, 1024, (N, K // group), device="cuda") / 1024).half() * 0.01
    out = _run_grouped(x, wq, s, group, "low_first", torch.float32)
    assert torch.equal(out, dequantize_fp4_groupwise(wq, s, group, "low_first").T)


@gpu
@pytest.mark.parametrize("M,N,K,group,cfg", [
    (333, 777, 1056, 32, g.SM90Config(BN=64, STAGES=4)),
    (333, 777, 1056, 32, g.SM90Config(BN=128, STAGES=8)),
    (40, 300, 4096, 32, g.SM90Config(BN=32, STAGES=4, SPLIT=4)),
    (130, 3072, 3072, 32, g.SM90Config(BN=128, SPLIT=3)),
    (17, 136, 320, 64, g.SM90Config(BN=16, STAGES=2, SPLIT=2)),
    (128, 3072, 3072, 64, None),  # the heuristic's split-K
], ids=lambda v: str(v))
def test_grouped_config_paths_and_split_k(M, N, K, group, cfg):
    x, wq, s = _gen_grouped(M, N, K, group, torch.float16, seed=M + K)
    _assert_close_grouped(_run_grouped(x, wq, s, group, "low_first", config=cfg), x, wq, s,
                          group, "low_first")


@gpu
def test_grouped_prepacked_reuse_and_mismatch():
    x, wq, s = _gen_grouped(64, 264, 320, 64, torch.bfloat16, seed=3)
    packed = g.prepack_grouped_sm90(wq, s, 64, "high_first")
    a = _run_grouped(x, wq, s, 64, "high_first")
    b = _run_grouped(x, None, None, 64, "high_first", prepacked=packed)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="prepacked: packed for group width 64"):
        _run_grouped(x, None, None, 32, "high_first", prepacked=packed)
