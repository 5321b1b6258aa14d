import pytest
import torch

import fp4mm
from fp4mm import reference
from fp4mm.challenge import FP4MatmulChallenge, NVFP4MatmulChallenge


@pytest.fixture(params=["reference", "auto"])
def backend(request, monkeypatch):
    monkeypatch.setenv("FP4MM_BACKEND", request.param)
    return request.param


def test_solve_matches_the_challenge_reference(backend):
    c = NVFP4MatmulChallenge("cpu")
    for case in [c.generate_example_test()] + c.generate_functional_test()[:6]:
        expected = torch.empty_like(case["y"])
        c.reference_impl(**{**case, "y": expected})
        case["y"].fill_(float("nan"))
        fp4mm.solve(**case)
        assert torch.equal(case["y"], expected)


def test_solve_w4a16_matches_the_challenge_reference(backend):
    c = FP4MatmulChallenge("cpu")
    for case in [c.generate_example_test()] + c.generate_functional_test()[:6]:
        expected = torch.empty_like(case["y"])
        c.reference_impl(**{**case, "y": expected})
        case["y"].fill_(float("nan"))
        fp4mm.solve_w4a16(**case)
        assert torch.equal(case["y"], expected)


def test_solve_uses_high_first_nibbles():
    case = NVFP4MatmulChallenge("cpu").generate_example_test()
    fp4mm.solve(**case)
    assert case["y"].tolist() == [[32.0, -16.0], [16.0, -8.0]]
    # 0x21 is (1.0, 0.5) high-first but (0.5, 1.0) low-first: only W4A16 can tell.
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float16)
    y = torch.empty(1, 1, dtype=torch.float16)
    fp4mm.solve_w4a16(x, torch.tensor([[0x21]], dtype=torch.uint8),
                      torch.ones(1, 1, dtype=torch.float16), y, 1, 1, 2, 2)
    assert y.item() == 1.0


def test_solve_rejects_bad_input():
    case = NVFP4MatmulChallenge("cpu").generate_example_test()
    with pytest.raises(ValueError, match=r"x_q: expected shape \(3, 8\)"):
        fp4mm.solve(**{**case, "M": 3})
    with pytest.raises(ValueError, match="K: expected a positive multiple of 16"):
        fp4mm.solve(**{**case, "K": 8})
    with pytest.raises(TypeError, match="y: expected dtype torch.float16"):
        fp4mm.solve(**{**case, "y": case["y"].float()})
    with pytest.raises(ValueError, match="y: expected a contiguous"):
        fp4mm.solve(**{**case, "y": torch.empty(2, 2, dtype=torch.float16).t()})
    with pytest.raises(TypeError, match="M: expected an int"):
        fp4mm.solve(**{**case, "M": 2.0})
    with pytest.raises(ValueError, match="alpha: expected a finite number"):
        fp4mm.solve(**{**case, "alpha": float("inf")})


def test_unknown_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("FP4MM_BACKEND", "cutlass")
    case = NVFP4MatmulChallenge("cpu").generate_example_test()
    with pytest.raises(ValueError, match="FP4MM_BACKEND: expected one of"):
        fp4mm.solve(**case)


def test_ops_reference_path_casts_and_writes_out(monkeypatch):
    monkeypatch.setenv("FP4MM_BACKEND", "reference")
    g = torch.Generator().manual_seed(0)
    xq = torch.randint(0, 256, (3, 16), dtype=torch.uint8, generator=g)
    xs = torch.full((3, 2), 0x38, dtype=torch.uint8)
    exact = reference.nvfp4_mm(xq, xs, xq, xs, 0.5)
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        y = fp4mm.nvfp4_mm(xq, xs, xq, xs, 0.5, out_dtype=dtype)
        assert y.dtype == dtype and torch.equal(y, exact.to(dtype))
    out = torch.empty(3, 3, dtype=torch.float16)
    assert fp4mm.nvfp4_mm(xq, xs, xq, xs, 0.5, out=out) is out
    with pytest.raises(TypeError, match="out: expected dtype torch.float32"):
        fp4mm.nvfp4_mm(xq, xs, xq, xs, 0.5, out_dtype=torch.float32, out=out)
    with pytest.raises(TypeError, match="out_dtype: expected one of"):
        fp4mm.nvfp4_mm(xq, xs, xq, xs, 0.5, out_dtype=torch.int8)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU tensors under Triton's interpreter")
def test_triton_backend_refuses_bf16_cpu_tensors(monkeypatch):
    """Triton's interpreter computes bf16 wrongly: an error, never a wrong answer."""
    from fp4mm.backend import triton_interpreting

    if not triton_interpreting():
        pytest.skip("needs TRITON_INTERPRET=1 (the CPU test session)")
    monkeypatch.setenv("FP4MM_BACKEND", "triton")
    x = torch.randn(2, 32).bfloat16()
    w = fp4mm.quantize_nvfp4(torch.randn(8, 32))
    with pytest.raises(RuntimeError, match="bfloat16"):
        fp4mm.nvfp4_w4a16_mm(x, w.data, w.scales, w.global_scale)
    assert fp4mm.nvfp4_w4a16_mm(x.half(), w.data, w.scales, w.global_scale).shape == (2, 8)
