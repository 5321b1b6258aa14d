"""CPU compile-only check of the prefill GEMM for sm_90 (no GPU needed): every config that
``choose_config`` can return issues ``wgmma`` with the A operand in registers, ptxas reports no
spills, and the SASS has no instruction that overwrites the A registers of a ``wgmma`` still in
flight (``_sass_hazard.py``; undefined behaviour per PTX, triton-lang/triton#9433). The SASS
comes from triton's bundled ptxas, the one the GPU runs use, via the bundled nvdisasm."""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fp4mm.kernels import fp4_gemm as G

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
ARGS = ["x_ptr", "w_ptr", "s_ptr", "out_ptr", "M", "N", "K", "alpha", "alpha_ptr",
        "stride_xm", "stride_wn", "stride_sn", "stride_om"]
DIVISIBLE = (0, 1, 2, 3, 5, 6, 8, 9, 10, 11, 12)  # what the JIT specialises for 2048x18432x3072


def compile_sm90(cfg, *, x="fp16", out="fp16", nvfp4=True, words=False, permuted=False,
                 group=16, high_first=None, alpha_ptr=False):
    scale = ("i32" if words else "u8") if nvfp4 else x
    types = [f"*{x}", "*u8", f"*{scale}", f"*{out}", "i32", "i32", "i32", "fp32", "*fp32",
             "i32", "i32", "i32", "i32"]
    path = G._scale_path(nvfp4, group)
    consts = dict(SCALE_PATH=path, GROUP=group, SUB=G._sub_k(path, group, cfg.block_k),
                  SPLIT_M=G._split_m(path, cfg.block_m),
                  HIGH_FIRST=(not permuted) if high_first is None else high_first,
                  EVEN_K=True, SCALE_WORDS=words, W_PERM=permuted,
                  BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                  GROUP_N=cfg.group_n, NUM_STAGES=cfg.num_stages, ALPHA_PTR=alpha_ptr)
    sig = dict(zip(ARGS, types)) | {k: "constexpr" for k in consts}
    src = ASTSource(G._fp4_gemm_kernel, sig, constexprs=consts,
                    attrs={(i,): [["tt.divisibility", 16]] for i in DIVISIBLE})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})


def ptxas_report(ptx: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        r = subprocess.run([PTXAS, "-arch=sm_90a", "-v", f.name, "-o", os.devnull],
                           capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    return r.stderr


def _shipped() -> dict:
    """Every config ``choose_config`` returns (M = 16, 64, 128, 2048 and the FMA-group config)
    crossed with the kernel variants the ops launch on it: NVFP4 raw (both nibble orders, fp16
    and bf16), NVFP4 prepacked, groupwise (group 16 / 32 / 128, fp16 and bf16, both orders)."""
    cases = {}
    for M in (16, 64, 128, 2048):
        nv, gw = G.choose_config(M, 18432, 3072), G.choose_config(M, 8192, 3072, 32)
        cases[f"nvfp4-raw-m{M}"] = (nv, dict())
        cases[f"nvfp4-raw-alpha-ptr-m{M}"] = (nv, dict(alpha_ptr=True))
        cases[f"nvfp4-raw-lowfirst-bf16-m{M}"] = (nv, dict(x="bf16", out="bf16", high_first=False))
        pk = G.choose_config(M, 18432, 3072, prepacked=True)
        cases[f"nvfp4-prepacked-m{M}"] = (pk, dict(words=True, permuted=True))
        cases[f"nvfp4-prepacked-bf16-m{M}"] = (pk, dict(words=True, permuted=True, x="bf16",
                                                        out="bf16"))
        cases[f"w4a16-g32-m{M}"] = (gw, dict(nvfp4=False, group=32))
        cases[f"w4a16-g128-lowfirst-bf16-m{M}"] = (
            G.choose_config(M, 8192, 3072, 128),
            dict(nvfp4=False, group=128, x="bf16", out="bf16", high_first=False))
        cases[f"w4a16-g16-lowfirst-m{M}"] = (G.choose_config(M, 8192, 3072, 16),
                                             dict(nvfp4=False, group=16, high_first=False))
    cases["w4a16-g4-fma"] = (G.choose_config(2048, 8192, 3072, 4), dict(nvfp4=False, group=4))
    return cases


SHIPPED = _shipped()
PREFILL = ["nvfp4-raw-m2048", "nvfp4-prepacked-m2048", "w4a16-g32-m2048"]


def _report(name: str) -> dict:
    from _sass_hazard import check

    cfg, kw = SHIPPED[name]
    k = compile_sm90(cfg, **kw)
    ptx = k.asm["ptx"]
    wgmma = re.findall(r"wgmma\.mma_async\.sync\.aligned\.\S+[^;]*;", ptx)
    report = ptxas_report(ptx)
    with contextlib.redirect_stdout(io.StringIO()):
        hazards = check(k.asm["sass"], name)
    return dict(
        wgmma=len(wgmma),
        reg_a=sum(bool(re.search(r"\},\s*\{%r", w)) for w in wgmma),
        spills=re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report),
        shared=k.metadata.shared, c7515="C7515" in report, hazards=hazards)


def report_all() -> dict:
    """Compile every shipped config; ``{name: {"wgmma": n, "reg_a": n, "spills": [...],
    "shared": bytes, "c7515": bool, "hazards": n}}``. Needs TRITON_INTERPRET unset (real
    JITFunctions); compiles in parallel worker processes."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return dict(zip(SHIPPED, pool.map(_report, SHIPPED)))


@pytest.fixture(scope="module")
def reports():
    # The test session runs kernels in the interpreter (TRITON_INTERPRET=1 turns @triton.jit into
    # interpreted functions), so compile in a clean subprocess.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, importlib.util, os, sys; sys.path.insert(0, sys.argv[1]); "
            "sys.path.insert(0, os.path.dirname(sys.argv[2])); "
            "import test_compile_sm90 as m; print(json.dumps(m.report_all()))")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", code, root, os.path.abspath(__file__)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists(PTXAS), reason="triton's bundled ptxas is missing")
@pytest.mark.parametrize("name", list(SHIPPED))
def test_register_a_wgmma_and_no_spills(reports, name):
    rep = reports[name]
    if name.endswith("-fma"):  # fp32 CUDA-core dot (groups % 16 != 0): no tensor cores at all
        assert rep["wgmma"] == 0
    else:
        assert rep["wgmma"] > 0, "no wgmma in the PTX"
    # register A: the second operand is a brace list of registers, not a 64-bit descriptor
    assert rep["reg_a"] == rep["wgmma"], "wgmma with A from shared memory"
    assert rep["spills"] and all(tuple(s) == ("0", "0") for s in rep["spills"]), rep
    assert rep["shared"] <= 232448, f"shared memory {rep['shared']} B over the sm_90 limit"


@pytest.mark.skipif(not os.path.exists(PTXAS), reason="triton's bundled ptxas is missing")
@pytest.mark.parametrize("name", PREFILL)
def test_prefill_configs_are_not_serialised(reports, name):
    """ptxas C7515 (wgmma serialised) cost 15-20% when it appeared (docs/perf-log.md)."""
    assert not reports[name]["c7515"]


@pytest.mark.skipif(not os.path.exists(PTXAS), reason="triton's bundled ptxas is missing")
@pytest.mark.parametrize("name", list(SHIPPED))
def test_no_register_a_hazard(reports, name):
    """Regression (v4): 24-76 SASS instructions overwrote A registers of an in-flight HGMMA in
    the raw-weight configs (3-4 stages; triton-lang/triton#9433)."""
    assert reports[name]["hazards"] == 0, reports[name]
