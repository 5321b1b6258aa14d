"""prepack_sm90 (plain Triton; CPU interpreter in CI): bit-exact vs the torch twin.

The twin is ``fp4_gemm_sm90.prepack_weight_sm90`` run on the CPU (its torch code; on CUDA it may
call this kernel, so the comparison always uses CPU copies). Random bytes for codes and scales,
ragged N and K (padding with zeros), both nibble orders, every tiles-per-program path.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from fp4mm.kernels.prepack_sm90 import group_scales_sm90_triton, prepack_sm90_triton

g = pytest.importorskip("fp4mm.kernels.fp4_gemm_sm90")
DEV = "cuda" if torch.cuda.is_available() else "cpu"

NS = [1, 127, 128, 300]
KS = [16, 64, 128, 192, 3072]
ORDERS = ["low_first", "high_first"]


def _weights(N, K, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w_q = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=gen)
    w_s = torch.randint(0, 256, (N, K // 16), dtype=torch.uint8, generator=gen)
    return w_q.to(DEV), w_s.to(DEV)


def _twin(w_q, w_s, order):
    """The torch code, run on the CPU (on CUDA prepack_weight_sm90 may call the kernel itself)."""
    return g.prepack_weight_sm90(w_q.cpu(), w_s.cpu(), order)


def _assert_same(got, twin):
    codes, scales = (t.cpu() for t in got)
    assert codes.shape == twin.codes.shape and scales.shape == twin.scales.shape
    assert codes.dtype == scales.dtype == torch.uint8 and codes.is_contiguous()
    assert torch.equal(codes, twin.codes), "codes differ from the torch prepack"
    assert torch.equal(scales, twin.scales), "scales differ from the torch prepack"


@pytest.mark.parametrize("N,K,order", list(itertools.product(NS, KS, ORDERS)),
                         ids=lambda v: str(v))
def test_bit_exact_vs_torch_prepack(N, K, order):
    w_q, w_s = _weights(N, K, seed=N * 7919 + K)
    _assert_same(prepack_sm90_triton(w_q, w_s, order), _twin(w_q, w_s, order))


@pytest.mark.parametrize("kt_per", [1, 2, 4, 8])
def test_every_tiles_per_program_path(kt_per):
    w_q, w_s = _weights(200, 1024)  # 16 K tiles: divisible by every kt_per
    _assert_same(prepack_sm90_triton(w_q, w_s, "high_first", kt_per_program=kt_per),
                 _twin(w_q, w_s, "high_first"))


def test_strided_inputs_and_fp8_scales():
    """Views with a row stride wider than the row, and float8_e4m3fn scales, are accepted."""
    w_q, w_s = _weights(130, 256)
    wq_wide = torch.zeros((130, 200), dtype=torch.uint8, device=DEV)
    wq_wide[:, :128] = w_q
    ws8 = w_s.view(torch.float8_e4m3fn)
    _assert_same(prepack_sm90_triton(wq_wide[:, :128], ws8, "low_first"),
                 _twin(w_q, w_s, "low_first"))


def test_padding_is_zero_not_garbage():
    """Pins the masked loads: the padded rows/columns must be 0 even if the buffer was dirty."""
    w_q = torch.full((3, 8), 0xFF, dtype=torch.uint8, device=DEV)
    w_s = torch.full((3, 1), 0x7E, dtype=torch.uint8, device=DEV)
    codes, scales = prepack_sm90_triton(w_q, w_s)
    assert int((codes == 0xFF).sum()) == 3 * 8 and int((scales == 0x7E).sum()) == 3  # once each
    assert int((codes != 0).sum()) == 24 and int((scales != 0).sum()) == 3


@pytest.mark.parametrize("bad", ["dtype", "shape", "order", "kt_per"])
def test_bad_arguments_are_named(bad):
    w_q, w_s = _weights(4, 64)
    kw, order, match = {}, "low_first", bad
    if bad == "dtype":
        w_q, match = w_q.to(torch.int16), "w_q"
    elif bad == "shape":
        w_s, match = w_s[:, :2], "w_scales"
    elif bad == "order":
        order = "middle"
    else:
        kw, match = {"kt_per_program": 4}, "kt_per_program"  # 2 K tiles
    with pytest.raises(ValueError, match=match):
        prepack_sm90_triton(w_q, w_s, order, **kw)


@pytest.mark.parametrize("N,K,group_size", [(1, 64, 32), (127, 96, 32), (300, 640, 64),
                                            (200, 3072, 128), (130, 576, 192)],
                         ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_group_scales_bit_exact_vs_torch_prepack(N, K, group_size, dtype):
    """The 16-bit group scales' fp32 layout (w4a16_mm on Hopper): ragged N, K not a multiple of
    128, every group width; a strided (transposed-view) input as well."""
    if dtype == torch.bfloat16 and DEV == "cpu":
        pytest.skip("the interpreter computes bf16 wrongly")
    gen = torch.Generator().manual_seed(N + K)
    sc = (torch.rand((N, K // group_size), generator=gen) * 0.1 + 0.01).to(dtype).to(DEV)
    gk = g.group_k(group_size)
    want = g.prepack_group_scales_sm90(sc.cpu(), group_size)
    assert torch.equal(group_scales_sm90_triton(sc, group_size, gk).cpu(), want)
    strided = sc.T.contiguous().T  # same values, column-major strides
    assert torch.equal(group_scales_sm90_triton(strided, group_size, gk).cpu(), want)


def test_group_scales_reject_a_bad_group_width():
    with pytest.raises(ValueError, match="gk"):
        group_scales_sm90_triton(torch.ones((4, 2), dtype=torch.float16, device=DEV), 48, 32)
