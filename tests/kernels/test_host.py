"""The launchers' host arithmetic matches Triton's (which costs ~3 us a call from Python)."""

import pytest

triton = pytest.importorskip("triton")

from fp4mm.kernels.host import cdiv, next_power_of_2  # noqa: E402


def test_cdiv_matches_triton():
    for a in [*range(0, 300), 18431, 18432, 18433, 2**31 - 1, 2**40 + 3]:
        for b in (1, 2, 3, 16, 64, 128, 132, 1024):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)


def test_next_power_of_2_matches_triton():
    for n in [*range(0, 1100), 2**20 - 1, 2**20, 2**20 + 1, 2**40 + 1]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n


def test_launchers_do_not_call_tritons_host_helpers():
    """Host code uses these helpers; ``triton.cdiv`` / ``triton.next_power_of_2`` stay in device
    code only (a Gluon kernel's constexpr arithmetic)."""
    import inspect

    from fp4mm.kernels import (
        dequant_nvfp4,
        fp4_gemm,
        fp4_gemm_sm90,
        fp4_gemv,
        fp4_gemv_fp8_sm90,
        fp4_gemv_sm90,
        fp4_gemv_tma_sm90,
        prepack_sm90,
        quantize_nvfp4,
    )

    for mod in (dequant_nvfp4, fp4_gemm, fp4_gemm_sm90, fp4_gemv, fp4_gemv_fp8_sm90,
                fp4_gemv_sm90, fp4_gemv_tma_sm90, prepack_sm90, quantize_nvfp4):
        for name, obj in vars(mod).items():
            fn = getattr(obj, "__wrapped__", obj)  # the cached ones (functools.lru_cache)
            if inspect.isfunction(fn) and fn.__module__ == mod.__name__:
                src = inspect.getsource(fn)
                assert "triton.cdiv(" not in src and "triton.next_power_of_2(" not in src, (
                    f"{mod.__name__}.{name}")
