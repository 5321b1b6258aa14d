"""The decode GEMV (fp4mm/kernels/fp4_gemv.py) against the FP32 oracle.

On a CPU machine these run in Triton's interpreter (fp16 only; the PTX decoder is replaced by its
plain-Triton twin, which produces the same 8 values per word in the same order). bf16 cases need
CUDA. A compile-only test builds the shipped configs for sm_90 and checks that nothing spills.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, replace

import pytest
import torch
from _pdl import assert_late_trigger_follows_the_stores, pdl_order

from fp4mm import reference
from fp4mm.formats import dequantize_nvfp4_blocks, float_to_e4m3
from fp4mm.kernels import fp4_gemv as V

DEV = "cuda" if torch.cuda.is_available() else "cpu"
C = V.GemvConfig


def e4m3(r, c, g):
    return float_to_e4m3(torch.rand(r, c, generator=g) * 1.5 + 0.5).to(DEV)


def rbytes(r, c, g):
    return torch.randint(0, 256, (r, c), dtype=torch.uint8, generator=g).to(DEV)


@dataclass(frozen=True)
class Case:
    op: str  # nvfp4_mm | nvfp4_w4a16_mm | w4a16_mm
    M: int
    N: int
    K: int
    group: int = 16
    dtype: torch.dtype = torch.float16

    def __str__(self):
        dt = str(self.dtype).replace("torch.", "")
        return f"{self.op}-M{self.M}-N{self.N}-K{self.K}-g{self.group}-{dt}"


def make(case: Case, seed=0):
    g = torch.Generator().manual_seed(seed)
    M, N, K = case.M, case.N, case.K
    if case.op == "nvfp4_mm":
        x = (rbytes(M, K // 2, g), e4m3(M, K // 16, g))
    else:
        x = ((torch.randn(M, K, generator=g) * 0.5).to(case.dtype).to(DEV),)
    wq = rbytes(N, K // 2, g)
    if case.op == "w4a16_mm":
        ws = (torch.rand(N, K // case.group, generator=g) * 0.1 + 0.01).to(case.dtype).to(DEV)
    else:
        ws = e4m3(N, K // 16, g)
    return x, wq, ws


def run(case: Case, x, wq, ws, order, cfg, out_dtype=torch.float32):
    out = torch.full((case.M, case.N), float("nan"), dtype=out_dtype, device=DEV)
    if case.op == "nvfp4_mm":
        V.nvfp4_mm_gemv(*x, wq, ws, 0.25, order, out, config=cfg)
        ref = reference.nvfp4_mm(*x, wq, ws, 0.25, order=order)
    elif case.op == "nvfp4_w4a16_mm":
        V.nvfp4_w4a16_mm_gemv(x[0], wq, ws, 0.37, order, out, config=cfg)
        ref = (x[0].float() @ dequantize_nvfp4_blocks(wq, ws, order).T) * 0.37
    else:
        V.w4a16_mm_gemv(x[0], wq, ws, case.group, order, out, config=cfg)
        ref = reference.w4a16_mm(x[0], wq, ws, case.group, order=order)
    return out, ref


def assert_matches(out, ref):
    """Exact up to fp32 summation order: |out - ref| <= 2e-5 * max|ref| (fp32 output); NaN exactly
    where the oracle has NaN (the output was poisoned with NaN, so unwritten elements fail)."""
    assert torch.equal(torch.isnan(out), torch.isnan(ref)), "NaN pattern differs from the oracle"
    fin = ~torch.isnan(ref)
    scale = float(ref[fin].abs().max()) if fin.any() else 0.0
    if out.dtype == torch.float32:
        tol = 2e-5 * scale
    else:  # one final rounding to the output type
        tol = (2.0**-8 if out.dtype == torch.bfloat16 else 2.0**-11) * scale * 1.01
    err = float((out[fin].float() - ref[fin]).abs().max()) if fin.any() else 0.0
    assert err <= tol, f"max error {err:.3g} > {tol:.3g}"


# Config families: FMA (CUDA cores), DOT (tensor cores), DOT with split-K, DOT without the
# PTX decoder, and the heuristic (None). K steps of 32 so that K = 80 leaves a ragged last step.
FMA = C(block_m=4, block_n=16, block_k=32)
DOT = C(block_m=16, block_n=16, block_k=32, use_dot=True)
CONFIGS = {
    "fma": FMA,
    "fma-m1": replace(FMA, block_m=1),
    "dot": DOT,
    "dot-split3": replace(DOT, split_k=3),
    "dot-plain": replace(DOT, use_asm=False),
    "dot-noprefetch": replace(DOT, prefetch=0),
    "dot-prefetch3-split3": replace(DOT, prefetch=3, split_k=3),
    "heuristic": None,
}


def _cfg_for(case: Case, name: str):
    cfg = CONFIGS[name]
    if cfg is not None and not cfg.use_dot and case.M > cfg.block_m and name == "fma-m1":
        return replace(cfg, block_m=1)  # one token per program, M programs along grid axis 0
    return cfg


NVFP4_CASES = [Case(op, M, 37, 80) for op in ("nvfp4_mm", "nvfp4_w4a16_mm") for M in (1, 2, 3, 16)]


@pytest.mark.parametrize("order", ["low_first", "high_first"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("case", NVFP4_CASES, ids=str)
def test_nvfp4_weights_match_oracle(case, cfg_name, order):
    x, wq, ws = make(case)
    out, ref = run(case, x, wq, ws, order, _cfg_for(case, cfg_name))
    assert_matches(out, ref)


# Groupwise: K a multiple of the group but not of the 32-element K step where possible.
GROUP_CASES = [Case("w4a16_mm", M, 37, K, G) for G, K in
               ((2, 80), (4, 80), (16, 80), (32, 96), (64, 192), (128, 384)) for M in (1, 3, 16)]


@pytest.mark.parametrize("order", ["low_first", "high_first"])
@pytest.mark.parametrize("cfg_name", ["fma", "dot", "dot-split3", "dot-prefetch3-split3",
                                      "heuristic"])
@pytest.mark.parametrize("case", GROUP_CASES, ids=str)
def test_groupwise_weights_match_oracle(case, cfg_name, order):
    cfg = CONFIGS[cfg_name]
    if cfg is not None and cfg.use_dot and case.group % 16 == 0:
        cfg = replace(cfg, block_k=min(cfg.block_k, case.group))  # the exact group-scale path
    x, wq, ws = make(case, seed=1)
    out, ref = run(case, x, wq, ws, order, cfg)
    assert_matches(out, ref)


def test_groupwise_pow2_split_path():
    """Tensor cores with a K step spanning several groups take the q = q_a + q_b split path."""
    case = Case("w4a16_mm", 5, 37, 128, 32)
    x, wq, ws = make(case, seed=2)
    out, ref = run(case, x, wq, ws, "high_first", replace(DOT, block_k=64))
    assert_matches(out, ref)


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("cfg_name", ["fma", "dot", "dot-split3"])
def test_16bit_output_one_rounding(cfg_name, out_dtype):
    case = Case("nvfp4_mm", 3, 37, 80)
    x, wq, ws = make(case, seed=3)
    out, ref = run(case, x, wq, ws, "low_first", CONFIGS[cfg_name], out_dtype)
    assert_matches(out, ref)


@pytest.mark.parametrize("cfg_name", ["fma", "dot", "dot-plain"])
@pytest.mark.parametrize("op", ["nvfp4_mm", "nvfp4_w4a16_mm", "w4a16_mm"])
def test_nan_scales_propagate(op, cfg_name):
    """A NaN scale (E4M3 0x7F / 0xFF, or a NaN 16-bit group scale) makes exactly the outputs that
    read it NaN, as in the oracle."""
    case = Case(op, 2, 21, 64, 32)
    x, wq, ws = make(case, seed=4)
    if op == "w4a16_mm":
        ws[3, 1] = float("nan")
    else:
        ws[3, 1] = 0x7F
        ws[9, 0] = 0xFF
        if op == "nvfp4_mm":
            x[1][1, 2] = 0xFF  # a NaN activation scale poisons row 1 of the output
    cfg = CONFIGS[cfg_name]
    if op == "w4a16_mm" and cfg.use_dot:
        cfg = replace(cfg, block_k=32)
    out, ref = run(case, x, wq, ws, "high_first", cfg)
    assert torch.isnan(ref).any()
    assert_matches(out, ref)


def test_one_hot_probe_decodes_every_code():
    """Bit-exact probe: x = e_k (one-hot) makes the output the dequantised weight column k, for
    all 16 codes in both nibbles and every E4M3 scale byte that is finite."""
    N, K = 256, 32
    codes = torch.arange(256, dtype=torch.uint8).reshape(256, 1).repeat(1, K // 2)  # byte n
    scales = torch.arange(256, dtype=torch.int64).remainder(127).to(torch.uint8)  # finite bytes
    ws = scales.reshape(N, 1).repeat(1, K // 16).to(DEV)
    wq = codes.to(DEV)
    x = torch.zeros(2, K, dtype=torch.float16, device=DEV)
    x[0, 6] = 1.0  # even element (first nibble of byte 3)
    x[1, 7] = 1.0  # odd element
    w = dequantize_nvfp4_blocks(wq, ws, "low_first")
    for cfg in (FMA, DOT):
        out = torch.full((2, N), float("nan"), dtype=torch.float32, device=DEV)
        V.nvfp4_w4a16_mm_gemv(x, wq, ws, 1.0, "low_first", out, config=cfg)
        assert torch.equal(out[0], w[:, 6]) and torch.equal(out[1], w[:, 7])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 is wrong in the interpreter")
@pytest.mark.parametrize("cfg_name", ["fma", "dot", "dot-plain", "heuristic"])
@pytest.mark.parametrize("case", [Case("nvfp4_w4a16_mm", 3, 37, 80, 16, torch.bfloat16),
                                  Case("w4a16_mm", 3, 37, 96, 32, torch.bfloat16),
                                  Case("w4a16_mm", 1, 37, 80, 16, torch.bfloat16)], ids=str)
def test_bf16_matches_oracle(case, cfg_name):
    cfg = CONFIGS[cfg_name]
    if cfg is not None and cfg.use_dot and case.op == "w4a16_mm":
        cfg = replace(cfg, block_k=16)
    x, wq, ws = make(case, seed=5)
    out, ref = run(case, x, wq, ws, "low_first", cfg)
    assert_matches(out, ref)


def test_heuristic_configs_are_valid():
    for M in (1, 2, 3, 4, 8, 16, 17, 32, 64, 100):
        for N, K in ((18432, 3072), (8192, 8192), (37, 80), (3072, 3072)):
            for group, nvfp4 in ((16, True), (32, False), (128, False), (2, False)):
                for x_fp4 in (False, True) if nvfp4 else (False,):
                    cfg = V.choose_config(M, N, K, group_size=group, nvfp4=nvfp4, x_fp4=x_fp4)
                    assert V.is_valid_config(cfg), cfg


def test_invalid_config_is_rejected():
    case = Case("nvfp4_mm", 1, 8, 32)
    x, wq, ws = make(case)
    with pytest.raises(ValueError, match="config"):
        run(case, x, wq, ws, "low_first", C(block_m=16, block_n=8, use_dot=True))


# ------------------------------------------------------------------------ sm_90 compile, no spills
_COMPILE_SCRIPT = r"""
import os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fp4mm.kernels import fp4_gemv as V

ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
names = V._fp4_gemv_kernel.arg_names
div = {"x_ptr", "xs_ptr", "w_ptr", "ws_ptr", "out_ptr", "alpha_ptr", "N", "K", "K_SPLIT",
       "stride_xm", "stride_xsm", "stride_wn", "stride_wsn", "stride_om"}
shapes = [(M, 18432, 3072) for M in (1, 4, 16, 64)] + [(1, 8192, 8192)]
problems = [("nvfp4_mm", 16, "fp16"), ("nvfp4_w4a16_mm", 16, "fp16"),
            ("nvfp4_w4a16_mm", 16, "bf16"), ("w4a16_mm", 32, "fp16"), ("w4a16_mm", 128, "bf16")]
seen = set()
for op, group, xdt in problems:
    for M, N, K in shapes:
        nv = op != "w4a16_mm"
        cfg = V.choose_config(M, N, K, group_size=group, nvfp4=nv, x_fp4=op == "nvfp4_mm")
        # alpha read from a device tensor (fp4mm.kernels.alpha) where the epilogue applies it
        for alpha_ptr in ((False, True) if cfg.split_k == 1 else (False,)):
            key = (op, group, xdt, cfg, alpha_ptr)
            if key in seen:
                continue
            seen.add(key)
            x_fp4 = op == "nvfp4_mm"
            types = dict(x_ptr="*i32" if x_fp4 else "*" + xdt, xs_ptr="*u8" if x_fp4 else "*" + xdt,
                         w_ptr="*i32", ws_ptr="*u8" if nv else "*" + xdt,
                         out_ptr="*fp32" if cfg.split_k > 1 else "*fp16",
                         M="i32", N="i32", K="i32", K_SPLIT="i32", alpha="fp32",
                         alpha_ptr="*fp32", stride_xm="i32",
                         stride_xsm="i32", stride_wn="i32", stride_wsn="i32", stride_om="i32")
            const = dict(X_FP4=x_fp4, W_NVFP4=nv, GROUP=group, HIGH_FIRST=False,
                         BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                         USE_DOT=cfg.use_dot, USE_ASM=1 if cfg.use_asm else 0,
                         PARTIAL=cfg.split_k > 1, EVEN_K=True, PREFETCH=cfg.prefetch,
                         ALPHA_PTR=alpha_ptr)
            sig = {n: ("constexpr" if n in const else types[n]) for n in names}
            attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in div}
            k = triton.compile(ASTSource(fn=V._fp4_gemv_kernel, signature=sig, constexprs=const,
                                         attrs=attrs), target=GPUTarget("cuda", 90, 32),
                               options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
            d = tempfile.mkdtemp()
            with open(os.path.join(d, "k.ptx"), "w") as f:
                f.write(k.asm["ptx"])
            r = subprocess.run([ptxas, "-arch=sm_90a", "-v", os.path.join(d, "k.ptx"), "-o",
                                os.path.join(d, "k.cubin")], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", r.stderr)
            regs = re.findall(r"Used (\d+) registers", r.stderr)
            print(op, group, xdt, cfg, "regs", regs, "spills", spills)
            assert spills and all(a == "0" and b == "0" for a, b in spills), r.stderr
print("OK", len(seen))
"""


def test_shipped_configs_compile_for_sm90_without_spills():
    """Compile-only (works on a CPU machine): every config the heuristic ships for the decode
    shapes builds for sm_90 with the PTX decoder, and ptxas reports no spill."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def test_reduce_pdl_late_lets_the_next_kernel_launch_after_the_stores():
    """Compile-only for sm_90a: the split-K reduce with ``pdl_late`` (behind W4A4 on the
    register ring, ``fp4_gemv_sm90.REDUCE_PDL_LATE_MIN_M_W4A4``) lets the next kernel launch
    after its store; without it right after its wait."""
    sig = {"part_ptr": "*fp32", "out_ptr": "*fp16", "M": "i32", "N": "i32", "alpha": "fp32",
           "alpha_ptr": "*fp32", "stride_om": "i32", "SPLIT_K": "constexpr", "BLOCK": "constexpr",
           "PDL": "constexpr", "ALPHA_PTR": "constexpr", "PDL_LATE": "constexpr"}
    consts = {"SPLIT_K": 3, "BLOCK": 1024, "ALPHA_PTR": False}
    assert_late_trigger_follows_the_stores(
        *pdl_order("fp4mm.kernels.fp4_gemv", "_splitk_reduce_kernel", sig, consts))


@pytest.mark.parametrize("name", ["dot", "dot-split3", "fma"])
def test_alpha_from_a_device_tensor_gives_the_same_bits(name):
    """alpha as a one-element float32 tensor (read by the kernel or the split-K reduce,
    fp4mm.kernels.alpha) gives exactly the float-alpha result."""
    case = Case("nvfp4_mm", 5, 40, 160)
    x, wq, ws = make(case, seed=4)
    outs = []
    for alpha in (0.375, torch.tensor([0.375], device=DEV)):
        out = torch.full((case.M, case.N), float("nan"), dtype=torch.float16, device=DEV)
        V.nvfp4_mm_gemv(*x, wq, ws, alpha, "low_first", out, config=CONFIGS[name])
        outs.append(out)
    assert not torch.isnan(outs[0]).any() and torch.equal(outs[0], outs[1])
