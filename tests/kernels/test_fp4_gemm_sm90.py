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
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from fp4mm import reference
from fp4mm.formats import dequantize_nvfp4_blocks

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

# (BN, STAGES, activation dtype, out dtype, split specialised to 1): every kernel specialisation
# choose_config can return (SPLIT is a runtime argument: one kernel serves every split factor),
# plus bf16/fp32 paths, plus split == 1 as Triton's launcher specialises an int argument of 1
SHIPPED = sorted({(c.BN, c.STAGES, "fp16", "fp16", False) for c in g.shipped_configs()}) + [
    (256, 4, "bf16", "bf16", False), (256, 2, "fp16", "fp32", False),
    (128, 4, "fp16", "fp32", False), (256, 4, "fp16", "fp16", True),
    (128, 6, "fp16", "fp16", True)]
_GL = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def _compile(bn, stages, dt, ot, split1=False):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource

    gdt = getattr(gl, _GL[dt])
    xl = gl.NVMMASharedLayout.get_default_for([bn, 64], gdt)
    yl = gl.NVMMASharedLayout.get_default_for([bn, 128], getattr(gl, _GL[ot]))
    sig = {"w_desc": f"tensordesc<u8[16, 256],{g._PLAIN8!r}>",
           "s_desc": f"tensordesc<u8[8, 128],{g._PLAIN8!r}>",
           "x_desc": f"tensordesc<{dt}[{bn}, 64],{xl!r}>",
           "y_desc": f"tensordesc<{ot}[{bn}, 128],{yl!r}>",
           "ws_ptr": "*fp32", "alpha": "fp32", "num_units": "i32", "num_full": "i32",
           "split": "i32", "k_per_split": "i32", "num_m_tiles": "i32", "k_tiles": "i32",
           "BN": "constexpr", "STAGES": "constexpr", "DTYPE": "constexpr", "GK": "constexpr"}
    constexprs = {"BN": bn, "STAGES": stages, "DTYPE": gdt, "GK": 0}
    if split1:
        sig["split"] = "constexpr"
        constexprs["split"] = 1
    src = GluonASTSource(g._fp4_gemm_sm90_kernel, sig, constexprs=constexprs,
                         attrs={(4,): [["tt.divisibility", 16]]})  # ws_ptr, as at launch
    with contextlib.redirect_stdout(io.StringIO()):
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


def compile_report(bn, stages, dt, ot, split1=False) -> dict:
    """Compile one config for sm_90a and collect what the test asserts on."""
    k = _compile(bn, stages, dt, ot, split1)
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
            "st_global_scalar": len(re.findall(r"st\.global\.b32", ptx)),
            "shared": k.metadata.shared, "hazards": hazards}


@pytest.fixture(scope="module")
def compile_reports():
    """Every shipped config compiled in a clean child process: with TRITON_INTERPRET=1 (set for
    the CPU test session) earlier interpreted kernels leave triton's language patched, which
    breaks Gluon compilation in this process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_fp4_gemm_sm90 as t; "
            "print(json.dumps([t.compile_report(*c) for c in t.SHIPPED]))")
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__))],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return dict(zip(SHIPPED, json.loads(r.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("bn,stages,dt,ot,split1", SHIPPED, ids=lambda v: str(v))
def test_compiles_for_sm90a_without_hazards(compile_reports, bn, stages, dt, ot, split1):
    rep = compile_reports[(bn, stages, dt, ot, split1)]
    assert rep["register_a_wgmma"]
    assert rep["warp_specialised"]
    # the thread-ordered prepack gives one 16-byte load of codes and one of scales per tile
    assert rep["ld_shared_v4"] >= 2
    # split-K partials leave as 8-byte stores (a token pair per thread), not scalar ones
    assert rep["st_global_v2"] > 0 and rep["st_global_scalar"] == 0
    log = rep["ptxas_log"]
    assert "0 bytes spill stores, 0 bytes spill loads" in log, log
    assert "C7512" not in log, log  # wgmma serialised for lack of registers
    assert rep["shared"] <= g.SMEM_LIMIT
    assert rep["hazards"] == 0, "an instruction overwrites A registers of an in-flight HGMMA"


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
    sc = p.scales.view(Np // 128, 8, Kp // 64, 8, 16)  # nb, w, kt, g, j = e + 2 h + 4 kb
    got_s = torch.zeros((Np, Kp // 16), dtype=torch.uint8)
    for nb, w, kt, gg, j in itertools.product(range(2), range(8), range(Kp // 64), range(8),
                                              range(16)):
        e, h, kb = j % 2, (j // 2) % 2, j // 4
        row, col = nb * 128 + 16 * w + 8 * h + gg, kt * 4 + kb
        if e:
            assert sc[nb, w, kt, gg, j] == sc[nb, w, kt, gg, j - 1]  # each scale stored twice
        got_s[row, col] = sc[nb, w, kt, gg, j]
    want_s = torch.zeros_like(got_s)
    want_s[:N, :K // 16] = w_s
    assert torch.equal(got_s, want_s)


def test_configs_are_valid_and_fit_shared_memory():
    for M in (1, 16, 17, 64, 100, 128, 129, 1024, 2048, 4096):
        for N in (8, 3072, 18432):
            for ot in (torch.float16, torch.bfloat16, torch.float32):
                assert g.config_is_valid(g.choose_config(M, N, 3072, ot), ot)
    assert not g.config_is_valid(g.SM90Config(BN=256, STAGES=8))
    assert not g.config_is_valid(g.SM90Config(BN=48))
    assert not g.config_is_valid(g.SM90Config(SPLIT=0))
    assert not g.config_is_valid(g.SM90Config(SPLIT=17))


def test_heuristic_splits_k_only_where_the_grid_is_short():
    """N = 3072 has 24 row blocks: M = 128 gives 24 tiles for 132 SMs, so K is split; the
    challenge case (1152 tiles) and 4096 x 3072 keep whole 128 x 256 tiles, as measured."""
    assert g.choose_config(128, 3072, 3072).SPLIT > 1
    assert g.choose_config(128, 3072, 16384).SPLIT > 1
    assert g.choose_config(2048, 18432, 3072) == g.SM90Config(BN=256, STAGES=4)
    assert g.choose_config(2048, 18432, 3072) == g.SM90Config(BN=256, STAGES=4)
    assert g.choose_config(4096, 3072, 3072) == g.SM90Config(BN=256, STAGES=4)


@pytest.mark.parametrize("M,N,K,cfg,sms", [
    (128, 3072, 3072, g.SM90Config(BN=128, SPLIT=4), 132),  # 24 tiles, all split in 4 x 12
    (300, 3500, 1040, g.SM90Config(BN=64, SPLIT=4), 132),  # 5 x 28 = 140 tiles: 8 split in 3
    (17, 200, 208, g.SM90Config(BN=16, SPLIT=5), 2),  # K tiles 4: slices of 2, 1 whole wave
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
