"""The baselines' own helpers against the codec (the Triton dequantiser in the interpreter)."""

import pytest
import torch

from fp4mm.bench import baselines
from fp4mm.challenge.nvfp4 import random_scale_bytes
from fp4mm.formats import dequantize_fp4_groupwise, dequantize_nvfp4_blocks


def _nvfp4(rows, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (rows, K // 2), dtype=torch.uint8, generator=g),
            random_scale_bytes(rows, K // 16))


def test_lut_dequant_matches_the_codec_exactly():
    q, s = _nvfp4(5, 64)
    lut = baselines._pair_lut(torch.float16, "cpu")
    got = baselines.lut_dequant_nvfp4(q, s, lut)
    assert got.dtype == torch.float16
    assert torch.equal(got.float(), dequantize_nvfp4_blocks(q, s))


def test_lut_dequant_groupwise_matches_the_codec():
    q, _ = _nvfp4(3, 64)
    scales = (0.1 * torch.rand(3, 2) + 0.01).half()
    lut = baselines._pair_lut(torch.float32, "cpu")
    got = baselines.lut_dequant_groupwise(q, scales, 32, lut)
    assert torch.equal(got, dequantize_fp4_groupwise(q, scales, 32))


@pytest.mark.parametrize("rows, K", [(1, 32), (7, 96)])
def test_triton_dequant_kernel_is_exact(rows, K):
    # fp16 output: the interpreter's bf16 is not trustworthy
    q, s = _nvfp4(rows, K, seed=rows)
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU runs it in the interpreter
    got = baselines.dequant_nvfp4_triton(q.to(dev), s.to(dev), torch.float16).cpu()
    assert torch.equal(got.float(), dequantize_nvfp4_blocks(q, s))


def test_mx_twin_with_unit_scales_is_the_plain_fp4_product():
    q_a, _ = _nvfp4(4, 64)
    q_b, _ = _nvfp4(6, 64, seed=1)
    ones_a = torch.full((4, 2), 127, dtype=torch.uint8)
    ones_b = torch.full((6, 2), 127, dtype=torch.uint8)
    one = torch.full((4, 4), 0x38, dtype=torch.uint8)  # E4M3 1.0 per 16
    one_b = torch.full((6, 4), 0x38, dtype=torch.uint8)
    want = dequantize_nvfp4_blocks(q_a, one) @ dequantize_nvfp4_blocks(q_b, one_b).t()
    got = baselines._mx_twin(q_a, ones_a, q_b, ones_b, 0.5)
    assert torch.equal(got, want * 0.5)
    twice = baselines._mx_twin(q_a, ones_a + 1, q_b, ones_b, 1.0)  # e8m0 128 = 2.0
    assert torch.equal(twice, want * 2)


def test_quack_absent_means_no_rows():
    if baselines.quack_module() is not None:
        pytest.skip("quack is installed here")
    from fp4mm.bench.cases import make_problem, select_cases

    case = select_cases(["table5"], [(2, 8, 32)])[0]
    problem = make_problem(case, "cpu", l2_bytes=0)
    for impl in baselines.BASELINES:
        if impl.name.startswith("quack"):
            assert impl.build(case, problem, None) is None
