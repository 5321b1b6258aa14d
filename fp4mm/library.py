"""``torch.library`` custom ops over the public functions, so ``torch.compile`` can trace models
that use fp4mm (``fullgraph=True``: no graph break) and treat each call as one opaque node.

Ops (all functional; outputs never alias inputs):

- ``fp4mm::quantize_nvfp4(Tensor x, Tensor? global_scale, str order) -> (Tensor, Tensor, Tensor)``
  ``(data uint8 (..., K/2), scales uint8 (..., K/16), global_scale float32 0-d)``. Runs the Triton
  quantiser (:mod:`fp4mm.kernels.quantize_nvfp4`) where ``fp4mm.backend`` picks Triton (CUDA sm_90+,
  or ``FP4MM_BACKEND=triton`` under the interpreter), the codec otherwise. Both agree bit for bit.
- ``fp4mm::quantize_nvfp4_alpha(Tensor x, Tensor? global_scale, Tensor alpha_numerator, str order)
  -> (Tensor, Tensor, Tensor)``: the same, with ``alpha_numerator / global_scale`` (float32 0-d,
  IEEE division) as the third output instead of the global scale: the output factor of the W4A4
  matmul after it (``NVFP4Linear``'s dynamic scale: ``weight_scale_2 / gs_x``), written by the
  quantiser's own kernel rather than by a division kernel between the two.
- ``fp4mm::nvfp4_mm(Tensor x_q, Tensor x_scales, Tensor w_q, Tensor w_scales, Tensor? w_packed,
  Tensor alpha, ScalarType out_dtype, str order, Tensor? w_sm90_codes=None,
  Tensor? w_sm90_scales=None) -> Tensor`` ``(M, N)``: :func:`fp4mm.nvfp4_mm`. ``alpha`` is a
  one-element float32 tensor so that a dynamic activation scale needs no host sync while
  tracing. A ``PrepackedNVFP4Weight`` travels as tensors: ``w_packed`` its ``packed`` field (the
  plain-Triton layout), or ``w_sm90_codes`` / ``w_sm90_scales`` its ``sm90`` codes and scales
  (the Hopper layout); all None for a raw weight (see :func:`prepacked_args`).
- ``fp4mm::nvfp4_w4a16_mm(Tensor x, Tensor w_q, Tensor w_scales, Tensor? w_packed,
  Tensor w_global_scale, str order, Tensor? w_sm90_codes=None, Tensor? w_sm90_scales=None)
  -> Tensor`` ``(M, N)`` of x.dtype: fp16/bf16 activations use :func:`fp4mm.ops.nvfp4_w4a16_mm`;
  float32 activations use an fp32 dequantise-and-matmul. Prepacked weights as above.
- ``fp4mm::nvfp4_w4a16_mm_alpha(...)``: the same arguments with ``Tensor alpha`` (the output
  factor ``1 / gs_w``, ModelOpt's ``weight_scale_2``) in place of ``w_global_scale``:
  :func:`fp4mm.ops.nvfp4_w4a16_mm_alpha`, no reciprocal launched per call (``NVFP4Linear``).
- ``fp4mm::nvfp4_linear_w4a4(Tensor x, Tensor w_q, Tensor w_scales, Tensor weight_scale_2,
  Tensor? input_global_scale, Tensor? static_alpha, str order) -> Tensor`` ``(M, N)`` of x.dtype:
  ``NVFP4Linear``'s W4A4 product (quantise x, then the matmul) in one node, for the decode sizes
  where the layer runs it on the 16-bit-x GEMV (:func:`fp4mm.ops.dispatch.w4a4_linear_via_16bit_x`).
- ``fp4mm::w4a16_mm(Tensor x, Tensor w_q, Tensor scales, int group_size, str order) -> Tensor``:
  :func:`fp4mm.w4a16_mm`.

Each has a fake (meta) implementation giving shapes and dtypes from the inputs alone. The Python
wrappers below (same names) take the friendlier public argument types. They and ``NVFP4Linear``
call through :func:`call`, which in plain eager code runs the implementation without the
dispatcher.
"""

from __future__ import annotations

import functools

import torch
from torch.library import custom_op

from fp4mm.backend import device_guard, resolve_backend
from fp4mm.formats.nvfp4 import NVFP4Tensor, dequantize_nvfp4_blocks
from fp4mm.formats.nvfp4 import quantize_nvfp4 as _codec_quantize_nvfp4
from fp4mm.reference import as_scale_bytes


def prepacked_args(w) -> tuple:
    """``(w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales)``, the op arguments of a raw
    ``(w_q, w_scales)`` pair's ``w_q`` (the rest None) or of a ``PrepackedNVFP4Weight``."""
    from fp4mm.ops.prepack import PrepackedNVFP4Weight

    if not isinstance(w, PrepackedNVFP4Weight):
        return w, None, None, None, None
    sm90 = w.sm90
    return (w.w_q, w.w_scales, w.packed, None if sm90 is None else sm90.codes,
            None if sm90 is None else sm90.scales)


def _weight_args(w_q, w_scales, w_packed=None) -> tuple:
    """The wrappers' ``(w_q, w_scales)``, raw (``w_packed``: optionally the plain-Triton layout,
    the older way to pass it) or ``(PrepackedNVFP4Weight, None)``, as the op's five weight
    arguments."""
    w_q, packed_scales, packed, codes, scales = prepacked_args(w_q)
    if packed_scales is not None:
        if w_scales is not None or w_packed is not None:
            raise ValueError("w_scales, w_packed: expected None when w_q is a "
                             "PrepackedNVFP4Weight (it carries its scales and layout)")
        return w_q, packed_scales, packed, codes, scales
    return w_q, w_scales, w_packed, None, None


def _weight(w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales, order):
    """Raw ``(w_q, w_scales)`` or a ``PrepackedNVFP4Weight`` (then scales travel inside it)."""
    if (w_sm90_codes is None) != (w_sm90_scales is None):
        raise ValueError("w_sm90_codes, w_sm90_scales: expected both (a Hopper-prepacked weight) "
                         "or neither")
    if w_packed is None and w_sm90_codes is None:
        return w_q, w_scales
    if w_packed is not None and w_sm90_codes is not None:
        raise ValueError("w_packed, w_sm90_codes: expected one prepacked layout, got both")
    from fp4mm.ops.prepack import PrepackedNVFP4Weight

    sm90 = None
    if w_sm90_codes is not None:
        from fp4mm.kernels.fp4_gemm_sm90 import check_packed_sm90, packed_weight_sm90

        shape = (w_q.shape[0], w_q.shape[1] * 2)
        check_packed_sm90(w_sm90_codes, w_sm90_scales, *shape)
        # the descriptors only when the GEMM runs (a decode call takes the GEMV on w_q)
        sm90 = functools.partial(packed_weight_sm90, w_sm90_codes, w_sm90_scales, *shape)
    return PrepackedNVFP4Weight(w_q, as_scale_bytes("w_scales", w_scales), order, w_packed,
                                sm90), None


# --- eager calls without the dispatcher -------------------------------------------------------

_IMPLS: dict = {}  # op name -> its Python implementation (what its custom op runs)


def _op(name: str):
    """Make the decorated function the functional custom op ``fp4mm::<name>``, and keep the
    function itself for :func:`call`."""
    def register(fn):
        _IMPLS[name] = fn
        return custom_op(f"fp4mm::{name}", fn, mutates_args=())
    return register


def _dispatcher_needed(args) -> bool:
    """Whether a call must go through the ``torch.library`` dispatcher: while tracing
    (``torch.compile``, export, ``torch.jit.trace``, FX), under a profiler (which names the
    op), inside a Python dispatch / torch-function mode or a functorch transform (fake tensors,
    ``vmap``), with a tensor subclass or a meta tensor (the fake implementation), or where
    autograd would record the call (grad enabled and an input requires grad: the op then raises
    its "no autograd formula" error at backward instead of handing back an output with no
    history)."""
    if (torch.compiler.is_compiling() or torch._C._get_tracing_state() is not None
            or torch.fx._symbolic_trace.is_fx_tracing() or torch.autograd._profiler_enabled()
            or torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack()
            or torch._C._functorch.peek_interpreter_stack() is not None):
        return True
    grad = torch.is_grad_enabled()
    for a in args:
        if isinstance(a, torch.Tensor) and (type(a) not in (torch.Tensor, torch.nn.Parameter)
                                            or a.is_meta or (grad and a.requires_grad)):
            return True
    return False


def call(name: str, *args):
    """``torch.ops.fp4mm.<name>(*args)``. In plain eager code, where nothing can observe the
    dispatcher (:func:`_dispatcher_needed`), the op's implementation is called directly: the
    same function on the same arguments, without the dispatcher's autograd and backend layers
    (15-40 us a custom-op call on a 2-core CPU; 23-51 us less host time a one-token
    ``NVFP4Linear`` call on the H200 VM, docs/nn.md)."""
    if _dispatcher_needed(args):
        return getattr(torch.ops.fp4mm, name).default(*args)
    return _IMPLS[name](*args)


# --- quantize_nvfp4 -------------------------------------------------------------------------

def triton_quantizer_available(device: torch.device) -> bool:
    """Whether ``fp4mm::quantize_nvfp4`` runs the Triton kernel for tensors on ``device``."""
    return resolve_backend(device) == "triton"


def _pdl_late(x: torch.Tensor) -> bool:
    """Whether the quantiser lets the (W4A4) matmul after it launch only after its stores."""
    from fp4mm.ops.dispatch import quantiser_pdl_late

    return quantiser_pdl_late(x.numel() // x.shape[-1] if x.shape[-1] else 0)


@_op("quantize_nvfp4")
def _quantize_nvfp4_op(
    x: torch.Tensor, global_scale: torch.Tensor | None, order: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if triton_quantizer_available(x.device):
        from fp4mm.kernels.quantize_nvfp4 import quantize_nvfp4_triton

        with device_guard(x.device):  # Triton launches on the current device
            q = quantize_nvfp4_triton(x, global_scale, order, pdl_late=_pdl_late(x))
    else:
        q = _codec_quantize_nvfp4(x, global_scale, order)  # returns a new global-scale tensor
    return q.data, q.scales, q.global_scale.reshape(())


def _fake_quantized(x):
    """The quantise ops' outputs as fakes: data, scales, a float32 0-d scalar."""
    K = x.shape[-1]
    lead = tuple(x.shape[:-1])
    return (x.new_empty((*lead, K // 2), dtype=torch.uint8),
            x.new_empty((*lead, K // 16), dtype=torch.uint8),
            x.new_empty((), dtype=torch.float32))


@_quantize_nvfp4_op.register_fake
def _(x, global_scale, order):
    return _fake_quantized(x)


@_op("quantize_nvfp4_alpha")
def _quantize_nvfp4_alpha_op(
    x: torch.Tensor, global_scale: torch.Tensor | None, alpha_numerator: torch.Tensor, order: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if triton_quantizer_available(x.device):
        from fp4mm.kernels.quantize_nvfp4 import quantize_nvfp4_triton

        alpha = torch.empty((), dtype=torch.float32, device=x.device)
        with device_guard(x.device):  # Triton launches on the current device
            q = quantize_nvfp4_triton(x, global_scale, order,
                                      alpha_numerator=alpha_numerator.reshape(()).float(),
                                      alpha_out=alpha, pdl_late=_pdl_late(x))
        return q.data, q.scales, alpha
    q = _codec_quantize_nvfp4(x, global_scale, order)
    return q.data, q.scales, alpha_numerator.reshape(()).float() / q.global_scale.reshape(())


@_quantize_nvfp4_alpha_op.register_fake
def _(x, global_scale, alpha_numerator, order):
    return _fake_quantized(x)


def quantize_nvfp4(x: torch.Tensor, global_scale=None, order: str = "low_first") -> NVFP4Tensor:
    """:func:`fp4mm.quantize_nvfp4` through ``fp4mm::quantize_nvfp4`` (Triton on CUDA).

    ``global_scale``: None (dynamic), a positive float, or a one-element tensor on x's device.
    """
    if global_scale is not None and not isinstance(global_scale, torch.Tensor):
        global_scale = torch.tensor(float(global_scale), dtype=torch.float32, device=x.device)
    return NVFP4Tensor(*call("quantize_nvfp4", x, global_scale, order))


# --- nvfp4_mm -------------------------------------------------------------------------------

@_op("nvfp4_mm")
def _nvfp4_mm_op(
    x_q: torch.Tensor,
    x_scales: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    w_packed: torch.Tensor | None,
    alpha: torch.Tensor,
    out_dtype: torch.dtype,
    order: str,
    w_sm90_codes: torch.Tensor | None = None,
    w_sm90_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    from fp4mm.ops import nvfp4_mm

    w, ws = _weight(w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales, order)
    return nvfp4_mm(x_q, x_scales, w, ws, alpha, out_dtype=out_dtype, order=order)


@_nvfp4_mm_op.register_fake
def _(x_q, x_scales, w_q, w_scales, w_packed, alpha, out_dtype, order, w_sm90_codes=None,
      w_sm90_scales=None):
    return x_q.new_empty((x_q.shape[0], w_q.shape[0]), dtype=out_dtype)


def nvfp4_mm(x_q, x_scales, w_q, w_scales, alpha, *, out_dtype=torch.float16,
             order: str = "low_first", w_packed: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`fp4mm.nvfp4_mm` through ``fp4mm::nvfp4_mm``; ``alpha`` a float or 1-element
    tensor; ``w_q`` raw (with ``w_scales``) or a ``PrepackedNVFP4Weight`` (``w_scales=None``)."""
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=torch.float32, device=x_q.device)
    w_q, w_scales, w_packed, codes, scales = _weight_args(w_q, w_scales, w_packed)
    return call("nvfp4_mm", x_q, x_scales, w_q, w_scales, w_packed, alpha, out_dtype, order,
                codes, scales)


# --- nvfp4_w4a16_mm -------------------------------------------------------------------------

def _nvfp4_w4a16(x, w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales, order, factor,
                 is_alpha: bool):
    """Both W4A16 ops: ``factor`` is gs_w (``is_alpha`` False: the output factor is its
    reciprocal) or the output factor itself. fp32 activations: ``(x @ (e2m1 * e4m3)^T) * alpha``
    in float32 (no fp32 kernel)."""
    w, ws = _weight(w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales, order)
    if x.dtype == torch.float32:
        wd = dequantize_nvfp4_blocks(w_q, as_scale_bytes("w_scales", w_scales), order)
        f = factor.reshape(()).float()
        return (x @ wd.T) * (f if is_alpha else torch.reciprocal(f))
    from fp4mm.ops import nvfp4_w4a16_mm, nvfp4_w4a16_mm_alpha

    op = nvfp4_w4a16_mm_alpha if is_alpha else nvfp4_w4a16_mm
    return op(x, w, ws, factor, order=order)


@_op("nvfp4_w4a16_mm")
def _nvfp4_w4a16_mm_op(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    w_packed: torch.Tensor | None,
    w_global_scale: torch.Tensor,
    order: str,
    w_sm90_codes: torch.Tensor | None = None,
    w_sm90_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    return _nvfp4_w4a16(x, w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales, order,
                        w_global_scale, False)


@_nvfp4_w4a16_mm_op.register_fake
def _(x, w_q, w_scales, w_packed, w_global_scale, order, w_sm90_codes=None, w_sm90_scales=None):
    return x.new_empty((x.shape[0], w_q.shape[0]))


@_op("nvfp4_w4a16_mm_alpha")
def _nvfp4_w4a16_mm_alpha_op(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    w_packed: torch.Tensor | None,
    alpha: torch.Tensor,
    order: str,
    w_sm90_codes: torch.Tensor | None = None,
    w_sm90_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    return _nvfp4_w4a16(x, w_q, w_scales, w_packed, w_sm90_codes, w_sm90_scales, order, alpha,
                        True)


@_nvfp4_w4a16_mm_alpha_op.register_fake
def _(x, w_q, w_scales, w_packed, alpha, order, w_sm90_codes=None, w_sm90_scales=None):
    return x.new_empty((x.shape[0], w_q.shape[0]))


def nvfp4_w4a16_mm(x, w_q, w_scales, w_global_scale, *, order: str = "low_first",
                   w_packed: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ (e2m1(w_q) * e4m3(w_scales) / gs_w)^T`` through ``fp4mm::nvfp4_w4a16_mm``.

    ``x`` fp16/bf16/fp32 ``(M, K)``; ``w_q`` raw (with ``w_scales``) or a
    ``PrepackedNVFP4Weight`` (``w_scales=None``); ``w_global_scale`` the encode scale gs_w
    (float or tensor).
    """
    if not isinstance(w_global_scale, torch.Tensor):
        w_global_scale = torch.tensor(float(w_global_scale), dtype=torch.float32, device=x.device)
    w_q, w_scales, w_packed, codes, scales = _weight_args(w_q, w_scales, w_packed)
    return call("nvfp4_w4a16_mm", x, w_q, w_scales, w_packed, w_global_scale, order, codes,
                scales)


def nvfp4_w4a16_mm_alpha(x, w_q, w_scales, alpha, *, order: str = "low_first") -> torch.Tensor:
    """``x @ (e2m1(w_q) * e4m3(w_scales))^T * alpha`` through ``fp4mm::nvfp4_w4a16_mm_alpha``;
    ``alpha = 1 / gs_w`` a float or tensor, ``w_q`` as in :func:`nvfp4_w4a16_mm`."""
    if not isinstance(alpha, torch.Tensor):
        alpha = torch.tensor(float(alpha), dtype=torch.float32, device=x.device)
    w_q, w_scales, w_packed, codes, scales = _weight_args(w_q, w_scales)
    return call("nvfp4_w4a16_mm_alpha", x, w_q, w_scales, w_packed, alpha, order, codes, scales)


# --- nvfp4_linear_w4a4 ----------------------------------------------------------------------

@_op("nvfp4_linear_w4a4")
def _nvfp4_linear_w4a4_op(
    x: torch.Tensor,
    w_q: torch.Tensor,
    w_scales: torch.Tensor,
    weight_scale_2: torch.Tensor,
    input_global_scale: torch.Tensor | None,
    static_alpha: torch.Tensor | None,
    order: str,
) -> torch.Tensor:
    """The W4A4 product of ``NVFP4Linear`` for 16-bit ``x`` where
    :func:`fp4mm.ops.dispatch.w4a4_linear_via_16bit_x` holds: x quantised to NVFP4 (gs_x given,
    with its ``static_alpha``, or dynamic: ``alpha = weight_scale_2 / gs_x``) and its values
    ``e2m1 * e4m3`` written in fp16 by the quantiser's one pass, then the 16-bit-x TMA GEMV on
    the raw weight: the layer's products, with no code bytes and no dequantise pass between.
    Where that GEMV does not apply (alignment, not Hopper), the layer's other route:
    ``quantize_nvfp4(_alpha)`` then ``nvfp4_mm``."""
    from fp4mm.kernels import fp4_gemv_tma_sm90

    if (input_global_scale is None) != (static_alpha is None):
        raise ValueError("input_global_scale, static_alpha: expected both (a static activation "
                         "scale) or neither (dynamic)")
    M, K = x.shape
    out = torch.empty((M, w_q.shape[0]), dtype=x.dtype, device=x.device)
    if (triton_quantizer_available(x.device) and x.dtype != torch.float32
            and fp4_gemv_tma_sm90.is_supported(x.device, M, K, w_q, w_scales, out)):
        from fp4mm.kernels.quantize_nvfp4 import quantize_dequantize_nvfp4_triton
        from fp4mm.ops import dispatch

        with device_guard(x.device):  # Triton launches on the current device
            if input_global_scale is None:
                alpha = torch.empty((), dtype=torch.float32, device=x.device)
                x16, _ = quantize_dequantize_nvfp4_triton(
                    x, None, alpha_numerator=weight_scale_2.reshape(()).float(),
                    alpha_out=alpha, pdl_late=dispatch.W4A4_16BIT_X_QUANTISER_PDL_LATE)
            else:
                x16, _ = quantize_dequantize_nvfp4_triton(
                    x, input_global_scale, pdl_late=dispatch.W4A4_16BIT_X_QUANTISER_PDL_LATE)
                alpha = static_alpha
            fp4_gemv_tma_sm90.gemv_tma_sm90(
                x16, w_q, as_scale_bytes("w_scales", w_scales), alpha, order, out,
                fair_share=dispatch.W4A4_16BIT_X_FAIR_SHARE)
        return out
    if input_global_scale is None:
        q, s, alpha = _IMPLS["quantize_nvfp4_alpha"](x, None, weight_scale_2, order)
    else:
        q, s, _ = _IMPLS["quantize_nvfp4"](x, input_global_scale, order)
        alpha = static_alpha
    return _IMPLS["nvfp4_mm"](q, s, w_q, w_scales, None, alpha, x.dtype, order)


@_nvfp4_linear_w4a4_op.register_fake
def _(x, w_q, w_scales, weight_scale_2, input_global_scale, static_alpha, order):
    return x.new_empty((x.shape[0], w_q.shape[0]))


# --- w4a16_mm -------------------------------------------------------------------------------

@_op("w4a16_mm")
def _w4a16_mm_op(x: torch.Tensor, w_q: torch.Tensor, scales: torch.Tensor, group_size: int,
                 order: str) -> torch.Tensor:
    from fp4mm.ops import w4a16_mm

    return w4a16_mm(x, w_q, scales, group_size, order=order)


@_w4a16_mm_op.register_fake
def _(x, w_q, scales, group_size, order):
    return x.new_empty((x.shape[0], w_q.shape[0]))


def w4a16_mm(x, w_q, scales, group_size: int, *, order: str = "low_first") -> torch.Tensor:
    """:func:`fp4mm.w4a16_mm` through ``fp4mm::w4a16_mm``."""
    return call("w4a16_mm", x, w_q, scales, group_size, order)


__all__ = ["call", "nvfp4_mm", "nvfp4_w4a16_mm", "nvfp4_w4a16_mm_alpha", "prepacked_args",
           "quantize_nvfp4", "triton_quantizer_available", "w4a16_mm"]
