import pytest

from fp4mm.bench.cases import (
    TABLE5_SHAPES,
    Case,
    n_copies,
    parse_shapes,
    select_cases,
    suite_cases,
)


def test_default_suites_hold_the_challenge_table5_and_decode_cases():
    cases = select_cases(["challenge", "table5", "decode"])
    nvfp4 = [c for c in cases if c.op == "nvfp4_mm" and not c.memory_bound]
    assert {(c.M, c.N, c.K) for c in nvfp4} == set(TABLE5_SHAPES)
    perf = next(c for c in nvfp4 if (c.M, c.N, c.K) == (2048, 18432, 3072))
    assert perf.suites == ("challenge", "table5") and perf.alpha == 1 / 64
    w4 = [c for c in cases if c.op == "w4a16_mm" and not c.memory_bound]
    assert [(c.M, c.N, c.K, c.group_size) for c in w4] == [(2048, 8192, 3072, 32)]
    decode = [c for c in cases if c.memory_bound]
    assert len(decode) == 4 * 3


def test_sweep_merges_with_other_suites_and_keeps_their_impls():
    cases = {c.M: c for c in select_cases(["decode", "sweep"]) if c.op == "nvfp4_mm"}
    assert sorted(cases) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert cases[4].impls is None  # decode runs every impl
    assert cases[8].impls is not None and "torch_dequant_mm" not in cases[8].impls


def test_decode_without_nvfp4_w4a16():
    ops = {c.op for c in suite_cases("decode", have_nvfp4_w4a16=False)}
    assert ops == {"nvfp4_mm", "w4a16_mm"}


def test_bytes_of_the_decode_weights():
    c = Case("nvfp4_mm", 1, 18432, 3072, ("decode",), alpha=1.0)
    assert 31.8e6 < c.bytes < 32.0e6
    assert n_copies(31_850_496, 50 * 2**20) == 5
    assert n_copies(10, 0) == 1


def test_parse_shapes():
    assert parse_shapes("2048x18432x3072, 8192x8192") == [(2048, 18432, 3072), (8192, 0, 8192)]
    with pytest.raises(ValueError, match="--shapes"):
        parse_shapes("12x34x50")
    with pytest.raises(ValueError, match="--shapes"):
        parse_shapes("axb")


def test_case_validation():
    with pytest.raises(ValueError, match="op"):
        Case("matmul", 1, 2, 32, ("x",))
    with pytest.raises(ValueError, match="M"):
        Case("nvfp4_mm", 0, 2, 32, ("x",))
