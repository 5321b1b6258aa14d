"""PyTorch modules: NVFP4 linear layers, model quantisation and ModelOpt checkpoint loading.

- :class:`NVFP4Linear`: ``nn.Linear`` with NVFP4 weights, ``mode="w4a4"`` or ``"w4a16"``.
- :func:`quantize_model`: replace a model's ``nn.Linear`` layers in place.
- :func:`load_modelopt_checkpoint`: fill a model from an NVIDIA ModelOpt NVFP4 safetensors file.
- :func:`prepack_model`: keep every NVFP4 layer's weight in the prefill GEMM's layout too.

What runs where: see ``docs/nn.md``.
"""

from fp4mm.nn.linear import MODES, NVFP4Linear, check_modelopt_layer
from fp4mm.nn.modelopt import load_modelopt_checkpoint
from fp4mm.nn.quantize import UnsupportedLayerWarning, prepack_model, quantize_model

__all__ = [
    "MODES",
    "NVFP4Linear",
    "UnsupportedLayerWarning",
    "check_modelopt_layer",
    "load_modelopt_checkpoint",
    "prepack_model",
    "quantize_model",
]
