"""fp4mm:: custom ops: they match the public functions, their fake impls agree with the real
ones (torch.library.opcheck), and torch.compile(fullgraph=True) traces through them."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.library import opcheck

import fp4mm
from fp4mm import library
from fp4mm.formats import quantize_fp4_groupwise, quantize_nvfp4
from fp4mm.reference import nvfp4_mm as ref_nvfp4_mm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _x(M=5, K=64, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, K, generator=g).to(dtype).to(DEVICE)


@pytest.mark.parametrize("gs", [None, 0.25])
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_quantize_matches_codec(gs, order):
    x = _x()
    got = library.quantize_nvfp4(x, gs, order)
    want = quantize_nvfp4(x.cpu(), gs, order)
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)


def test_quantize_keeps_leading_dims():
    x = _x(6, 32).reshape(2, 3, 32)
    q = library.quantize_nvfp4(x)
    assert q.data.shape == (2, 3, 16) and q.scales.shape == (2, 3, 2) and q.global_scale.dim() == 0


def test_nvfp4_mm_matches_public_op():
    xq, wq = quantize_nvfp4(_x(7, 96)), quantize_nvfp4(_x(9, 96, seed=1))
    alpha = 1.0 / float(xq.global_scale * wq.global_scale)
    got = library.nvfp4_mm(xq.data, xq.scales, wq.data, wq.scales.view(torch.float8_e4m3fn), alpha,
                           out_dtype=torch.float32)
    want = ref_nvfp4_mm(xq.data, xq.scales, wq.data, wq.scales, alpha)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_nvfp4_w4a16_mm(dtype):
    x, wq = _x(4, 48, dtype), quantize_nvfp4(_x(6, 48, seed=2))
    got = library.nvfp4_w4a16_mm(x, wq.data, wq.scales, wq.global_scale)
    w = fp4mm.dequantize_nvfp4(wq.data, wq.scales, wq.global_scale)
    want = x.float() @ w.T
    assert got.dtype == dtype and got.shape == (4, 6)
    torch.testing.assert_close(got.float(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_nvfp4_w4a16_mm_alpha_takes_the_decode_factor(dtype):
    """The alpha op multiplies by alpha = 1 / gs_w (a device tensor as NVFP4Linear passes it,
    or a float) and agrees with the encode-scale op."""
    x, wq = _x(4, 48, dtype), quantize_nvfp4(_x(6, 48, seed=2))
    gs = float(wq.global_scale)
    alpha = torch.tensor(1.0 / gs, dtype=torch.float32, device=DEVICE)
    got = library.nvfp4_w4a16_mm_alpha(x, wq.data, wq.scales, alpha)
    want = library.nvfp4_w4a16_mm(x, wq.data, wq.scales, gs)
    assert got.dtype == dtype and got.shape == (4, 6)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    assert torch.equal(library.nvfp4_w4a16_mm_alpha(x, wq.data, wq.scales, 1.0 / gs), got)


@pytest.mark.parametrize("gs", [None, 0.731], ids=["dynamic", "static"])
def test_quantize_nvfp4_alpha_is_the_quantiser_and_a_division(gs):
    """Its outputs are quantize_nvfp4's data and scales and alpha_numerator / gs, bit for bit."""
    x = _x(5, 64)
    g = None if gs is None else torch.tensor(gs, dtype=torch.float32, device=DEVICE)
    num = torch.tensor(0.0123, dtype=torch.float32, device=DEVICE)
    q, s, alpha = torch.ops.fp4mm.quantize_nvfp4_alpha(x, g, num, "low_first")
    q0, s0, gs0 = torch.ops.fp4mm.quantize_nvfp4(x, g, "low_first")
    assert torch.equal(q, q0) and torch.equal(s, s0)
    assert alpha.shape == () and torch.equal(alpha, num / gs0)


def test_w4a16_mm_matches_public_op():
    x = _x(3, 64)
    w = quantize_fp4_groupwise(_x(5, 64, torch.float32, seed=3).cpu(), 32)
    got = library.w4a16_mm(x, w.data.to(DEVICE), w.scales.to(DEVICE), 32)
    assert torch.equal(got, fp4mm.w4a16_mm(x, w.data.to(DEVICE), w.scales.to(DEVICE), 32))


def test_prepacked_weights_travel_through_the_ops():
    x = _x(5, 128)
    xq, wq = quantize_nvfp4(x), quantize_nvfp4(_x(24, 128, seed=4))
    ws = wq.scales.view(torch.float8_e4m3fn)
    p = fp4mm.prepack_nvfp4_weight(wq.data, ws)
    args = library.prepacked_args(p)
    assert args[0] is p.w_q and (args[2] is not None) != (args[3] is not None)
    assert library.prepacked_args(wq.data) == (wq.data, None, None, None, None)
    assert torch.equal(library.nvfp4_mm(xq.data, xq.scales, p, None, 0.5),
                       library.nvfp4_mm(xq.data, xq.scales, wq.data, ws, 0.5))
    assert torch.equal(library.nvfp4_w4a16_mm(x, p, None, 2.0),
                       library.nvfp4_w4a16_mm(x, wq.data, ws, 2.0))
    with pytest.raises(ValueError, match="w_scales, w_packed: expected None"):
        library.nvfp4_mm(xq.data, xq.scales, p, ws, 0.5)
    if p.packed is not None:  # the older keyword for the plain-Triton layout still works
        assert torch.equal(library.nvfp4_mm(xq.data, xq.scales, wq.data, ws, 0.5,
                                            w_packed=p.packed),
                           library.nvfp4_mm(xq.data, xq.scales, p, None, 0.5))


def test_prepacked_op_arguments_are_checked():
    xq, wq = quantize_nvfp4(_x(5, 128)), quantize_nvfp4(_x(24, 128, seed=4))
    alpha = torch.tensor(0.5, device=DEVICE)
    codes = torch.zeros((16, 512), dtype=torch.uint8, device=DEVICE)  # 24 x 128: (16, 512)
    scales = torch.zeros((8, 128), dtype=torch.uint8, device=DEVICE)
    op = torch.ops.fp4mm.nvfp4_mm
    with pytest.raises(ValueError, match="expected both"):
        op(xq.data, xq.scales, wq.data, wq.scales, None, alpha, torch.float16, "low_first", codes)
    with pytest.raises(ValueError, match="one prepacked layout, got both"):
        op(xq.data, xq.scales, wq.data, wq.scales, wq.data, alpha, torch.float16, "low_first",
           codes, scales)
    with pytest.raises(ValueError, match=r"w_sm90_codes: expected a contiguous uint8 tensor of "
                                         r"shape \(16, 512\)"):
        op(xq.data, xq.scales, wq.data, wq.scales, None, alpha, torch.float16, "low_first",
           codes[:, :256], scales)


def test_opcheck_fake_impls():
    x = _x(5, 64)
    xq, wq = quantize_nvfp4(x), quantize_nvfp4(_x(3, 64, seed=4))
    alpha = torch.tensor(0.5, device=DEVICE)
    opcheck(torch.ops.fp4mm.quantize_nvfp4.default, (x, None, "low_first"))
    opcheck(torch.ops.fp4mm.quantize_nvfp4.default, (x, torch.tensor(3.0, device=DEVICE),
                                                     "high_first"))
    opcheck(torch.ops.fp4mm.nvfp4_mm.default, (xq.data, xq.scales, wq.data, wq.scales, None, alpha,
                                               torch.float16, "low_first"))
    opcheck(torch.ops.fp4mm.nvfp4_w4a16_mm.default, (x, wq.data, wq.scales, None,
                                                     wq.global_scale, "low_first"))
    opcheck(torch.ops.fp4mm.quantize_nvfp4_alpha.default,
            (x, None, torch.tensor(0.5, device=DEVICE), "low_first"))
    opcheck(torch.ops.fp4mm.nvfp4_w4a16_mm_alpha.default,
            (x, wq.data, wq.scales, None, torch.reciprocal(wq.global_scale), "low_first"))
    half = torch.tensor(0.5, device=DEVICE)
    opcheck(torch.ops.fp4mm.nvfp4_linear_w4a4.default,
            (x, wq.data, wq.scales, half, None, None, "low_first"))
    opcheck(torch.ops.fp4mm.nvfp4_linear_w4a4.default,
            (x, wq.data, wq.scales, half, torch.tensor(3.0, device=DEVICE), half, "low_first"))


def _w4a4_then_w4a16(x, wq, ws, wgs):
    """A dynamic W4A4 matmul and a W4A16 one: the data-dependent scale never leaves the device."""
    q, s, gs = torch.ops.fp4mm.quantize_nvfp4(x, None, "low_first")
    alpha = torch.reciprocal(gs * wgs)
    y = torch.ops.fp4mm.nvfp4_mm(q, s, wq, ws, None, alpha, x.dtype, "low_first")
    return y + torch.ops.fp4mm.nvfp4_w4a16_mm(x, wq, ws, None, wgs, "low_first")


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-shapes"])
def test_compile_fullgraph(backend, dynamic):
    torch._dynamo.reset()
    w = quantize_nvfp4(_x(24, 64, seed=5))
    f = torch.compile(_w4a4_then_w4a16, backend=backend, fullgraph=True, dynamic=dynamic)
    for M in (5, 9):
        x = _x(M, 64, seed=M)
        assert torch.equal(f(x, w.data, w.scales, w.global_scale),
                           _w4a4_then_w4a16(x, w.data, w.scales, w.global_scale))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU interpreter check")
def test_quantize_op_runs_the_triton_kernel_when_asked(monkeypatch):
    monkeypatch.setenv("FP4MM_BACKEND", "triton")
    assert library.triton_quantizer_available(torch.device("cpu"))
    x = _x(9, 48)
    for a, b in zip(library.quantize_nvfp4(x), quantize_nvfp4(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("lead, K", [((3,), 64), ((2, 4), 32), ((4, 4), 16), ((17,), 16)])
def test_quantize_ops_pass_the_pdl_trigger_rule_for_their_token_count(monkeypatch, lead, K):
    """Both quantiser ops ask ``dispatch.quantiser_pdl_late`` with the number of tokens (all
    leading dimensions) and hand the answer to the kernel's launcher."""
    from fp4mm.kernels import quantize_nvfp4 as Q
    from fp4mm.ops import dispatch

    monkeypatch.setenv("FP4MM_BACKEND", "triton")
    monkeypatch.setattr(library, "triton_quantizer_available", lambda device: True)
    asked, passed = [], []
    monkeypatch.setattr(dispatch, "quantiser_pdl_late",
                        lambda M: asked.append(M) or M % 2 == 0)

    def spy(*args, pdl_late=None, **kwargs):
        passed.append(pdl_late)
        return quantize_nvfp4(args[0], args[1], args[2])  # the codec: no kernel needed here

    monkeypatch.setattr(Q, "quantize_nvfp4_triton", spy)
    x = torch.randn(*lead, K, generator=torch.Generator().manual_seed(1)).half().to(DEVICE)
    library._quantize_nvfp4_op(x, None, "low_first")
    library._quantize_nvfp4_alpha_op(x, None, torch.ones((), device=DEVICE), "low_first")
    M = x.numel() // K
    assert asked == [M, M] and passed == [M % 2 == 0] * 2


def test_hopper_layout_descriptors_are_made_only_for_the_gemm():
    """Inside the op a Hopper-prepacked weight carries a factory, not descriptors: the decode
    GEMV never pays for them; the GEMM branch (sm90_layout) makes them."""
    from fp4mm.kernels import fp4_gemm_sm90
    from fp4mm.ops.nvfp4_mm import sm90_layout

    wq = torch.randint(0, 256, (24, 64), dtype=torch.uint8)
    ws = torch.randint(0, 120, (24, 8), dtype=torch.uint8)
    codes, scales = fp4_gemm_sm90.prepack_sm90_torch(wq, ws)
    w, _ = library._weight(wq, ws, None, codes, scales, "low_first")
    assert callable(w.sm90)
    packed = sm90_layout(w)
    assert isinstance(packed, fp4_gemm_sm90.PackedWeightSM90)
    assert packed.codes is codes and (packed.N, packed.K) == (24, 128)
    assert sm90_layout(None) is None


# --- eager calls without the dispatcher (library.call) ---------------------------------------

def _layer(mode):
    from fp4mm.nn import NVFP4Linear

    lin = torch.nn.Linear(64, 24, bias=False, device=DEVICE)
    return NVFP4Linear.from_linear(lin, mode=mode)


@pytest.fixture
def direct_calls(monkeypatch):
    """Names of the ops whose implementation ``library.call`` ran directly (the custom ops keep
    their own reference to the implementation, so a call through the dispatcher is not seen)."""
    seen = []
    for name, fn in list(library._IMPLS.items()):
        def spy(*args, _fn=fn, _name=name):
            seen.append(_name)
            return _fn(*args)
        monkeypatch.setitem(library._IMPLS, name, spy)
    return seen


@pytest.mark.parametrize("mode", ["w4a4", "w4a16"])
def test_eager_layer_calls_skip_the_dispatcher_with_the_same_result(mode, direct_calls,
                                                                     monkeypatch):
    layer, x = _layer(mode), _x(5, 64)
    with torch.no_grad():
        y = layer(x)
    assert direct_calls == (["quantize_nvfp4_alpha", "nvfp4_mm"] if mode == "w4a4"
                            else ["nvfp4_w4a16_mm_alpha"])
    direct_calls.clear()
    monkeypatch.setattr(library, "_dispatcher_needed", lambda args: True)
    with torch.no_grad():
        assert torch.equal(layer(x), y)
    assert direct_calls == []


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("M", [9, 16, 17, 32])
def test_w4a4_layer_route_on_16bit_x(static, M, direct_calls):
    """At 9-32 tokens a W4A4 layer on Hopper runs fp4mm::nvfp4_linear_w4a4 (x's values in
    fp16, then the 16-bit-x GEMV): the oracle's result on the quantised x, no NaN; elsewhere the
    op itself is the layer's other route, bit for bit."""
    from fp4mm.backend import is_hopper
    from fp4mm.nn import NVFP4Linear

    lin = torch.nn.Linear(512, 72, bias=False).half().to(DEVICE)
    scale = dict(activation_scale=672.0) if static else {}
    layer = NVFP4Linear.from_linear(lin, mode="w4a4", **scale)
    x = _x(M, 512)
    with torch.no_grad():
        layer(x)
        direct_calls.clear()
        y = layer(x)
    hopper = DEVICE == "cuda" and is_hopper(torch.device(DEVICE))
    assert direct_calls == (["nvfp4_linear_w4a4"] if hopper else
                            ["quantize_nvfp4" if static else "quantize_nvfp4_alpha", "nvfp4_mm"])
    if static:
        q = library.quantize_nvfp4(x, layer.input_global_scale)
        alpha = layer.static_alpha
    else:
        q = library.quantize_nvfp4(x)
        alpha = layer.weight_scale_2 / q.global_scale
    want = ref_nvfp4_mm(q.data, q.scales, layer.weight, layer.weight_scale, alpha)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), want, rtol=2e-3, atol=2e-3 * want.abs().max().item())
    args = (layer.input_global_scale, layer.static_alpha) if static else (None, None)
    if not hopper:  # the op off the route: the two calls it stands for
        assert torch.equal(library.call("nvfp4_linear_w4a4", x, layer.weight, layer.weight_scale,
                                        layer.weight_scale_2, *args, "low_first"), y)
    with pytest.raises(ValueError, match="input_global_scale, static_alpha: expected both"):
        library.call("nvfp4_linear_w4a4", x, layer.weight, layer.weight_scale,
                     layer.weight_scale_2, args[0], None if static else layer.weight_scale_2,
                     "low_first")


def test_wrappers_skip_the_dispatcher(direct_calls):
    x, wq = _x(4, 64), quantize_nvfp4(_x(6, 64, seed=7))
    q = library.quantize_nvfp4(x)
    library.nvfp4_mm(q.data, q.scales, wq.data, wq.scales, 0.5)
    library.nvfp4_w4a16_mm(x, wq.data, wq.scales, wq.global_scale)
    library.nvfp4_w4a16_mm_alpha(x, wq.data, wq.scales, 0.5)
    g = quantize_fp4_groupwise(_x(6, 64, seed=8).float(), 32)
    library.w4a16_mm(x, g.data, g.scales.half(), 32)
    assert direct_calls == ["quantize_nvfp4", "nvfp4_mm", "nvfp4_w4a16_mm",
                            "nvfp4_w4a16_mm_alpha", "w4a16_mm"]


def test_a_call_autograd_would_record_goes_through_the_op(direct_calls):
    """x requires grad: the op records the call, and backward names the missing formula."""
    layer = _layer("w4a16")
    x = _x(3, 64).float().requires_grad_()
    y = layer(x)
    assert direct_calls == [] and y.requires_grad
    with pytest.raises(RuntimeError, match="no autograd formula"):
        y.sum().backward()
    with torch.no_grad():
        layer(x)
    assert direct_calls == ["nvfp4_w4a16_mm_alpha"]


def test_profiler_modes_vmap_fake_tensors_and_compile_see_the_op(direct_calls):
    """Everything that observes or transforms the call still gets the op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    layer, x = _layer("w4a4"), _x(5, 64)
    with torch.no_grad(), Seen() as seen:
        y = layer(x)
    assert direct_calls == [] and {"fp4mm.quantize_nvfp4_alpha.default",
                                   "fp4mm.nvfp4_mm.default"} <= set(seen.ops)
    xs = torch.stack([x, _x(5, 64, seed=9)])
    with torch.no_grad():
        ys = torch.vmap(layer)(xs)  # the dispatcher's batched fallback: one call per entry
    assert direct_calls == []
    with torch.no_grad():
        assert torch.equal(ys[0], y) and torch.equal(ys[1], layer(xs[1]))
    direct_calls.clear()
    with torch.no_grad(), torch.autograd.profiler.profile() as prof:
        layer(x)
    assert direct_calls == []
    assert {"fp4mm::quantize_nvfp4_alpha", "fp4mm::nvfp4_mm"} <= {e.name for e in
                                                                    prof.function_events}
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
        y = layer(mode.from_tensor(x))
    assert direct_calls == [] and y.shape == (5, 24)
    with torch.no_grad():
        assert layer(x.to("meta")).device.type == "meta"
    assert direct_calls == []
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(layer, backend="eager", fullgraph=True)(x)
    assert direct_calls == []


def test_jit_and_fx_tracing_record_the_ops(direct_calls):
    layer, x = _layer("w4a4"), _x(5, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the layer's Python checks
        traced = torch.jit.trace(layer, x, check_trace=False)  # (its check runs it untraced)
    assert direct_calls == []
    assert {"fp4mm::quantize_nvfp4_alpha", "fp4mm::nvfp4_mm"} <= {
        n.kind() for n in traced.inlined_graph.nodes()}
    x2 = _x(5, 64, seed=3)
    with torch.no_grad():
        assert torch.equal(traced(x2), layer(x2))
    direct_calls.clear()
    g = quantize_fp4_groupwise(_x(6, 64, seed=8).float(), 32)
    gm = torch.fx.symbolic_trace(lambda x, w, s: library.w4a16_mm(x, w, s, 32))
    assert direct_calls == []
    assert torch.ops.fp4mm.w4a16_mm.default in {n.target for n in gm.graph.nodes}
    assert torch.equal(gm(x, g.data, g.scales.half()), library.w4a16_mm(x, g.data,
                                                                       g.scales.half(), 32))
