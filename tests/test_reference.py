import numpy as np
import pytest
import torch

from fp4mm import reference
from fp4mm.formats import quantize_fp4_groupwise

SPEC_E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])


def independent_dequant(packed: torch.Tensor, scales: np.ndarray, group: int, order: str):
    """float64 dequantisation with numpy only (no fp4mm codec)."""
    b = packed.numpy().astype(np.int64)
    first, second = (b & 0xF, b >> 4) if order == "low_first" else (b >> 4, b & 0xF)
    codes = np.stack([first, second], axis=-1).reshape(b.shape[0], -1)
    return SPEC_E2M1[codes] * np.repeat(scales, group, axis=1)


def random_nvfp4(rows, K, g):
    q = torch.randint(0, 256, (rows, K // 2), dtype=torch.uint8, generator=g)
    s = (torch.rand(rows, K // 16, generator=g) * 1.5 + 0.5).to(torch.float8_e4m3fn)
    return q, s.view(torch.uint8)


@pytest.mark.parametrize("order", ["low_first", "high_first"])
@pytest.mark.parametrize("M, N, K", [(1, 1, 16), (3, 5, 32), (17, 33, 96)])
def test_nvfp4_mm_matches_float64(order, M, N, K):
    g = torch.Generator().manual_seed(M * 100 + N)
    xq, xs = random_nvfp4(M, K, g)
    wq, ws = random_nvfp4(N, K, g)
    f64 = lambda s: s.view(torch.float8_e4m3fn).double().numpy()  # noqa: E731
    x = independent_dequant(xq, f64(xs), 16, order)
    w = independent_dequant(wq, f64(ws), 16, order)
    expected = 0.375 * (x @ w.T)
    got = reference.nvfp4_mm(xq, xs, wq, ws, 0.375, order=order)
    assert got.dtype == torch.float32 and got.shape == (M, N)
    # float32 summation of exact products: error bounded by K ulp of the sum of |products|.
    bound = 0.375 * (np.abs(x) @ np.abs(w.T)) * K * 2.0**-24
    assert (np.abs(got.double().numpy() - expected) <= bound + 1e-30).all()


@pytest.mark.parametrize("group_size", [2, 16, 32])
def test_w4a16_mm_matches_float64(group_size):
    g = torch.Generator().manual_seed(group_size)
    x = (0.5 * torch.randn(5, 64, generator=g)).half()
    q = quantize_fp4_groupwise(torch.randn(7, 64, generator=g), group_size, order="high_first")
    w = independent_dequant(q.data, q.scales.double().numpy(), group_size, "high_first")
    expected = x.double().numpy() @ w.T
    got = reference.w4a16_mm(x, q.data, q.scales, group_size, order="high_first")
    bound = (np.abs(x.double().numpy()) @ np.abs(w.T)) * 64 * 2.0**-24
    assert (np.abs(got.double().numpy() - expected) <= bound).all()


def test_chunking_gives_the_same_answer(monkeypatch):
    g = torch.Generator().manual_seed(7)
    xq, xs = random_nvfp4(37, 64, g)
    wq, ws = random_nvfp4(41, 64, g)
    whole = reference.nvfp4_mm(xq, xs, wq, ws, 1.0)
    seen = []
    real = reference.dequantize_nvfp4_blocks

    def spy(data, scales, order):
        seen.append(data.shape[0])
        return real(data, scales, order)

    monkeypatch.setattr(reference, "_CHUNK_ELEMENTS", 64 * 8)  # 8 rows per chunk
    monkeypatch.setattr(reference, "dequantize_nvfp4_blocks", spy)
    chunked = reference.nvfp4_mm(xq, xs, wq, ws, 1.0)
    assert max(seen) == 8
    assert torch.equal(whole, chunked)


def test_challenge_scale_case_stays_memory_bounded():
    # 2048 x 18432 x 3072: every dequantised chunk holds at most _CHUNK_ELEMENTS floats.
    rows = reference._chunk_rows(3072)
    assert rows * 3072 <= reference._CHUNK_ELEMENTS
    assert reference._CHUNK_ELEMENTS * 4 <= 64 * 2**20


def test_nan_scale_byte_gives_nan_where_it_is_read():
    xq = torch.full((2, 16), 0x22, dtype=torch.uint8)
    xs = torch.tensor([[0x38, 0x38], [0x38, 0x7F]], dtype=torch.uint8)
    wq = torch.full((3, 16), 0x22, dtype=torch.uint8)
    ws = torch.full((3, 2), 0x38, dtype=torch.uint8)
    y = reference.nvfp4_mm(xq, xs, wq, ws, 1.0)
    assert not y[0].isnan().any() and y[1].isnan().all()


def test_float8_scales_and_tensor_alpha_are_accepted():
    g = torch.Generator().manual_seed(3)
    xq, xs = random_nvfp4(2, 32, g)
    wq, ws = random_nvfp4(3, 32, g)
    a = reference.nvfp4_mm(xq, xs, wq, ws, 0.5)
    b = reference.nvfp4_mm(xq, xs.view(torch.float8_e4m3fn), wq, ws, torch.tensor(0.5))
    assert torch.equal(a, b)


def test_tf32_setting_is_restored():
    torch.set_float32_matmul_precision("medium")
    try:
        g = torch.Generator().manual_seed(0)
        xq, xs = random_nvfp4(2, 16, g)
        reference.nvfp4_mm(xq, xs, xq, xs, 1.0)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")


def test_bad_input_names_the_argument():
    g = torch.Generator().manual_seed(0)
    xq, xs = random_nvfp4(2, 32, g)
    wq, ws = random_nvfp4(3, 32, g)
    with pytest.raises(ValueError, match=r"w_q: expected shape \(\*, 16\)"):
        reference.nvfp4_mm(xq, xs, wq[:, :8], ws, 1.0)
    with pytest.raises(ValueError, match=r"x_scales: expected shape \(2, 2\)"):
        reference.nvfp4_mm(xq, xs[:, :1], wq, ws, 1.0)
    with pytest.raises(ValueError, match="x_q: expected .* K a positive multiple of 16"):
        reference.nvfp4_mm(xq[:, :4], xs, wq, ws, 1.0)
    with pytest.raises(TypeError, match="w_scales: expected dtype"):
        reference.nvfp4_mm(xq, xs, wq, ws.float(), 1.0)
    with pytest.raises(ValueError, match="alpha: expected a finite number"):
        reference.nvfp4_mm(xq, xs, wq, ws, float("nan"))
    with pytest.raises(TypeError, match="alpha: expected a float"):
        reference.nvfp4_mm(xq, xs, wq, ws, "1.0")
    with pytest.raises(TypeError, match="alpha: expected a float"):
        reference.nvfp4_mm(xq, xs, wq, ws, True)
    # NumPy scalars are real numbers too (a calibration computed in NumPy)
    np = pytest.importorskip("numpy")
    want = reference.nvfp4_mm(xq, xs, wq, ws, 0.5)
    for a in (np.float32(0.5), np.float64(0.5), np.float16(0.5)):
        assert torch.equal(reference.nvfp4_mm(xq, xs, wq, ws, a), want)
    with pytest.raises(ValueError, match="group_size: expected an even divisor"):
        reference.w4a16_mm(torch.zeros(1, 8, dtype=torch.float16), xq[:, :4].contiguous(),
                           torch.zeros(2, 3, dtype=torch.float16), 3)
    with pytest.raises(TypeError, match="x: expected dtype"):
        reference.w4a16_mm(torch.zeros(1, 8), wq[:, :4], torch.zeros(3, 1, dtype=torch.float16), 8)
