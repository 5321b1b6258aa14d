import pytest
import torch

from fp4mm.formats import swizzle_scales_128x4, unswizzle_scales_128x4


def offset(r, c, cols):
    return ((r // 128) * -(-cols // 4) + c // 4) * 512 + (r % 32) * 16 + ((r // 32) % 4) * 4 + c % 4


@pytest.mark.parametrize("rows, cols", [(128, 4), (1, 1), (130, 7), (256, 12), (300, 3)])
def test_swizzle_follows_the_offset_formula(rows, cols):
    scales = torch.randint(1, 256, (rows, cols), dtype=torch.uint8)
    sw = swizzle_scales_128x4(scales)
    R, C = -(-rows // 128) * 128, -(-cols // 4) * 4
    assert sw.shape == (R, C)
    flat = sw.flatten()
    for r in range(rows):
        for c in range(cols):
            assert flat[offset(r, c, cols)] == scales[r, c]
    assert int((flat != 0).sum()) == rows * cols  # padding is zero
    assert torch.equal(unswizzle_scales_128x4(sw, rows, cols), scales)


def test_unswizzle_checks_size():
    with pytest.raises(ValueError, match="swizzled: expected 512 elements"):
        unswizzle_scales_128x4(torch.zeros(100, dtype=torch.uint8), 128, 4)
