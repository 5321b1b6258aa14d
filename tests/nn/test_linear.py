"""NVFP4Linear and quantize_model: numerics against a fake-quantised Linear, shapes, state_dict,
dtype handling, skipping, and torch.compile without graph breaks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fp4mm
from fp4mm.backend import is_hopper
from fp4mm.formats import dequantize_nvfp4, quantize_nvfp4
from fp4mm.nn import NVFP4Linear, UnsupportedLayerWarning, quantize_model

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _linear(K=64, N=40, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(K, N, bias=bias).to(DEVICE)


def _fake_quant(lin: nn.Linear, x: torch.Tensor, mode: str, gs_x=None) -> torch.Tensor:
    """The straightforward NVFP4 fake quantisation (fp32), independent of NVFP4Linear."""
    w = lin.weight.detach().float()
    wq = quantize_nvfp4(w)
    w_dq = dequantize_nvfp4(wq.data, wq.scales, wq.global_scale)
    xf = x.float().reshape(-1, x.shape[-1])
    if mode == "w4a4":
        xq = quantize_nvfp4(xf, gs_x)
        xf = dequantize_nvfp4(xq.data, xq.scales, xq.global_scale)
    y = xf @ w_dq.T
    if lin.bias is not None:
        y = y + lin.bias.detach().float()
    return y.reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("mode", ["w4a4", "w4a16"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(64,), (1, 64), (2, 3, 64), (2, 1, 5, 64)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_fake_quantisation(mode, bias, shape):
    lin = _linear(bias=bias)
    layer = NVFP4Linear.from_linear(lin, mode=mode)
    x = torch.randn(shape, device=DEVICE)
    y = layer(x)
    want = _fake_quant(lin, x, mode)
    assert y.shape == (*shape[:-1], 40) and y.dtype == x.dtype
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.mark.parametrize("backend", ["auto", "triton"])
@pytest.mark.parametrize("mode,scale", [("w4a4", "dynamic"), ("w4a4", 600.0), ("w4a16", None)])
def test_an_empty_batch_gives_an_empty_output(monkeypatch, backend, mode, scale):
    monkeypatch.setenv("FP4MM_BACKEND", backend)
    kw = {} if scale in (None, "dynamic") else {"activation_scale": scale}
    layer = NVFP4Linear.from_linear(_linear(), mode=mode, **kw)
    for shape in ((0, 64), (3, 0, 64)):
        y = layer(torch.randn(shape, device=DEVICE))
        assert y.shape == (*shape[:-1], 40) and y.dtype == torch.float32


def test_static_activation_scale():
    lin = _linear()
    x = torch.randn(7, 64, device=DEVICE)
    gs_x = 2688.0 / 3.0  # calibrated amax 3: larger inputs saturate
    layer = NVFP4Linear.from_linear(lin, activation_scale=gs_x)
    assert layer.input_scale is not None and "static" in repr(layer)
    want = _fake_quant(lin, x, "w4a4", gs_x=1.0 / layer.input_scale.item())
    torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_from_linear_stores_modelopt_tensors():
    lin = _linear(K=32, N=8)
    layer = NVFP4Linear.from_linear(lin)
    q = quantize_nvfp4(lin.weight.detach())
    sd = layer.state_dict()
    assert list(sd) == ["bias", "weight", "weight_scale", "weight_scale_2"]
    assert torch.equal(sd["weight"], q.data)
    assert sd["weight_scale"].dtype == torch.float8_e4m3fn
    assert torch.equal(sd["weight_scale"].view(torch.uint8), q.scales)
    assert sd["weight_scale_2"].shape == () and sd["weight_scale_2"].dtype == torch.float32
    torch.testing.assert_close(layer.dequantized_weight(),
                               dequantize_nvfp4(q.data, q.scales, q.global_scale))


def test_state_dict_round_trip():
    src = NVFP4Linear.from_linear(_linear(), mode="w4a4", activation_scale=100.0)
    dst = NVFP4Linear(64, 40, mode="w4a4", static_input_scale=True, device=DEVICE)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(3, 64, device=DEVICE)
    assert torch.equal(dst(x), src(x))


def test_half_keeps_the_format_dtypes():
    layer = NVFP4Linear.from_linear(_linear(), activation_scale=7.0).half()
    assert layer.weight.dtype == torch.uint8
    assert layer.weight_scale.dtype == torch.float8_e4m3fn
    assert layer.weight_scale_2.dtype == torch.float32 and layer.input_scale.dtype == torch.float32
    assert layer.bias.dtype == torch.float16
    assert layer(torch.randn(2, 64, device=DEVICE, dtype=torch.float16)).dtype == torch.float16


@pytest.mark.parametrize("mode", ["w4a4", "w4a16"])
def test_fp16_activations(mode):
    lin = _linear()
    layer = NVFP4Linear.from_linear(lin, mode=mode).half()
    x = torch.randn(4, 64, device=DEVICE, dtype=torch.float16)
    y = layer(x)
    want = _fake_quant(lin, x, mode)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())


def test_errors():
    with pytest.raises(ValueError, match="in_features: expected a positive multiple of 16"):
        NVFP4Linear(40, 8)
    with pytest.raises(ValueError, match="mode"):
        NVFP4Linear(32, 8, mode="w8a8")
    with pytest.raises(TypeError, match="linear: expected an nn.Linear"):
        NVFP4Linear.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="activation_scale: expected a finite positive"):
        NVFP4Linear.from_linear(_linear(), activation_scale=0.0)
    with pytest.raises(ValueError, match="x: expected a last dimension of 64"):
        NVFP4Linear.from_linear(_linear())(torch.randn(2, 32, device=DEVICE))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.ModuleDict({"q": nn.Linear(64, 64), "k": nn.Linear(64, 64)})
        self.mlp = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64))
        self.odd = nn.Linear(64, 24)
        self.head = nn.Linear(24, 10)  # K = 24: not a multiple of 16

    def forward(self, x):
        h = self.attn["q"](x) * torch.sigmoid(self.attn["k"](x))
        return self.head(torch.relu(self.odd(self.mlp(h))))


def test_quantize_model_replaces_linears_and_warns():
    model = _Block().to(DEVICE)
    x = torch.randn(2, 5, 64, device=DEVICE)
    ref = model(x)
    with pytest.warns(UnsupportedLayerWarning, match=r"head: in_features = 24"):
        out = quantize_model(model, mode="w4a16", skip=["attn.k"])
    assert out is model
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if n}
    assert kinds["attn.q"] == "NVFP4Linear" and kinds["mlp.0"] == "NVFP4Linear"
    assert kinds["attn.k"] == "Linear" and kinds["head"] == "Linear"
    y = model(x)
    cos = torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0)
    assert cos > 0.98


def test_quantize_model_strict_and_patterns():
    with pytest.raises(ValueError, match="head: in_features = 24"):
        quantize_model(_Block(), strict=True)
    with pytest.warns(UnsupportedLayerWarning):
        model = quantize_model(_Block(), skip="mlp.*")
    assert isinstance(model.mlp[0], nn.Linear) and isinstance(model.attn["q"], NVFP4Linear)
    with pytest.raises(KeyError, match="activation_scale: no static scale for layer"):
        quantize_model(_Block(), activation_scale={"attn.q": 10.0}, skip=["head"])


def test_quantize_model_per_layer_static_scales():
    scales = {"attn.q": 100.0, "attn.k": 200.0, "mlp.0": 300.0, "mlp.2": 400.0, "odd": 500.0}
    model = quantize_model(_Block(), activation_scale=scales, skip=["head"])
    assert model.mlp[2].input_scale.item() == pytest.approx(1 / 400.0)


def _compile_model(mode):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32)).to(DEVICE)
    return quantize_model(model, mode=mode)


@pytest.mark.parametrize("mode", ["w4a4", "w4a16"])
def test_compile_fullgraph_no_graph_break(mode):
    torch._dynamo.reset()
    model = _compile_model(mode)
    x = torch.randn(3, 7, 64, device=DEVICE)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), model(x))


def test_compile_inductor():
    torch._dynamo.reset()
    model = _compile_model("w4a4")
    x = torch.randn(5, 64, device=DEVICE)
    compiled = torch.compile(model, backend="inductor", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_public_ops_still_importable():
    assert callable(fp4mm.nvfp4_mm) and callable(fp4mm.w4a16_mm)


# ----------------------------------------------------------------------------------------------
# prepack()
# ----------------------------------------------------------------------------------------------
def _prepack_layers(mode, K=128, N=40, seed=0):
    lin = _linear(K=K, N=N, seed=seed)
    return NVFP4Linear.from_linear(lin, mode=mode), NVFP4Linear.from_linear(lin, mode=mode)


@pytest.mark.parametrize("mode", ["w4a4", "w4a16"])
@pytest.mark.parametrize("tokens", [15, 300])  # decode GEMV / prefill GEMM on a GPU
def test_prepack_gives_the_same_output_and_stays_out_of_state_dict(mode, tokens):
    raw, packed = _prepack_layers(mode)
    assert packed.prepack() is packed and packed.is_prepacked and not raw.is_prepacked
    hopper = is_hopper(torch.device(DEVICE))
    layout = packed.weight_sm90_codes if hopper else packed.weight_packed
    assert layout is not None and layout.dtype == torch.uint8
    assert (packed.weight_packed is None) == hopper
    assert set(packed.state_dict()) == set(raw.state_dict())  # ModelOpt tensors only
    x = torch.randn(tokens, 128, device=DEVICE, dtype=torch.float16)
    y = packed(x)
    torch.testing.assert_close(y, raw(x), rtol=2e-3, atol=2e-3 * y.abs().max().item())
    want = _fake_quant(_linear(K=128, N=40, seed=0), x, mode)
    torch.testing.assert_close(y.float(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())
    packed.drop_prepacked()
    assert not packed.is_prepacked
    assert packed.weight_packed is None and packed.weight_sm90_codes is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU interpreter check")
@pytest.mark.parametrize("mode", ["w4a4", "w4a16"])
def test_prepacked_layout_reaches_the_triton_gemm(monkeypatch, mode):
    """Under the interpreter the op takes the prepacked plain-Triton layout: corrupting it changes
    the output (so the layout is read), restoring it gives the raw layer's output back."""
    monkeypatch.setenv("FP4MM_BACKEND", "triton")
    monkeypatch.setenv("FP4MM_KERNEL", "gemm")
    raw, packed = _prepack_layers(mode, K=256, N=24, seed=3)
    packed.prepack()
    x = torch.randn(5, 256, device=DEVICE, dtype=torch.float16)
    want = raw(x)
    assert torch.equal(packed(x), want)
    good = packed.weight_packed.clone()
    packed.weight_packed.zero_()
    assert not torch.equal(packed(x), want)
    packed.weight_packed.copy_(good)
    assert torch.equal(packed(x), want)


def test_prepacked_weight_follows_the_weight():
    layer, other = _prepack_layers("w4a16")
    other = NVFP4Linear.from_linear(_linear(K=128, seed=7), mode="w4a16")
    x = torch.randn(4, 128, device=DEVICE)
    layer.prepack()
    layer.load_state_dict(other.state_dict())  # the post-hook re-lays the loaded weight
    assert layer.is_prepacked and layer._prepacked_from == layer._weight_key()
    torch.testing.assert_close(layer(x), other(x), rtol=1e-5, atol=1e-5)
    before = layer._prepacked_from
    with torch.no_grad():  # an in-place change: the next eager call re-lays it
        layer.weight.copy_(NVFP4Linear.from_linear(_linear(K=128, seed=9)).weight)
    assert layer._prepacked_from == before != layer._weight_key()
    layer(x)
    assert layer._prepacked_from == layer._weight_key()
    layer.half()  # no move: the copy is kept as it is
    assert layer.is_prepacked and layer._prepacked_from == layer._weight_key()


def test_prepack_needs_k_the_layout_takes():
    if DEVICE == "cuda":
        pytest.skip("the Hopper layout takes any K % 16 == 0")
    layer = NVFP4Linear.from_linear(_linear(K=48))
    with pytest.raises(ValueError, match="multiple of 64"):
        layer.prepack()
    assert not layer.is_prepacked
    model = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 8))
    quantize_model(model)
    with pytest.raises(ValueError, match=r"^0: w_q: prepacking needs K"):
        fp4mm.nn.prepack_model(model)


def test_prepack_model_and_compile_without_graph_break():
    torch._dynamo.reset()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32)).to(DEVICE)
    model = fp4mm.nn.prepack_model(quantize_model(model, mode="w4a4"))
    assert all(m.is_prepacked for m in model.modules() if isinstance(m, NVFP4Linear))
    x = torch.randn(3, 7, 64, device=DEVICE)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("mode,scale", [("w4a4", "dynamic"), ("w4a4", 600.0), ("w4a16", None)])
@pytest.mark.parametrize("prepack", [False, True])
@pytest.mark.parametrize("tokens", [1, 16, 256])
def test_forward_captures_in_a_cuda_graph(mode, scale, prepack, tokens):
    """No host sync anywhere in the forward (dynamic activation scale included): the layer runs
    inside a CUDA graph capture and replays to its eager output."""
    lin = _linear(K=256, N=192, seed=5)
    layer = NVFP4Linear.from_linear(lin, mode=mode, activation_scale=scale or "dynamic")
    if prepack:
        layer.prepack()
    x = torch.randn(tokens, 256, device=DEVICE, dtype=torch.bfloat16)
    want = layer(x)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = layer(x)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(y, want)


@pytest.mark.parametrize("mode,scale", [("w4a4", 600.0), ("w4a16", None)])
def test_derived_scalars_follow_the_scale_buffers(mode, scale):
    """The per-call scalars kept beside the scales (w4a4: gs_x, alpha; w4a16 reads
    weight_scale_2 itself) follow in-place changes of the buffers in eager calls, stay float32
    through .half(), and a compiled forward computes them from the buffers themselves."""
    torch._dynamo.reset()
    layer = NVFP4Linear.from_linear(_linear(K=128, bias=False, seed=2), mode=mode,
                                    activation_scale=scale or "dynamic")
    x = torch.randn(3, 128, device=DEVICE)
    y1 = layer(x)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), y1)
    with torch.no_grad():
        layer.weight_scale_2.mul_(2.0)
    torch.testing.assert_close(layer(x), 2 * y1, rtol=1e-6, atol=0)
    torch.testing.assert_close(compiled(x), 2 * y1, rtol=1e-6, atol=0)
    layer.half()
    assert layer.weight_scale_2.dtype == torch.float32
    if mode == "w4a4":
        assert layer.static_alpha.dtype == torch.float32
        assert layer.static_alpha.item() == pytest.approx(
            layer.input_scale.item() * layer.weight_scale_2.item())
