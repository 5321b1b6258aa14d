import math

import pytest
import torch

from fp4mm.formats import E4M3_MAX, e4m3_table, e4m3_to_float, float_to_e4m3

ALL_BYTES = torch.arange(256, dtype=torch.uint8)


def test_table_matches_torch_float8_for_all_256_bytes():
    ours = e4m3_table()
    theirs = ALL_BYTES.view(torch.float8_e4m3fn).float()
    nan = torch.isnan(theirs)
    assert torch.equal(torch.isnan(ours), nan)
    assert nan.nonzero().flatten().tolist() == [0x7F, 0xFF]
    assert torch.equal(ours[~nan], theirs[~nan])
    assert torch.equal(torch.signbit(ours[~nan]), torch.signbit(theirs[~nan]))


def test_landmarks():
    v = e4m3_to_float(torch.tensor([0x38, 0x7E, 0x01, 0x08, 0x00, 0x80, 0xFE], dtype=torch.uint8))
    assert v.tolist() == [1.0, 448.0, 2.0**-9, 2.0**-6, 0.0, -0.0, -448.0]


def test_accepts_float8_tensors():
    f8 = torch.tensor([1.0, -2.0]).to(torch.float8_e4m3fn)
    assert e4m3_to_float(f8).tolist() == [1.0, -2.0]


def test_encode_round_trips_every_finite_byte():
    finite = [b for b in range(256) if b not in (0x7F, 0xFF)]
    b = torch.tensor(finite, dtype=torch.uint8)
    assert torch.equal(float_to_e4m3(e4m3_to_float(b)), b)


def _midpoints():
    """Every midpoint between neighbouring positive finite E4M3 values, with the expected byte
    (the even mantissa of the two)."""
    values = e4m3_table()[:0x7F].double()
    for b in range(0x7E):
        lo, hi = values[b].item(), values[b + 1].item()
        yield (lo + hi) / 2, b if b % 2 == 0 else b + 1


def test_encode_rounds_to_nearest_even_at_every_midpoint():
    mids, expected = zip(*_midpoints())
    x = torch.tensor(mids, dtype=torch.float64).float()
    assert float_to_e4m3(x).tolist() == list(expected)
    assert float_to_e4m3(-x).tolist() == [e | 0x80 for e in expected]


def test_encode_saturates_and_maps_nan():
    x = torch.tensor([448.0, 464.0, 500.0, 1e30, math.inf, -1e30, math.nan])
    assert float_to_e4m3(x).tolist() == [0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0xFE, 0x7F]
    assert E4M3_MAX == 448.0


def test_encode_subnormals_and_underflow():
    x = torch.tensor([2.0**-10, 3 * 2.0**-10, 2.0**-11, 2.0**-9])
    # 2^-10 ties between 0 and 2^-9 (goes to 0); 3*2^-10 ties between bytes 1 and 2 (goes to 2).
    assert float_to_e4m3(x).tolist() == [0x00, 0x02, 0x00, 0x01]


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="scale_bytes: expected dtype torch.uint8"):
        e4m3_to_float(torch.zeros(3, dtype=torch.int16))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        float_to_e4m3(torch.zeros(3, dtype=torch.int32))
