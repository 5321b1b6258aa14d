"""``torch.library`` custom ops over the public functions, so ``torch.compile`` can trace models
that use fp4mm (``fullgraph=True``: no graph break) and treat each call as one opaque node.

Ops (all functional; outputs never alias inputs):

- ``fp4mm::quantize_nvfp4(Tensor x, Tensor? global_scale, str order) -> (Tensor, Tensor, Tensor)``
  ``(data uint8 (..., K/2), scales uint8 (..., K/16), global_scale float32 0-d)``. Runs the Triton
  quantiser (:mod:`fp4mm.kernels.quantize_nvfp4`) where ``fp4mm.backend`` picks Triton (CUDA sm_90+,
  or ``FP4MM_BACKEND=triton`` under the interpreter), the codec otherwise. Both agree bit for bit.
- ``fp4mm::nvfp4_mm(Tensor x_q, Tensor x_scales, Tensor w_q, Tensor w_scales, Tensor? w_packed,
  Tensor alpha, ScalarType out_dtype, str order) -> Tensor`` ``(M, N)``: :func:`fp4mm.nvfp4_mm`.
  ``alpha`` is a one-element float32 tensor so that a dynamic activation scale needs no host sync
  while tracing. ``w_packed``: the ``packed`` field of a ``PrepackedNVFP4Weight`` (or None).
- ``fp4mm::nvfp4_w4a16_mm(Tensor x, Tensor w_q, Tensor w_scales, Tensor? w_packed,
  Tensor w_global_scale, str order) -> Tensor`` ``(M, N)`` of x.dtype: fp16/bf16 activations use
  :func:`fp4mm.ops.nvfp4_w4a16_mm`; float32 activations use an fp32 dequantise-and-matmul.
- ``fp4mm::w4a16_mm(Tensor x, Tensor w_q, Tensor scales, int group_size, str order) -> Tensor``:
  :func:`fp4mm.w4a16_mm`.

Each has a fake (meta) implementation giving shapes and dtypes from the inputs alone. The Python
wrappers below (same names) take the friendlier public argument types.
"""

from __future__ import annotations

import torch
from torch.library import custom_op

from fp4mm.backend import resolve_backend
from fp4mm.formats.nvfp4 import NVFP4Tensor, dequantize_nvfp4_blocks
from fp4mm.formats.nvfp4 import quantize_nvfp4 as _codec_quantize_nvfp4
from fp4mm.reference import as_scale_bytes


def _weight(w_q, w_scales, w_packed, order):
    """Raw ``(w_q, w_scales)`` or a ``PrepackedNVFP4Weight`` (then scales travel inside it)."""
    if w_packed is None:
        return w_q, w_scales
    from fp4mm.ops.prepack import PrepackedNVFP4Weight

    return PrepackedNVFP4Weight(w_q, as_scale_bytes("w_scales", w_scales), order, w_packed), None


# --- quantize_nvfp4 -------------------------------------------------------------------------

def triton_quantizer_available(device: torch.device) -> bool:
    """Whether ``fp4mm::quantize_nvfp4`` runs the Triton kernel for tensors on ``device``."""
    return resolve_backend(device) == "triton"


@custom_op("fp4mm::quantize_nvfp4", mutates_args=())
def _quantize_nvfp4_op(
    x: torch.Tensor, global_scale: torch.Tensor | None, order: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if triton_quantizer_available(x.device):
        from fp4mm.kernels.quantize_nvfp4 import quantize_nvfp4_triton

        q = quantize_nvfp4_triton(x, global_scale, order)
    else:
        q = _codec_quantize_nvfp4(x, global_scale, order)  # returns a new global-scale tensor
    return q.data, q.scales, q.global_scale.reshape(())


@_quantize_nvfp4_op.register_fake
def _(x, global_scale, order):
    K = x.shape[-1]
    lead = tuple(x.shape[:-1])
    return (x.new_empty((*lead, K // 2), dtype=torch.uint8),
            x.new_empty((*lead, K // 16), dtype=torch.uint8),
            x.new_empty((), dtype=torch.float32))


def quantize_nvfp4(x: torch.Tensor, global_scale=None, order: str = "low_first") -> NVFP4Tensor:
    """:func:`fp4mm.quantize_nvfp4` through ``fp4mm::quantize_nvfp4`` (Triton on CUDA).

    ``global_scale``: None (dynamic), a positive float, or a one-element tensor on x's device.
    """
    if global_scale is not None and not isinstance(global_scale, torch.Tensor):
        global_scale = torch.tensor(float(global_scale), dtype=torch.float32, device=x.device)
    return NVFP4Tensor(*torch.ops.fp4mm.quantize_nvfp4(x, global_scale, order))


# --- nvfp4_mm -------------------------------------------------------------------------------

@custom_op("fp4mm::nvfp4_mm", mutates_args=())
def _nvfp4_mm_op(
    x_q: torch.Tensor,
    x_scales: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    w_packed: torch.Tensor | None,
    alpha: torch.Tensor,
    out_dtype: torch.dtype,
    order: str,
) -> torch.Tensor:
    from fp4mm.ops import nvfp4_mm

    w, ws = _weight(w_q, w_scales, w_packed, order)
    return nvfp4_mm(x_q, x_scales, w, ws, alpha, out_dtype=out_dtype, order=order)


@_nvfp4_mm_op.register_fake
def _(x_q, x_scales, w_q, w_scales, w_packed, alpha, out_dtype, order):
    return x_q.new_empty((x_q.shape[0], w_q.shape[0]), dtype=out_dtype)


def nvfp4_mm(x_q, x_scales, w_q, w_scales, alpha, *, out_dtype=torch.float16,
             order: str = "low_first", w_packed: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`fp4mm.nvfp4_mm` through ``fp4mm::nvfp4_mm``; ``alpha`` a float or 1-element tensor."""
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=torch.float32, device=x_q.device)
    return torch.ops.fp4mm.nvfp4_mm(x_q, x_scales, w_q, w_scales, w_packed, alpha, out_dtype,
                                    order)


# --- nvfp4_w4a16_mm -------------------------------------------------------------------------

def _nvfp4_w4a16_fp32(x, w_q, w_scales, w_global_scale, order):
    """fp32 activations: ``(x @ (e2m1 * e4m3)^T) * (1 / gs_w)`` in float32 (no fp32 kernel)."""
    w = dequantize_nvfp4_blocks(w_q, as_scale_bytes("w_scales", w_scales), order)
    return (x @ w.T) * torch.reciprocal(w_global_scale.reshape(()).float())


@custom_op("fp4mm::nvfp4_w4a16_mm", mutates_args=())
def _nvfp4_w4a16_mm_op(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    w_packed: torch.Tensor | None,
    w_global_scale: torch.Tensor,
    order: str,
) -> torch.Tensor:
    if x.dtype == torch.float32:
        return _nvfp4_w4a16_fp32(x, w_q, w_scales, w_global_scale, order)
    from fp4mm.ops import nvfp4_w4a16_mm

    w, ws = _weight(w_q, w_scales, w_packed, order)
    return nvfp4_w4a16_mm(x, w, ws, w_global_scale, order=order)


@_nvfp4_w4a16_mm_op.register_fake
def _(x, w_q, w_scales, w_packed, w_global_scale, order):
    return x.new_empty((x.shape[0], w_q.shape[0]))


def nvfp4_w4a16_mm(x, w_q, w_scales, w_global_scale, *, order: str = "low_first",
                   w_packed: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ (e2m1(w_q) * e4m3(w_scales) / gs_w)^T`` through ``fp4mm::nvfp4_w4a16_mm``.

    ``x`` fp16/bf16/fp32 ``(M, K)``; ``w_global_scale`` the encode scale gs_w (float or tensor).
    """
    if not isinstance(w_global_scale, torch.Tensor):
        w_global_scale = torch.tensor(float(w_global_scale), dtype=torch.float32, device=x.device)
    return torch.ops.fp4mm.nvfp4_w4a16_mm(x, w_q, w_scales, w_packed, w_global_scale, order)


# --- w4a16_mm -------------------------------------------------------------------------------

@custom_op("fp4mm::w4a16_mm", mutates_args=())
def _w4a16_mm_op(x: torch.Tensor, w_q: torch.Tensor, scales: torch.Tensor, group_size: int,
                 order: str) -> torch.Tensor:
    from fp4mm.ops import w4a16_mm

    return w4a16_mm(x, w_q, scales, group_size, order=order)


@_w4a16_mm_op.register_fake
def _(x, w_q, scales, group_size, order):
    return x.new_empty((x.shape[0], w_q.shape[0]))


def w4a16_mm(x, w_q, scales, group_size: int, *, order: str = "low_first") -> torch.Tensor:
    """:func:`fp4mm.w4a16_mm` through ``fp4mm::w4a16_mm``."""
    return torch.ops.fp4mm.w4a16_mm(x, w_q, scales, group_size, order)


__all__ = ["nvfp4_mm", "nvfp4_w4a16_mm", "quantize_nvfp4", "triton_quantizer_available",
           "w4a16_mm"]
