import itertools

import pytest
import torch

from fp4mm.formats import (
    E2M1_VALUES,
    decode_e2m1,
    encode_e2m1,
    pack_fp4,
    swap_nibbles,
    unpack_fp4,
)

# The spec's table, typed out independently of the codec.
SPEC_TABLE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
              -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
ALL_BYTES = torch.arange(256, dtype=torch.uint8)


def test_value_table_matches_spec_including_negative_zero():
    got = decode_e2m1(torch.arange(16, dtype=torch.uint8))
    assert got.tolist() == SPEC_TABLE
    assert torch.signbit(got[8]) and not torch.signbit(got[0])
    assert list(E2M1_VALUES) == SPEC_TABLE


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_unpack_every_byte(order):
    codes = unpack_fp4(ALL_BYTES, order)
    for b in range(256):
        lo, hi = b & 0xF, b >> 4
        expected = [lo, hi] if order == "low_first" else [hi, lo]
        assert codes[2 * b : 2 * b + 2].tolist() == expected


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_pack_unpack_round_trip_every_byte(order):
    assert torch.equal(pack_fp4(unpack_fp4(ALL_BYTES, order), order), ALL_BYTES)
    pairs = torch.tensor(list(itertools.product(range(16), repeat=2)), dtype=torch.uint8)
    assert torch.equal(unpack_fp4(pack_fp4(pairs, order), order), pairs)


def test_orders_differ_by_a_nibble_swap():
    assert torch.equal(unpack_fp4(swap_nibbles(ALL_BYTES), "high_first"), unpack_fp4(ALL_BYTES))
    assert torch.equal(swap_nibbles(swap_nibbles(ALL_BYTES)), ALL_BYTES)
    # The challenge's example bytes: 0x21 high-first holds (1.0, 0.5).
    codes = unpack_fp4(torch.tensor([0x21], dtype=torch.uint8), "high_first")
    assert decode_e2m1(codes).tolist() == [1.0, 0.5]


def test_unpack_keeps_leading_dims():
    packed = torch.randint(0, 256, (3, 4, 5), dtype=torch.uint8)
    assert unpack_fp4(packed).shape == (3, 4, 10)


# Round to nearest, ties to even code.
TIES = [(0.25, 0.0), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0)]


@pytest.mark.parametrize("x, expected", TIES)
def test_encode_ties_to_even(x, expected):
    for sign in (1.0, -1.0):
        got = decode_e2m1(encode_e2m1(torch.tensor([sign * x])))
        assert got.item() == sign * expected


def test_encode_matches_brute_force_nearest_on_a_dense_grid():
    grid = torch.linspace(-8, 8, 64001).double()  # float32 points, so no rounding below
    mags = torch.tensor(SPEC_TABLE[:8], dtype=torch.float64)
    dist = (grid.abs().unsqueeze(1) - mags).abs()
    best = dist.min(dim=1, keepdim=True).values
    tied = dist == best
    # Among tied candidates pick the even code; beyond 6 saturate to code 7.
    even_first = torch.where(tied[:, 0::2].any(1), (tied[:, 0::2].int().argmax(1) * 2),
                             tied.int().argmax(1))
    expected_mag = mags[even_first]
    got = decode_e2m1(encode_e2m1(grid.float())).double()
    assert torch.equal(got.abs(), expected_mag)
    assert torch.equal(torch.signbit(got), torch.signbit(grid))


def test_encode_saturates_and_round_trips_every_code():
    big = torch.tensor([6.0, 7.0, 1e30, float("inf"), -100.0])
    assert decode_e2m1(encode_e2m1(big)).tolist() == [6.0, 6.0, 6.0, 6.0, -6.0]
    codes = torch.arange(16, dtype=torch.uint8)
    assert torch.equal(encode_e2m1(decode_e2m1(codes)), codes)


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="codes: expected dtype torch.uint8"):
        pack_fp4(torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="codes: expected an even last dimension"):
        pack_fp4(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="codes: expected values in 0..15"):
        pack_fp4(torch.full((2,), 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="order: expected one of"):
        unpack_fp4(ALL_BYTES, "middle_first")
    with pytest.raises(TypeError, match="packed: expected a torch.Tensor"):
        unpack_fp4([1, 2])
