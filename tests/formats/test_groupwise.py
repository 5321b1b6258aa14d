import pytest
import torch

from fp4mm.formats import dequantize_fp4_groupwise, quantize_fp4_groupwise, unpack_fp4


@pytest.mark.parametrize("group_size", [2, 4, 16, 32, 128])
@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.bfloat16])
def test_round_trip_error_bound(group_size, scale_dtype):
    w = torch.randn(8, 256)
    q = quantize_fp4_groupwise(w, group_size, scale_dtype=scale_dtype)
    assert q.data.shape == (8, 128) and q.scales.shape == (8, 256 // group_size)
    assert q.scales.dtype == scale_dtype
    back = dequantize_fp4_groupwise(q.data, q.scales, group_size)
    unit = q.scales.float().repeat_interleave(group_size, dim=1)
    # Half the widest gap is one scale unit; a scale rounded down saturates within ~1 % more.
    assert ((back - w).abs() <= unit * 1.01).all()


def test_group_max_maps_to_six_and_order_is_honoured():
    w = torch.tensor([[3.0, -1.5, 0.75, 0.0]])
    q = quantize_fp4_groupwise(w, 4, order="high_first")
    assert q.scales.item() == 0.5
    assert unpack_fp4(q.data, "high_first").tolist() == [[7, 13, 3, 0]]  # 6, -3, 1.5, 0
    assert q.data.tolist() == [[0x7D, 0x30]]
    back = dequantize_fp4_groupwise(q.data, q.scales, 4, order="high_first")
    assert back.tolist() == [[3.0, -1.5, 0.75, 0.0]]


def test_zero_group_encodes_positive_zero():
    q = quantize_fp4_groupwise(torch.tensor([[-0.0, 0.0, 1.0, 2.0]]), 2)
    assert q.scales[0, 0].item() == 0 and unpack_fp4(q.data)[0, :2].tolist() == [0, 0]


def test_bad_input():
    with pytest.raises(ValueError, match="group_size: expected an even divisor of K = 12"):
        quantize_fp4_groupwise(torch.ones(1, 12), 8)
    with pytest.raises(TypeError, match="scale_dtype"):
        quantize_fp4_groupwise(torch.ones(1, 16), 16, scale_dtype=torch.float32)
    with pytest.raises(ValueError, match="w: contains NaN"):
        quantize_fp4_groupwise(torch.tensor([[float("nan"), 1.0]]), 2)
    with pytest.raises(ValueError, match="scales: expected shape"):
        dequantize_fp4_groupwise(torch.zeros(2, 8, dtype=torch.uint8),
                                 torch.zeros(2, 3, dtype=torch.float16), 4)
