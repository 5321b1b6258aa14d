import ctypes

import pytest
import torch

from fp4mm.challenge import CHALLENGES, FP4MatmulChallenge, NVFP4MatmulChallenge
from fp4mm.formats import e4m3_to_float


def test_nvfp4_metadata_and_signature():
    c = NVFP4MatmulChallenge("cpu")
    assert (c.name, c.atol, c.rtol, c.num_gpus) == ("NVFP4 Matrix Multiplication", 0.1, 0.05, 1)
    sig = c.get_solve_signature()
    assert list(sig) == ["x_q", "x_scales", "w_q", "w_scales", "alpha", "y", "M", "N", "K"]
    u8 = ctypes.POINTER(ctypes.c_uint8)
    assert [sig[k][0] for k in ("x_q", "x_scales", "w_q", "w_scales")] == [u8] * 4
    assert sig["alpha"] == (ctypes.c_float, "in")
    assert sig["y"] == (ctypes.POINTER(ctypes.c_uint16), "out")
    assert all(sig[k] == (ctypes.c_int, "in") for k in "MNK")
    assert c.output_names() == ["y"]


def test_w4a16_metadata_and_signature():
    c = FP4MatmulChallenge("cpu")
    assert (c.name, c.atol, c.rtol, c.num_gpus) == ("FP4 MatMul", 0.05, 0.05, 1)
    sig = c.get_solve_signature()
    assert list(sig) == ["x", "w_q", "scales", "y", "M", "N", "K", "group_size"]
    u16 = ctypes.POINTER(ctypes.c_uint16)
    assert sig["x"][0] == u16 and sig["scales"][0] == u16 and sig["y"] == (u16, "out")
    assert sig["w_q"][0] == ctypes.POINTER(ctypes.c_uint8)


def _run_reference(challenge, case):
    case = dict(case)
    case["y"] = torch.full_like(case["y"], float("nan"))
    challenge.reference_impl(**case)
    return case["y"]


def test_examples_give_the_spec_outputs():
    c = NVFP4MatmulChallenge("cpu")
    y = _run_reference(c, c.generate_example_test())
    assert y.tolist() == [[32.0, -16.0], [16.0, -8.0]]
    c = FP4MatmulChallenge("cpu")
    y = _run_reference(c, c.generate_example_test())
    assert y.tolist() == [[1.0, 2.0, -1.0, 0.0], [1.0, 2.0, -1.0, 0.0]]


def test_nvfp4_functional_cases_follow_the_spec():
    cases = NVFP4MatmulChallenge("cpu").generate_functional_test()
    shapes = [(c["M"], c["N"], c["K"]) for c in cases]
    assert shapes == [(1, 2, 16), (2, 4, 16), (3, 5, 32), (16, 16, 32), (32, 64, 64),
                      (128, 128, 256), (30, 50, 64), (100, 200, 128), (255, 100, 128),
                      (512, 1024, 1024)]
    assert [c["alpha"] for c in cases] == [1.0] * 8 + [0.125, 1 / 64]
    assert not cases[0]["x_q"].any() and cases[1]["x_q"].any()
    big = cases[-1]
    assert big["x_q"].shape == (512, 512) and big["w_scales"].shape == (1024, 64)
    assert big["w_q"].unique().numel() == 256  # every byte: every code, both signs, -0
    scales = e4m3_to_float(torch.cat([big["x_scales"].flatten(), big["w_scales"].flatten()]))
    assert scales.min() >= 0.5 and scales.max() <= 2.0  # uniform [0.5, 2) rounded to E4M3
    assert big["y"].dtype == torch.float16 and big["y"].shape == (512, 1024)


def test_w4a16_functional_cases_follow_the_spec():
    cases = FP4MatmulChallenge("cpu").generate_functional_test()
    shapes = [(c["M"], c["N"], c["K"], c["group_size"]) for c in cases]
    assert shapes == [(1, 2, 4, 2), (2, 4, 4, 2), (3, 5, 8, 4), (16, 16, 32, 16),
                      (32, 64, 64, 32), (128, 128, 256, 32), (30, 50, 64, 32),
                      (100, 200, 128, 32), (255, 100, 128, 32), (512, 1024, 1024, 32)]
    assert not cases[0]["x"].any()
    big = cases[-1]
    assert big["x"].dtype == torch.float16 and 0.4 < big["x"].float().std() < 0.6
    s = big["scales"].float()
    assert big["scales"].dtype == torch.float16 and s.min() >= 0.01 and s.max() <= 0.1101


@pytest.mark.parametrize("name", sorted(CHALLENGES))
def test_cases_are_seeded_and_device_independent(name):
    a = CHALLENGES[name]("cpu").generate_functional_test()
    torch.manual_seed(1234)  # the generator reseeds itself
    b = CHALLENGES[name]("cpu").generate_functional_test()
    for ca, cb in zip(a, b):
        for key, value in ca.items():
            if isinstance(value, torch.Tensor) and key != "y":
                assert torch.equal(value, cb[key]), key


def test_performance_cases():
    # Shapes only: drawing the data is cheap but the reference product is not.
    c = NVFP4MatmulChallenge("cpu").generate_performance_test()
    assert (c["M"], c["N"], c["K"], c["alpha"]) == (2048, 18432, 3072, 1 / 64)
    assert c["w_q"].shape == (18432, 1536)
    c = FP4MatmulChallenge("cpu").generate_performance_test()
    assert (c["M"], c["N"], c["K"], c["group_size"]) == (2048, 8192, 3072, 32)


def test_device_argument_is_checked():
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda'"):
        NVFP4MatmulChallenge("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cases_hold_the_cpu_data():
    a = NVFP4MatmulChallenge("cpu").generate_functional_test()[4]
    b = NVFP4MatmulChallenge("cuda").generate_functional_test()[4]
    assert b["x_q"].is_cuda and torch.equal(a["x_q"], b["x_q"].cpu())
