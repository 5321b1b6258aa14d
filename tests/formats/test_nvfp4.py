import numpy as np
import pytest
import torch

from fp4mm.formats import (
    dequantize_nvfp4,
    dequantize_nvfp4_blocks,
    e4m3_table,
    float_to_e4m3,
    nvfp4_global_scale,
    quantize_nvfp4,
    unpack_fp4,
)

E2M1_MAGS = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float64)
E4M3_POS = e4m3_table()[:0x7F].double().numpy()  # bytes 0x00..0x7E, increasing


def _nearest_even(value: float, table: np.ndarray) -> int:
    """Index of the nearest table entry (table increasing, >= 0), ties to the even index,
    saturating at the last entry."""
    if value >= table[-1]:
        return len(table) - 1
    dist = np.abs(table - value)
    best = np.flatnonzero(dist == dist.min())
    return int(best[0]) if len(best) == 1 or best[0] % 2 == 0 else int(best[1])


def brute_force_quantize(x: np.ndarray, gs: np.float32):
    """An independent scalar NVFP4 quantiser, float32 arithmetic in the spec's order."""
    rows, K = x.shape
    codes = np.zeros((rows, K), dtype=np.uint8)
    scales = np.zeros((rows, K // 16), dtype=np.uint8)
    for r in range(rows):
        for b in range(K // 16):
            block = x[r, 16 * b : 16 * b + 16]
            s_in = np.float32(np.float32(np.abs(block).max()) / np.float32(6.0)) * gs
            byte = _nearest_even(float(min(s_in, np.float32(448.0))), E4M3_POS)
            scales[r, b] = byte
            s = np.float32(E4M3_POS[byte])
            for i, v in enumerate(block):
                if s == 0:
                    continue
                t = np.float32(np.float32(v * gs) / s)
                code = _nearest_even(abs(float(t)), E2M1_MAGS)
                codes[r, 16 * b + i] = code | (8 if np.signbit(t) else 0)
    return codes, scales


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_an_independent_scalar_quantiser(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 64, generator=g) * torch.tensor([1.0, 1e-3, 300.0]).unsqueeze(1)
    x[1, :16] = 0.0  # a zero block
    x[2, 16:32] *= 1e-6  # a block with a subnormal scale
    q = quantize_nvfp4(x)
    codes, scales = brute_force_quantize(x.numpy(), np.float32(q.global_scale.item()))
    assert torch.equal(q.scales, torch.from_numpy(scales))
    assert torch.equal(unpack_fp4(q.data), torch.from_numpy(codes))


def test_global_scale_convention():
    x = torch.tensor([[1.0] * 15 + [-3.0]])
    assert nvfp4_global_scale(x).item() == pytest.approx(448 * 6 / 3.0)
    q = quantize_nvfp4(x)
    assert q.global_scale.dtype == torch.float32 and q.global_scale.dim() == 0
    # amax_b / 6 * gs = 448 exactly: the largest block gets the largest scale.
    assert q.scales.tolist() == [[0x7E]]


def test_zero_tensor_and_zero_blocks():
    q = quantize_nvfp4(torch.zeros(2, 32))
    assert q.global_scale.item() == 1.0
    assert not q.data.any() and not q.scales.any()
    x = torch.randn(1, 32)
    x[0, 16:] = -0.0
    q = quantize_nvfp4(x)
    assert q.scales[0, 1] == 0 and not q.data[0, 8:].any()  # +0 codes, not -0


def test_empty_tensor():
    """No element: amax 0, so gs 1.0 (as the Triton quantiser gives), and empty codes."""
    for shape in ((0, 32), (2, 0, 16)):
        x = torch.empty(shape)
        assert nvfp4_global_scale(x).item() == 1.0
        q = quantize_nvfp4(x)
        assert q.data.shape == (*shape[:-1], shape[-1] // 2)
        assert q.scales.shape == (*shape[:-1], shape[-1] // 16)
        assert q.global_scale.item() == 1.0
        assert dequantize_nvfp4(q.data, q.scales, q.global_scale).shape == shape


def test_tiny_amax_does_not_overflow_the_global_scale():
    x = torch.full((1, 16), 1e-40)  # float32 subnormal: 2688 / amax overflows
    gs = nvfp4_global_scale(x)
    assert torch.isfinite(gs) and gs.item() == torch.finfo(torch.float32).max
    q = quantize_nvfp4(x)
    assert torch.isfinite(dequantize_nvfp4(q.data, q.scales, q.global_scale)).all()


def test_given_global_scale_saturates_elements_and_scales():
    x = torch.tensor([[6000.0] + [1.0] * 15])
    q = quantize_nvfp4(x, global_scale=1.0)
    assert q.scales.tolist() == [[0x7E]]  # 6000 / 6 > 448: clamped
    values = dequantize_nvfp4(q.data, q.scales, 1.0)
    assert values[0, 0].item() == 6.0 * 448  # saturated element


def test_round_trip_error_bound():
    x = torch.randn(64, 256)
    q = quantize_nvfp4(x)
    back = dequantize_nvfp4(q.data, q.scales, q.global_scale)
    step = (e4m3_table()[q.scales.long()] / q.global_scale).repeat_interleave(16, dim=1)
    # Half the widest E2M1 gap (4 -> 6) is 1 scale unit; scale rounding adds < 1/16 of 6.
    assert ((back - x).abs() <= step).all()
    assert (back - x).abs().max() > 0  # not trivially exact


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_orders_hold_the_same_codes(order):
    x = torch.randn(4, 48, dtype=torch.float16)
    low = quantize_nvfp4(x)
    other = quantize_nvfp4(x, order=order)
    assert torch.equal(unpack_fp4(other.data, order), unpack_fp4(low.data))
    assert torch.equal(other.scales, low.scales)


def test_leading_dims_and_dtypes():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(2, 3, 32).to(dtype)
        q = quantize_nvfp4(x)
        assert q.data.shape == (2, 3, 16) and q.scales.shape == (2, 3, 2)


def test_nan_scale_bytes_give_nan_for_their_block():
    data = torch.zeros(1, 16, dtype=torch.uint8)
    blocks = dequantize_nvfp4_blocks(data, torch.tensor([[0x38, 0x7F]], dtype=torch.uint8))
    assert not blocks[0, :16].isnan().any() and blocks[0, 16:].isnan().all()


def test_bad_input():
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        quantize_nvfp4(torch.tensor([[float("nan")] + [0.0] * 15]))
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        quantize_nvfp4(torch.tensor([[float("inf")] + [0.0] * 15]))
    with pytest.raises(ValueError, match="multiple of 16"):
        quantize_nvfp4(torch.zeros(2, 24))
    with pytest.raises(TypeError, match="x: expected dtype"):
        quantize_nvfp4(torch.zeros(2, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match="global_scale: expected a finite positive"):
        quantize_nvfp4(torch.ones(1, 16), global_scale=0.0)
    with pytest.raises(ValueError, match="global_scale: expected a finite positive"):
        quantize_nvfp4(torch.ones(1, 16), global_scale=float("inf"))
    with pytest.raises(ValueError, match="scales: expected shape"):
        dequantize_nvfp4(torch.zeros(2, 8, dtype=torch.uint8), torch.zeros(2, 2, dtype=torch.uint8),
                         1.0)


def test_divisions_are_ieee_not_reciprocal_multiplies():
    # Pins: torch's ``2688 / t`` is ``t.reciprocal() * 2688`` and, on CUDA, ``t / 6.0`` is
    # ``t * (1 / 6)``; the codec must divide correctly rounded so its bytes are device-independent.
    amax = torch.rand(4096) * 100 + 1e-3
    gs = [nvfp4_global_scale(a.reshape(1, 1).expand(1, 16)).item() for a in amax[:256]]
    expected = (np.float32(2688.0) / amax[:256].numpy().astype(np.float32)).tolist()
    assert gs == expected
    x = amax[:, None] * torch.linspace(1.0, -1.0, 16)
    q = quantize_nvfp4(x, global_scale=1.0)
    block_scale_in = torch.from_numpy(amax.numpy().astype(np.float32) / np.float32(6.0))
    assert torch.equal(q.scales[:, 0], float_to_e4m3(block_scale_in))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_and_cpu_give_the_same_bytes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 256, generator=g) * torch.rand(512, 1, generator=g) * 50
    cpu = quantize_nvfp4(x)
    gpu = quantize_nvfp4(x.cuda())
    assert torch.equal(gpu.global_scale.cpu(), cpu.global_scale)
    assert torch.equal(gpu.scales.cpu(), cpu.scales) and torch.equal(gpu.data.cpu(), cpu.data)
