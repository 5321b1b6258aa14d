"""The W4A4 activation pre-pass: e2m1 * e4m3 to fp16, bit-exact against the codec."""

import pytest
import torch

from fp4mm.formats import dequantize_nvfp4_blocks, float_to_e4m3
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("row64", [None, True], ids=["auto", "row64"])
@pytest.mark.parametrize("order", ["low_first", "high_first"])
@pytest.mark.parametrize("R,K", [(1, 32), (33, 144), (5, 256)], ids=["r1", "ragged", "k256"])
def test_dequant_bit_exact(R, K, order, row64):
    g = torch.Generator().manual_seed(R * K)
    q = torch.randint(0, 256, (R, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    s = torch.randint(0, 256, (R, K // 16), dtype=torch.uint8, generator=g)
    s.view(-1)[:2] = torch.tensor([0x7F, 0xFF], dtype=torch.uint8)  # both NaN bytes, always
    s = s.to(DEV)
    out = torch.full((R, K), 7.0, dtype=torch.float16, device=DEV)
    dequant_nvfp4(q, s, order=order, out=out, row64=row64)
    ref = dequantize_nvfp4_blocks(q, s, order)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))  # 0x7F / 0xFF scale bytes -> NaN
    ok = ~torch.isnan(ref)
    assert torch.equal(out.float()[ok], ref[ok])  # exact in fp16, subnormal scales included


@pytest.mark.needs_gpu_memory(8)
def test_offsets_past_2_to_the_31():
    """The last rows start 2^31 elements into the output: int32 offsets would wrap and write
    before it."""
    R, K = 2**17 + 1, 2**14
    g = torch.Generator(device=DEV).manual_seed(0)
    q = torch.randint(0, 256, (R, K // 2), dtype=torch.uint8, device=DEV, generator=g)
    s = float_to_e4m3(torch.rand(R, K // 16, device=DEV, generator=g) + 0.5)
    out = torch.full((R, K), float("nan"), dtype=torch.float16, device=DEV)
    dequant_nvfp4(q, s, out=out)
    for rows in (slice(0, 2), slice(R - 3, R)):
        assert torch.equal(out[rows].float(), dequantize_nvfp4_blocks(q[rows], s[rows]))


def test_dequant_scale_range_extremes():
    q = torch.full((1, 16), 0x77, dtype=torch.uint8, device=DEV)  # all 6.0
    s = float_to_e4m3(torch.tensor([[448.0, 2.0**-9]])).to(DEV)
    out = dequant_nvfp4(q, s)
    assert out[0, :16].eq(2688.0).all() and out[0, 16:].eq(6 * 2.0**-9).all()


_PDL_ORDER = """
import json, re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fp4mm.kernels import dequant_nvfp4 as D
sig = {"q_ptr": "*u8", "s_ptr": "*u8", "out_ptr": "*fp16", "R": "i32", "K": "i32",
       "stride_q": "i32", "stride_s": "i32", "stride_o": "i32", "zero_ptr": "*fp16",
       "n_zero": "i32", "HIGH_FIRST": "constexpr", "BLOCK_R": "constexpr",
       "BLOCK_K": "constexpr", "PDL": "constexpr", "ZERO": "constexpr", "ROW64": "constexpr",
       "PDL_LATE": "constexpr"}
got = {}
for late in (False, True):
    consts = {"HIGH_FIRST": False, "BLOCK_R": 32, "BLOCK_K": 128, "PDL": True, "ZERO": False,
              "ROW64": False, "PDL_LATE": late}
    ptx = triton.compile(ASTSource(D._dequant_nvfp4_kernel, sig, constexprs=consts),
                         target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]
    got[str(late)] = [m.group(0) for m in re.finditer(r"griddepcontrol\\.\\w+|st\\.global", ptx)]
print(json.dumps(got))
"""


def test_pdl_late_lets_the_next_kernel_launch_after_the_stores():
    """Compile-only for sm_90a (a clean child process: the CPU session's TRITON_INTERPRET
    breaks compilation): with ``pdl_late`` the launch of the next kernel comes after every
    store (a GEMV launched at the pre-pass's start was 11-44 us slower behind it, session 31);
    without it, right after the wait, before any store (the GEMM's pre-pass)."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _PDL_ORDER], capture_output=True, text=True,
                       env=env, timeout=600, check=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    wait, launch = "griddepcontrol.wait", "griddepcontrol.launch_dependents"
    early, late = got["False"], got["True"]
    assert early[:2] == [wait, launch] and early.count(launch) == 1 and "st.global" in early
    assert late[0] == wait and late[-1] == launch and late.count(launch) == 1
    assert late.count("st.global") == early.count("st.global")
