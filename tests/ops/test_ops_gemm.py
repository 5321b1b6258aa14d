"""Public ops on the Triton path (FP4MM_BACKEND=triton): validation, prepacked weights,
nvfp4_w4a16_mm against its oracle twin, out= handling."""

import pytest
import torch

import fp4mm
from fp4mm import reference
from fp4mm.backend import is_hopper
from fp4mm.formats import float_to_e4m3, quantize_nvfp4
from fp4mm.ops import (
    nvfp4_mm,
    nvfp4_w4a16_mm,
    nvfp4_w4a16_mm_alpha,
    prepack_nvfp4_weight,
    w4a16_mm,
)
from fp4mm.ops.prepack import permute_weight_bytes, unpermute_weight_bytes
from fp4mm.reference import nvfp4_w4a16_mm as nvfp4_w4a16_ref

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    monkeypatch.setenv("FP4MM_BACKEND", "triton")


def operands(M, N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    rb = lambda r, c: torch.randint(0, 256, (r, c), dtype=torch.uint8, generator=g).to(DEV)
    sc = lambda r, c: float_to_e4m3(torch.rand(r, c, generator=g) * 1.5 + 0.5).to(DEV)
    return rb(M, K // 2), sc(M, K // 16), rb(N, K // 2), sc(N, K // 16)


def test_permutation_round_trip():
    w = torch.randint(0, 256, (3, 64), dtype=torch.uint8)
    p = permute_weight_bytes(w)
    assert torch.equal(unpermute_weight_bytes(p), w)
    assert p[0, 8 * 1 + 2] == w[0, 4 * 2 + 1]  # physical 8c + i holds logical 4i + c


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_nvfp4_mm_raw_and_prepacked(out_dtype):
    M, N, K = 3, 300, 128
    xq, xs, wq, ws = operands(M, N, K)
    ref = reference.nvfp4_mm(xq, xs, wq, ws, 0.125, order="high_first")
    y = nvfp4_mm(xq, xs, wq, ws, 0.125, order="high_first", out_dtype=out_dtype)
    pk = prepack_nvfp4_weight(wq, ws.view(torch.float8_e4m3fn), order="high_first")
    out = torch.full((M, N), float("nan"), dtype=out_dtype, device=DEV)
    y2 = nvfp4_mm(xq, xs, pk, None, 0.125, order="high_first", out_dtype=out_dtype, out=out)
    assert y2 is out
    assert torch.equal(y, y2)
    assert torch.allclose(y.float(), ref, rtol=2**-10, atol=ref.abs().max().item() * 2**-11)


def test_prepacked_argument_errors():
    xq, xs, wq, ws = operands(2, 8, 64)
    pk = prepack_nvfp4_weight(wq, ws)
    with pytest.raises(ValueError, match="w_scales"):
        nvfp4_mm(xq, xs, pk, ws, 1.0)
    with pytest.raises(ValueError, match="order"):
        nvfp4_mm(xq, xs, pk, None, 1.0, order="high_first")
    # The plain-Triton layout needs K % 64 == 0; the Hopper (Gluon) layout pads K itself.
    multiple = 16 if is_hopper(wq.device) else 64
    with pytest.raises(ValueError, match=f"multiple of {multiple}"):
        prepack_nvfp4_weight(wq[:, :4].contiguous(), ws[:, :1].contiguous())  # K = 8
    if is_hopper(wq.device):
        pk = prepack_nvfp4_weight(wq[:, :16].contiguous(), ws[:, :2].contiguous())  # K = 32
        assert pk.sm90 is not None and pk.packed is None


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_nvfp4_w4a16_mm_matches_twin(order):
    M, N, K = 5, 40, 96
    g = torch.Generator().manual_seed(5)
    w = torch.randn(N, K, generator=g)
    q = quantize_nvfp4(w, order=order)
    x = torch.randn(M, K, generator=g).half().to(DEV)
    wq, ws = q.data.to(DEV), q.scales.to(DEV)
    ref = nvfp4_w4a16_ref(x, wq, ws, q.global_scale, order=order)
    y = nvfp4_w4a16_mm(x, wq, ws, q.global_scale, order=order)
    assert y.dtype == torch.float16
    assert torch.allclose(y.float(), ref, rtol=2**-10, atol=ref.abs().max().item() * 2**-11)
    # the twin agrees with dequantise-then-matmul in fp32
    from fp4mm.formats import dequantize_nvfp4

    direct = x.float() @ dequantize_nvfp4(wq, ws, q.global_scale, order).T
    assert torch.allclose(ref, direct, rtol=1e-5, atol=1e-5)


def test_nvfp4_w4a16_mm_validates():
    x = torch.zeros(2, 32, dtype=torch.float16, device=DEV)
    _, _, wq, ws = operands(1, 4, 32)
    with pytest.raises(ValueError, match="w_global_scale"):
        nvfp4_w4a16_mm(x, wq, ws, 0.0)
    with pytest.raises(TypeError, match="x"):
        nvfp4_w4a16_mm(x.float(), wq, ws, 1.0)
    with pytest.raises(ValueError, match="w_scales"):
        nvfp4_w4a16_mm(x, wq, ws[:, :1], 1.0)
    with pytest.raises(ValueError, match="alpha"):
        nvfp4_w4a16_mm_alpha(x, wq, ws, -1.0)


def test_out_on_another_device_is_refused_naming_both():
    """``out`` is checked against the inputs' device without allocating anything there."""
    from fp4mm.ops.nvfp4_mm import check_out

    out = torch.empty(2, 4, dtype=torch.float16, device="meta")
    with pytest.raises(ValueError, match=r"inputs on cpu, out on meta"):
        check_out(out, 2, 4, torch.float16, torch.device("cpu"))
    assert check_out(out, 2, 4, torch.float16, torch.device("meta")) is out


@pytest.mark.parametrize("prepacked", [False, True])
def test_nvfp4_w4a16_mm_alpha_is_the_op_with_the_decode_factor(prepacked):
    """alpha = 1 / gs_w given directly (float or device tensor) gives the encode-scale op's
    output bit for bit: both reach the kernels as the same float32 factor."""
    M, N, K = 5, 40, 128
    _, _, wq, ws = operands(M, N, K, seed=3)
    w = prepack_nvfp4_weight(wq, ws) if prepacked else wq
    w_s = None if prepacked else ws
    x = (torch.randn(M, K, generator=torch.Generator().manual_seed(3)) * 0.5).half().to(DEV)
    gs = 3.0  # 1 / 3 is inexact: both paths round it to float32 once
    want = nvfp4_w4a16_mm(x, w, w_s, gs)
    alpha = torch.tensor([1.0 / gs], dtype=torch.float32, device=DEV)
    assert torch.equal(nvfp4_w4a16_mm_alpha(x, w, w_s, alpha), want)
    assert torch.equal(nvfp4_w4a16_mm_alpha(x, w, w_s, 1.0 / gs), want)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_an_empty_batch_or_weight_gives_an_empty_product(monkeypatch, backend):
    """M = 0 (an empty batch: a MoE expert no token was routed to) or N = 0 returns an empty
    (M, N) output, as torch.mm does, on every backend and weight kind; arguments are still
    checked."""
    monkeypatch.setenv("FP4MM_BACKEND", backend)
    K = 64
    xq, xs, wq, ws = operands(3, 8, K)
    pk = prepack_nvfp4_weight(wq, ws)
    x16 = torch.randn(3, K, device=DEV).half()
    gq = torch.randint(0, 256, (8, K // 2), dtype=torch.uint8, device=DEV)
    gs = torch.rand(8, K // 32, device=DEV).half()
    for M, N in ((0, 8), (3, 0), (0, 0)):
        w, s = wq[:N], ws[:N]
        cases = [
            (nvfp4_mm(xq[:M], xs[:M], w, s, 0.5, out_dtype=torch.float32), torch.float32),
            (nvfp4_w4a16_mm(x16[:M], w, s, 2.0), torch.float16),
            (nvfp4_w4a16_mm_alpha(x16[:M], w, s, 0.5), torch.float16),
            (w4a16_mm(x16[:M], gq[:N], gs[:N], 32), torch.float16),
        ]
        if N:
            cases.append((nvfp4_mm(xq[:M], xs[:M], pk, None, 0.5), torch.float16))
        for y, dtype in cases:
            assert y.shape == (M, N) and y.dtype == dtype and y.device.type == DEV
    out = torch.empty((0, 8), dtype=torch.float16, device=DEV)
    assert nvfp4_mm(xq[:0], xs[:0], wq, ws, 0.5, out=out) is out
    with pytest.raises(ValueError, match="alpha"):
        nvfp4_mm(xq[:0], xs[:0], wq, ws, float("nan"))
    with pytest.raises(ValueError, match="w_global_scale"):
        nvfp4_w4a16_mm(x16[:0], wq, ws, -1.0)
    with pytest.raises(ValueError, match="x_scales"):
        nvfp4_mm(xq[:0], xs[:1], wq, ws, 0.5)


@pytest.mark.needs_gpu_memory(8)
@pytest.mark.parametrize("M,N,K", [(2**17 + 1, 64, 2**14), (2**17 + 1, 2**14 + 64, 64)],
                         ids=["x-offsets", "out-offsets"])
def test_w4a4_offsets_past_2_to_the_31(M, N, K):
    """W4A4 prefill where the activations' fp16 pre-pass (or the output) holds more than 2^31
    elements: every kernel on the way must use 64-bit offsets."""
    xq, xs, wq, ws = operands(M, N, K, seed=3)
    out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
    nvfp4_mm(xq, xs, wq, ws, 0.25, out=out)
    rows = [0, 1, M - 2, M - 1]
    ref = reference.nvfp4_mm(xq[rows], xs[rows], wq, ws, 0.25)
    torch.testing.assert_close(out[rows].float(), ref, rtol=2**-9, atol=2**-9 * ref.abs().max())


def test_w4a16_mm_challenge_example():
    """Revision 1's example: y = [[1, 2, -1, 0], [1, 2, -1, 0]]."""
    x = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float16, device=DEV)
    wq = torch.tensor([[0x22, 0x22], [0x44, 0x44], [0xAA, 0xAA], [0, 0]], dtype=torch.uint8,
                      device=DEV)
    sc = torch.full((4, 2), 0.5, dtype=torch.float16, device=DEV)
    y = w4a16_mm(x, wq, sc, 2, order="high_first")
    assert y.tolist() == [[1, 2, -1, 0], [1, 2, -1, 0]]


@pytest.mark.parametrize("M,group_size", [(3, 32), (130, 64), (70, 16)])
def test_w4a16_mm_raw_and_prepacked(M, group_size):
    """A prepacked weight gives the raw weight's result, bit for bit, at decode and prefill M
    (on Hopper the prefill GEMM then reads the re-laid copy; elsewhere the raw tensors)."""
    N, K = 72, 256
    g = torch.Generator().manual_seed(M)
    x = (0.5 * torch.randn(M, K, generator=g)).half().to(DEV)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    sc = (0.1 * torch.rand(N, K // group_size, generator=g) + 0.01).half().to(DEV)
    pk = fp4mm.prepack_w4a16_weight(wq, sc, group_size, order="high_first")
    assert pk.shape == (N, K) and pk.group_size == group_size
    assert (pk.sm90 is not None) == (is_hopper(DEV) and group_size != 16)
    raw = w4a16_mm(x, wq, sc, group_size, order="high_first")
    assert torch.equal(w4a16_mm(x, pk, None, group_size, order="high_first"), raw)
    ref = reference.w4a16_mm(x, wq, sc, group_size, order="high_first")
    assert torch.allclose(raw.float(), ref, rtol=2e-3, atol=2e-3)


def test_w4a16_prepacked_argument_errors():
    wq = torch.randint(0, 256, (8, 32), dtype=torch.uint8, device=DEV)
    sc = torch.ones((8, 2), dtype=torch.float16, device=DEV)
    x = torch.ones((2, 64), dtype=torch.float16, device=DEV)
    pk = fp4mm.prepack_w4a16_weight(wq, sc, 32)
    with pytest.raises(ValueError, match="scales: expected None"):
        w4a16_mm(x, pk, sc, 32)
    with pytest.raises(ValueError, match="group_size: the prepacked weight has groups of 32"):
        w4a16_mm(x, pk, None, 64)
    with pytest.raises(ValueError, match="order: the prepacked weight was packed from"):
        w4a16_mm(x, pk, None, 32, order="high_first")
    with pytest.raises(ValueError, match="group_size"):
        fp4mm.prepack_w4a16_weight(wq, sc, 24)
    with pytest.raises(ValueError, match="scales"):
        fp4mm.prepack_w4a16_weight(wq, sc[:, :1], 32)
    with pytest.raises(ValueError, match="order"):
        fp4mm.prepack_w4a16_weight(wq, sc, 32, order="big")


# ----------------------------------------------------------------------------------------------
# alpha / w_global_scale as a device tensor: read by the kernels, no host sync
# ----------------------------------------------------------------------------------------------
def test_kernel_scalar_keeps_device_tensors_and_checks_the_rest():
    from fp4mm._validate import kernel_scalar

    assert kernel_scalar("alpha", 0.5, torch.device("cpu")) == 0.5
    assert kernel_scalar("alpha", torch.tensor(4.0), torch.device("cpu"), reciprocal=True) == 0.25
    with pytest.raises(ValueError, match="alpha: expected a finite number"):
        kernel_scalar("alpha", float("inf"), torch.device("cpu"))
    with pytest.raises(ValueError, match="gs: expected a finite positive number"):
        kernel_scalar("gs", torch.tensor(-1.0), torch.device("cpu"), positive=True)
    if torch.cuda.is_available():
        dev = torch.device(DEV, torch.cuda.current_device())
        t = kernel_scalar("alpha", torch.tensor(2.0, device=dev, dtype=torch.float64), dev,
                          reciprocal=True)
        assert t.dtype == torch.float32 and t.shape == (1,) and t.item() == 0.5
        with pytest.raises(ValueError, match="alpha: expected a scalar"):
            kernel_scalar("alpha", torch.ones(2, device=dev), dev)
        with pytest.raises(TypeError, match="alpha: expected a floating-point tensor"):
            kernel_scalar("alpha", torch.ones(1, device=dev, dtype=torch.int32), dev)


_GRAPH_SHAPES = [(1, 3072, 3072, False), (12, 3072, 3072, False), (64, 3072, 3072, False),
                 (64, 3072, 3072, True), (128, 3072, 3072, True), (2048, 3072, 3072, True),
                 (300, 200, 256, False)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("M,N,K,prepacked", _GRAPH_SHAPES, ids=lambda v: str(v))
def test_device_scalars_capture_in_a_cuda_graph_with_the_same_bits(M, N, K, prepacked):
    """With alpha (W4A4) and w_global_scale (W4A16) as device tensors every kernel the dispatch
    picks (ring / TMA / Triton GEMV, split-K reduces, the GEMM and its pair sums) runs inside a
    CUDA graph capture (a host sync would abort it) and gives the float-scalar result bit for
    bit (the factors are powers of two: 1 / gs is exact either way)."""
    xq, xs, wq, ws = operands(M, N, K, seed=M)
    w = prepack_nvfp4_weight(wq, ws) if prepacked else wq
    w_s = None if prepacked else ws
    x16 = (torch.randn(M, K, device=DEV) * 0.5).to(torch.bfloat16)
    alpha, gs = torch.tensor(0.375, device=DEV), torch.tensor([4.0], device=DEV)
    want_a = nvfp4_mm(xq, xs, w, w_s, 0.375)
    want_b = nvfp4_w4a16_mm(x16, w, w_s, 4.0)
    out_a = torch.full_like(want_a, float("nan"))
    out_b = torch.full_like(want_b, float("nan"))
    inv_gs = torch.tensor([0.25], device=DEV)
    out_c = torch.full_like(want_b, float("nan"))
    nvfp4_mm(xq, xs, w, w_s, alpha, out=out_a)  # warm up (compiles) outside the capture
    nvfp4_w4a16_mm(x16, w, w_s, gs, out=out_b)
    nvfp4_w4a16_mm_alpha(x16, w, w_s, inv_gs, out=out_c)
    torch.cuda.synchronize()
    out_a.fill_(float("nan"))
    out_b.fill_(float("nan"))
    out_c.fill_(float("nan"))
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        nvfp4_mm(xq, xs, w, w_s, alpha, out=out_a)
        nvfp4_w4a16_mm(x16, w, w_s, gs, out=out_b)
        nvfp4_w4a16_mm_alpha(x16, w, w_s, inv_gs, out=out_c)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out_a, want_a) and torch.equal(out_b, want_b)
    assert torch.equal(out_c, want_b)
    alpha.fill_(0.75)  # the graph reads the tensor at replay time
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out_a, nvfp4_mm(xq, xs, w, w_s, 0.75))
