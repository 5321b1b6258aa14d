"""Loading NVIDIA ModelOpt NVFP4 checkpoints: a small checkpoint is written in exactly that format
(safetensors) with the codec, independently of NVFP4Linear, then loaded into a model skeleton."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from fp4mm.formats import dequantize_nvfp4, quantize_nvfp4
from fp4mm.nn import NVFP4Linear, load_modelopt_checkpoint

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 32)
        self.up = nn.Linear(32, 64)
        self.down = nn.Linear(64, 32, bias=False)
        self.head = nn.Linear(32, 11)  # left unquantised in the checkpoint

    def forward(self, ids):
        h = self.embed(ids)
        return self.head(h + self.down(torch.relu(self.up(h))))


def _modelopt_layer(prefix: str, w: torch.Tensor, bias=None, amax_x=None) -> dict:
    """ModelOpt tensors of one layer: weight uint8 low-first, weight_scale float8_e4m3fn,
    weight_scale_2 = 1/gs_w and input_scale = 1/gs_x as float32 scalars."""
    q = quantize_nvfp4(w)
    t = {f"{prefix}.weight": q.data,
         f"{prefix}.weight_scale": q.scales.view(torch.float8_e4m3fn),
         f"{prefix}.weight_scale_2": (1.0 / q.global_scale).reshape(())}
    if amax_x is not None:
        t[f"{prefix}.input_scale"] = torch.tensor(amax_x / 2688.0, dtype=torch.float32)
    if bias is not None:
        t[f"{prefix}.bias"] = bias
    return t


def _checkpoint(static: bool) -> dict:
    torch.manual_seed(0)
    src = _Tiny()
    ckpt = {"embed.weight": src.embed.weight.detach(), "head.weight": src.head.weight.detach(),
            "head.bias": src.head.bias.detach()}
    ckpt |= _modelopt_layer("up", src.up.weight.detach(), src.up.bias.detach(),
                            amax_x=4.0 if static else None)
    ckpt |= _modelopt_layer("down", src.down.weight.detach(), amax_x=2.0 if static else None)
    return {k: v.contiguous() for k, v in ckpt.items()}


def _expected(ckpt: dict, ids: torch.Tensor) -> torch.Tensor:
    """fp32 fake-quantised forward straight from the checkpoint tensors (dynamic activations)."""
    def lin(prefix, x):
        w = dequantize_nvfp4(ckpt[f"{prefix}.weight"],
                             ckpt[f"{prefix}.weight_scale"].view(torch.uint8),
                             1.0 / ckpt[f"{prefix}.weight_scale_2"])
        xq = quantize_nvfp4(x)
        y = dequantize_nvfp4(xq.data, xq.scales, xq.global_scale) @ w.T
        return y + ckpt[f"{prefix}.bias"] if f"{prefix}.bias" in ckpt else y

    h = ckpt["embed.weight"][ids]
    h = h + lin("down", torch.relu(lin("up", h)))
    return h @ ckpt["head.weight"].T + ckpt["head.bias"]


def test_load_safetensors_file(tmp_path):
    ckpt = _checkpoint(static=False)
    path = tmp_path / "model.safetensors"
    save_file(ckpt, str(path))
    model = load_modelopt_checkpoint(_Tiny().to(DEVICE), path)
    assert isinstance(model.up, NVFP4Linear) and isinstance(model.down, NVFP4Linear)
    assert isinstance(model.head, nn.Linear) and model.up.input_scale is None
    assert model.up.weight.device.type == DEVICE.split(":")[0]
    ids = torch.tensor([[1, 5, 7], [0, 10, 3]])
    want = _expected(ckpt, ids)
    got = model(ids.to(DEVICE)).cpu()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    # The quantised model's state_dict is the ModelOpt checkpoint again.
    sd = model.state_dict()
    assert set(sd) == set(ckpt)
    for k, v in ckpt.items():
        assert sd[k].dtype == v.dtype, k
        assert torch.equal(_raw(sd[k].cpu()), _raw(v)), k


def _raw(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8) if t.dtype == torch.float8_e4m3fn else t


def test_static_input_scale_and_w4a16():
    ckpt = _checkpoint(static=True)
    model = load_modelopt_checkpoint(_Tiny(), ckpt)
    assert model.up.input_scale.item() == pytest.approx(4.0 / 2688.0)
    assert "static" in repr(model.up)
    model16 = load_modelopt_checkpoint(_Tiny(), ckpt, mode="w4a16")
    assert model16.up.mode == "w4a16"
    ids = torch.tensor([[2, 4]])
    assert model(ids).shape == model16(ids).shape == (1, 2, 11)


@pytest.mark.parametrize("key,bad,match", [
    ("up.weight_scale", lambda t: t.view(torch.uint8), r"up\.weight_scale: expected dtype "
                                                        r"torch\.float8_e4m3fn"),
    ("up.weight_scale", lambda t: t[:, :1].contiguous(), r"up\.weight_scale: expected shape"),
    ("up.weight", lambda t: t.float(), r"up\.weight: expected dtype torch\.uint8"),
    ("up.weight", lambda t: t[:, :8].contiguous(), r"up\.weight: expected shape \(64, 16\)"),
    ("down.weight_scale_2", lambda t: t.double(), r"down\.weight_scale_2: expected dtype "
                                                  r"torch\.float32"),
    ("down.weight_scale_2", lambda t: t.repeat(2), r"down\.weight_scale_2: expected a float32 "
                                                   r"scalar"),
    ("up.input_scale", lambda t: t.half(), r"up\.input_scale: expected dtype torch\.float32"),
    ("up.bias", None, r"up\.bias: the model's layer has bias but the checkpoint lacks one"),
    ("down.weight_scale_2", None, r"down\.weight_scale_2: missing"),
    ("up.weight", None, r"up\.weight: missing"),
])
def test_bad_checkpoint_names_the_tensor(key, bad, match):
    ckpt = _checkpoint(static=True)
    if bad is None:
        del ckpt[key]
    else:
        ckpt[key] = bad(ckpt[key])
    with pytest.raises((TypeError, ValueError), match=match):
        load_modelopt_checkpoint(_Tiny(), ckpt)


def test_packed_weight_without_scales_is_an_error():
    ckpt = _checkpoint(static=False)
    del ckpt["down.weight_scale"]
    with pytest.raises(ValueError, match=r"down\.weight: uint8 \(packed NVFP4\) but "
                                         r"down\.weight_scale is not in the checkpoint"):
        load_modelopt_checkpoint(_Tiny(), ckpt)


def test_strict_reports_missing_tensors():
    ckpt = _checkpoint(static=False)
    del ckpt["embed.weight"]
    with pytest.raises(RuntimeError, match="embed.weight"):
        load_modelopt_checkpoint(_Tiny(), ckpt)
    load_modelopt_checkpoint(_Tiny(), ckpt, strict=False)


def test_from_modelopt_direct():
    ckpt = _checkpoint(static=True)
    layer = NVFP4Linear.from_modelopt(ckpt["up.weight"], ckpt["up.weight_scale"],
                                      ckpt["up.weight_scale_2"], ckpt["up.input_scale"],
                                      ckpt["up.bias"])
    assert (layer.in_features, layer.out_features) == (32, 64)
    x = torch.randn(3, 32)
    gs_x = 1.0 / ckpt["up.input_scale"]
    xq = quantize_nvfp4(x, gs_x)
    w = dequantize_nvfp4(ckpt["up.weight"], ckpt["up.weight_scale"].view(torch.uint8),
                         1.0 / ckpt["up.weight_scale_2"])
    want = dequantize_nvfp4(xq.data, xq.scales, xq.global_scale) @ w.T + ckpt["up.bias"]
    torch.testing.assert_close(layer(x), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
