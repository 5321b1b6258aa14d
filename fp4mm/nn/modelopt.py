"""Load NVIDIA ModelOpt NVFP4 checkpoints (safetensors) into a model.

Per quantised linear layer ``<name>`` the checkpoint holds (see ``shared/spec/nvfp4-format.md``):

- ``<name>.weight``: uint8 ``(N, K/2)``, packed E2M1, low-first;
- ``<name>.weight_scale``: float8_e4m3fn ``(N, K/16)``;
- ``<name>.weight_scale_2``: float32 scalar, ``1 / gs_w``;
- ``<name>.input_scale``: float32 scalar, ``1 / gs_x`` (optional: static activation scale);
- ``<name>.bias``: optional.

Layers without ``weight_scale`` (embeddings, norms, unquantised heads) are ordinary tensors and are
loaded as such.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from fp4mm.nn.linear import NVFP4Linear, check_modelopt_layer
from fp4mm.nn.quantize import replace_module

_QUANT_SUFFIXES = ("weight", "weight_scale", "weight_scale_2", "input_scale", "bias")


def _read(path_or_dict) -> Mapping[str, torch.Tensor]:
    if isinstance(path_or_dict, Mapping):
        return path_or_dict
    if isinstance(path_or_dict, (str, os.PathLike)):
        from safetensors.torch import load_file

        return load_file(os.fspath(path_or_dict))
    raise TypeError(f"path_or_dict: expected a safetensors file path or a dict of tensors, got "
                    f"{type(path_or_dict).__name__}")


def load_modelopt_checkpoint(model: nn.Module, path_or_dict, *, mode: str = "w4a4",
                             strict: bool = True) -> nn.Module:
    """Fill ``model`` from a ModelOpt NVFP4 checkpoint, in place.

    Every ``nn.Linear`` (or :class:`NVFP4Linear`) whose ``<name>.weight_scale`` is in the
    checkpoint is replaced by an :class:`NVFP4Linear` built from its tensors (``mode`` ``"w4a4"``
    or ``"w4a16"``; static activations where ``input_scale`` is present, dynamic otherwise), on
    the device of the layer it replaces. All other tensors are loaded with ``load_state_dict``.

    Args:
        model: the model skeleton (e.g. the fp32/fp16 architecture).
        path_or_dict: a ``.safetensors`` file or an already-loaded dict of tensors.
        mode: ``"w4a4"`` or ``"w4a16"`` for the quantised layers.
        strict: as ``nn.Module.load_state_dict``: every model tensor must be in the checkpoint and
            every checkpoint tensor must be used.

    Raises:
        TypeError/ValueError naming the tensor (``"layers.0.fc.weight_scale: expected dtype
        torch.float8_e4m3fn, ..."``) when a quantised layer's tensors have the wrong dtype or
        shape, or when a layer's bias is in the checkpoint but not the model (or the reverse).

    Returns:
        ``model``.
    """
    state = dict(_read(path_or_dict))
    layers = [(n, m) for n, m in model.named_modules()
              if n and isinstance(m, (nn.Linear, NVFP4Linear))]
    for name, layer in layers:
        if f"{name}.weight_scale" not in state:
            w = state.get(f"{name}.weight")
            if w is not None and w.dtype == torch.uint8:
                raise ValueError(f"{name}.weight: uint8 (packed NVFP4) but {name}.weight_scale is "
                                 "not in the checkpoint")
            continue
        t = {s: state.pop(f"{name}.{s}", None) for s in _QUANT_SUFFIXES}
        if t["weight"] is None:
            raise ValueError(f"{name}.weight: missing (the checkpoint has {name}.weight_scale)")
        has_bias = layer.bias is not None
        if has_bias != (t["bias"] is not None):
            raise ValueError(f"{name}.bias: the model's layer {'has' if has_bias else 'has no'} "
                             f"bias but the checkpoint {'lacks' if has_bias else 'has'} one")
        check_modelopt_layer(name, t["weight"], t["weight_scale"], t["weight_scale_2"],
                             t["input_scale"], t["bias"], in_features=layer.in_features,
                             out_features=layer.out_features)
        device = layer.weight.device
        new = NVFP4Linear.from_modelopt(
            *(None if v is None else v.to(device) for v in
              (t["weight"], t["weight_scale"], t["weight_scale_2"], t["input_scale"])),
            bias=None if t["bias"] is None else t["bias"].to(device, layer.bias.dtype),
            mode=mode, name=name)
        replace_module(model, name, new)
        for s in _QUANT_SUFFIXES:
            if t[s] is not None:
                state[f"{name}.{s}"] = getattr(new, s).detach()  # keep strict accounting
    model.load_state_dict(state, strict=strict)
    return model
