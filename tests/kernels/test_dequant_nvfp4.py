"""The W4A4 activation pre-pass: e2m1 * e4m3 to fp16, bit-exact against the codec."""

import pytest
import torch
from _pdl import assert_late_trigger_follows_the_stores, pdl_order

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


def test_pdl_late_lets_the_next_kernel_launch_after_the_stores():
    """Compile-only for sm_90a: with ``pdl_late`` the launch of the next kernel comes after every
    store (a GEMV launched at the pre-pass's start was 11-44 us slower behind it, session 31);
    without it, right after the wait, before any store (the GEMM's pre-pass)."""
    sig = {"q_ptr": "*u8", "s_ptr": "*u8", "out_ptr": "*fp16", "R": "i32", "K": "i32",
           "stride_q": "i32", "stride_s": "i32", "stride_o": "i32", "zero_ptr": "*fp16",
           "n_zero": "i32", "HIGH_FIRST": "constexpr", "BLOCK_R": "constexpr",
           "BLOCK_K": "constexpr", "PDL": "constexpr", "ZERO": "constexpr", "ROW64": "constexpr",
           "PDL_LATE": "constexpr"}
    consts = {"HIGH_FIRST": False, "BLOCK_R": 32, "BLOCK_K": 128, "ZERO": False, "ROW64": False}
    assert_late_trigger_follows_the_stores(
        *pdl_order("fp4mm.kernels.dequant_nvfp4", "_dequant_nvfp4_kernel", sig, consts))
