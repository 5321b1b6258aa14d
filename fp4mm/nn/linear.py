"""``NVFP4Linear``: a drop-in ``nn.Linear`` with NVFP4 weights (and optionally NVFP4 activations).

The module's buffers are exactly the tensors of an NVIDIA ModelOpt NVFP4 checkpoint, so
``state_dict()`` *is* that format and ``load_state_dict`` reads it:

- ``weight``: uint8 ``(N, K/2)``, packed E2M1, low-first;
- ``weight_scale``: float8_e4m3fn ``(N, K/16)``, row-major block scales;
- ``weight_scale_2``: float32 0-d, the weight *decode* scale ``1 / gs_w``;
- ``input_scale``: float32 0-d, the activation decode scale ``1 / gs_x`` (static activation
  quantisation only; absent for dynamic);
- ``bias``: ``(N,)`` parameter, or None.

Modes:

- ``"w4a4"``: activations quantised to NVFP4 per call (dynamic: ``gs_x = 2688 / amax(x)`` of the
  whole input; static: ``gs_x = 1 / input_scale``), then ``fp4mm::nvfp4_mm`` with
  ``alpha = (1 / gs_x) * weight_scale_2`` (= ``input_scale * weight_scale_2`` when static).
- ``"w4a16"``: activations stay fp16/bf16 (``fp4mm::nvfp4_w4a16_mm_alpha`` with ``alpha =
  weight_scale_2``); float32 activations use an fp32 dequantise-and-matmul.

``.half()``, ``.to(dtype)`` etc. convert the bias only: the scale buffers keep their dtypes.

:meth:`NVFP4Linear.prepack` keeps the prefill GEMM's layout of the weight beside it
(``fp4mm.prepack_nvfp4_weight``: the Hopper layout on an H100/H200), in non-persistent buffers
(never in ``state_dict``): calls from 33 tokens up no longer re-lay the weight every time
(``docs/nn.md`` has the measured difference), for twice the weight memory.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from fp4mm import library  # registers the fp4mm:: ops
from fp4mm._validate import as_scalar, check_tensor
from fp4mm.formats.nvfp4 import NVFP4_BLOCK, quantize_nvfp4

MODES = ("w4a4", "w4a16")
# Buffers whose dtype is part of the format: Module._apply (.half(), .to(dtype)) only moves them.
_FIXED_DTYPE_BUFFERS = ("weight_scale", "weight_scale_2", "input_scale")
# The prepacked weight (prepack()): non-persistent, rebuilt from weight and weight_scale.
_PREPACKED_BUFFERS = ("weight_packed", "weight_sm90_codes", "weight_sm90_scales")
# Per-call scalars derived from the scale buffers (non-persistent, float32), kept so that an
# eager forward (or a CUDA graph of one) launches no kernel for them, each a launch of its own at
# decode sizes: static activations' gs_x = 1 / input_scale and alpha = input_scale *
# weight_scale_2 (w4a16 needs none: its matmul takes weight_scale_2 as it is). A traced forward
# (torch.compile) computes them from the buffers instead: the compiler fuses that, and a cache
# could go stale inside a compiled graph.
_DERIVED_BUFFERS = ("input_global_scale", "static_alpha")


def _check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode


def _via_16bit_x(x2: torch.Tensor) -> bool:
    """Whether a W4A4 forward of ``x2`` takes ``fp4mm::nvfp4_linear_w4a4`` (Hopper, the Triton
    backend, :func:`fp4mm.ops.dispatch.w4a4_linear_via_16bit_x`)."""
    from fp4mm.backend import is_hopper, resolve_backend
    from fp4mm.ops.dispatch import w4a4_linear_via_16bit_x

    return (x2.is_cuda and w4a4_linear_via_16bit_x(x2.shape[0], x2.shape[1], x2.dtype)
            and is_hopper(x2.device) and resolve_backend(x2.device, x2.dtype) == "triton")


def _activation_decode_scale(activation_scale) -> float | None:
    """``"dynamic"`` -> None; a static encode scale gs_x -> the decode scale ``1 / gs_x``."""
    if activation_scale == "dynamic":
        return None
    if isinstance(activation_scale, (str, bool)) or (
            isinstance(activation_scale, torch.Tensor) and activation_scale.numel() != 1):
        raise TypeError(f"activation_scale: expected 'dynamic' or a float (the static encode "
                        f"scale gs_x = 2688 / calibrated amax), got {activation_scale!r}")
    return 1.0 / as_scalar("activation_scale", activation_scale, positive=True)


class NVFP4Linear(nn.Module):
    """``y = x @ W^T + b`` with W stored in NVFP4 (ModelOpt layout; see the module docstring).

    Args:
        in_features: K, a positive multiple of 16.
        out_features: N.
        bias: whether the layer has a bias.
        mode: ``"w4a4"`` or ``"w4a16"``.
        static_input_scale: register an ``input_scale`` buffer (static activation quantisation).
        device, dtype: device of every buffer; dtype of the bias.

    The constructor makes zero weights; fill them with :meth:`from_linear`, :meth:`from_modelopt`
    or ``load_state_dict``. Input ``(..., K)`` of any float dtype; output ``(..., N)`` of the
    input's dtype.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 mode: str = "w4a4", static_input_scale: bool = False, device=None, dtype=None):
        super().__init__()
        if not isinstance(in_features, int) or in_features <= 0 or in_features % NVFP4_BLOCK:
            raise ValueError(f"in_features: expected a positive multiple of {NVFP4_BLOCK}, got "
                             f"{in_features!r}")
        if not isinstance(out_features, int) or out_features <= 0:
            raise ValueError(f"out_features: expected a positive int, got {out_features!r}")
        self.in_features, self.out_features = in_features, out_features
        self.mode = _check_mode(mode)
        K, N = in_features, out_features
        self.register_buffer("weight", torch.zeros(N, K // 2, dtype=torch.uint8, device=device))
        self.register_buffer("weight_scale", torch.zeros(N, K // NVFP4_BLOCK, device=device,
                                                         dtype=torch.float8_e4m3fn))
        self.register_buffer("weight_scale_2", torch.ones((), device=device))
        if static_input_scale:
            self.register_buffer("input_scale", torch.ones((), device=device))
        else:
            self.input_scale = None
        self.bias = nn.Parameter(torch.zeros(N, device=device, dtype=dtype),
                                 requires_grad=False) if bias else None
        for name in (*_PREPACKED_BUFFERS, *_DERIVED_BUFFERS):
            self.register_buffer(name, None, persistent=False)
        self._prepacked_from = None  # _weight_key() when prepack() last ran
        self._derived_from = None  # _scales_key() when _derive() last ran
        self._derive()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str = "w4a4",
                    activation_scale="dynamic") -> NVFP4Linear:
        """Quantise an ``nn.Linear``'s weight with :func:`fp4mm.quantize_nvfp4` (per-tensor
        ``gs_w = 2688 / amax|W|``).

        Args:
            linear: the layer; ``in_features`` must be a multiple of 16, its weight finite.
            mode: ``"w4a4"`` or ``"w4a16"``.
            activation_scale: ``"dynamic"`` (gs_x from each input's amax) or a float, the static
                encode scale ``gs_x`` (e.g. ``2688 / calibrated amax``), stored as
                ``input_scale = 1 / gs_x``. Only used in w4a4 mode.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        input_scale = _activation_decode_scale(activation_scale)
        weight = linear.weight.detach()
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, mode=mode,
                    static_input_scale=input_scale is not None, device=weight.device,
                    dtype=weight.dtype)
        q = quantize_nvfp4(weight)
        with torch.no_grad():
            layer.weight.copy_(q.data)
            layer.weight_scale.copy_(q.scales.view(torch.float8_e4m3fn))
            layer.weight_scale_2.copy_(torch.reciprocal(q.global_scale))
            if input_scale is not None:
                layer.input_scale.fill_(input_scale)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        return layer

    @classmethod
    def from_modelopt(cls, weight: torch.Tensor, weight_scale: torch.Tensor,
                      weight_scale_2: torch.Tensor, input_scale: torch.Tensor | None = None,
                      bias: torch.Tensor | None = None, mode: str = "w4a4",
                      name: str = "") -> NVFP4Linear:
        """Build from one layer of an NVIDIA ModelOpt NVFP4 checkpoint.

        Args:
            weight: uint8 ``(N, K/2)``, packed E2M1, low-first.
            weight_scale: float8_e4m3fn ``(N, K/16)`` block scales.
            weight_scale_2: float32 one-element tensor, ``1 / gs_w``.
            input_scale: float32 one-element tensor ``1 / gs_x`` (static activations), or None
                (dynamic).
            bias: ``(N,)`` floating tensor, or None.
            mode: ``"w4a4"`` or ``"w4a16"`` (w4a16 keeps ``input_scale`` but does not use it).
            name: prefix used in error messages (``"model.layers.0.q_proj"``).
        """
        N, K = check_modelopt_layer(name, weight, weight_scale, weight_scale_2, input_scale, bias)
        layer = cls(K, N, bias is not None, mode=mode, static_input_scale=input_scale is not None,
                    device=weight.device, dtype=None if bias is None else bias.dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.weight_scale.copy_(weight_scale)
            layer.weight_scale_2.copy_(weight_scale_2.reshape(()))
            if input_scale is not None:
                layer.input_scale.copy_(input_scale.reshape(()))
            if bias is not None:
                layer.bias.copy_(bias)
        return layer

    # -- forward -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected a last dimension of {self.in_features}, got shape "
                             f"{tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        traced = torch.compiler.is_compiling()
        if not traced:  # buffers changed in place since: refresh what was derived from them
            if self._derived_from != self._scales_key():
                self._derive()
            if self._prepacked_from is not None and self._prepacked_from != self._weight_key():
                self.prepack()
        scalars = self._scalars() if traced else {n: getattr(self, n) for n in _DERIVED_BUFFERS}
        if self.mode == "w4a4":
            y = self._forward_w4a4(x2, scalars)
        else:
            y = library.call("nvfp4_w4a16_mm_alpha", x2, self.weight, self.weight_scale,
                             self.weight_packed, self.weight_scale_2, "low_first",
                             self.weight_sm90_codes, self.weight_sm90_scales)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def _forward_w4a4(self, x2: torch.Tensor, scalars: dict) -> torch.Tensor:
        static = self.input_scale is not None
        if _via_16bit_x(x2):  # decode sizes on Hopper: one quantise pass to fp16 values, GEMV
            return library.call("nvfp4_linear_w4a4", x2, self.weight, self.weight_scale,
                                self.weight_scale_2,
                                scalars["input_global_scale"] if static else None,
                                scalars["static_alpha"] if static else None, "low_first")
        if not static:  # alpha = weight_scale_2 / gs_x, written by the quantiser
            x_q, x_s, alpha = library.call("quantize_nvfp4_alpha", x2, None,
                                           self.weight_scale_2, "low_first")
        else:
            x_q, x_s, _ = library.call("quantize_nvfp4", x2, scalars["input_global_scale"],
                                       "low_first")
            alpha = scalars["static_alpha"]
        return library.call("nvfp4_mm", x_q, x_s, self.weight, self.weight_scale,
                            self.weight_packed, alpha, x2.dtype, "low_first",
                            self.weight_sm90_codes, self.weight_sm90_scales)

    # -- prepacked weight ----------------------------------------------------------------------

    def prepack(self) -> NVFP4Linear:
        """Keep the prefill GEMM's layout of the weight (``fp4mm.prepack_nvfp4_weight``, for the
        weight's device) so that calls stop re-laying it out; returns ``self``.

        Costs one pass over the weight now (about 30 us for 18432 x 3072 on an H100) and a second
        copy of the weight in memory. The copy lives in non-persistent buffers
        (``weight_packed``, or ``weight_sm90_codes`` / ``weight_sm90_scales`` on Hopper), so
        ``state_dict()`` stays the ModelOpt format. It follows the weight: ``load_state_dict``
        and device moves re-lay it, and so does the next eager call after an in-place change
        of ``weight`` or ``weight_scale`` (a compiled model does not check: call ``prepack()``
        again after changing the weight in place). :meth:`drop_prepacked` frees it.

        Raises ``ValueError`` where the weight cannot be prepacked (off Hopper: K not a
        multiple of 64)."""
        from fp4mm.ops.prepack import prepack_nvfp4_weight

        w = prepack_nvfp4_weight(self.weight, self.weight_scale)
        _, _, self.weight_packed, self.weight_sm90_codes, self.weight_sm90_scales = \
            library.prepacked_args(w)
        self._prepacked_from = self._weight_key()
        return self

    def drop_prepacked(self) -> NVFP4Linear:
        """Free the prepacked copy of the weight (calls re-lay it out again); returns ``self``."""
        for name in _PREPACKED_BUFFERS:
            setattr(self, name, None)
        self._prepacked_from = None
        return self

    @property
    def is_prepacked(self) -> bool:
        """Whether :meth:`prepack` holds a re-laid copy of the weight."""
        return self._prepacked_from is not None

    def _scales_key(self) -> tuple:
        """What the derived scalars were made from: storage and version of the scale buffers."""
        return tuple((t.data_ptr(), t._version) for t in (self.weight_scale_2, self.input_scale)
                     if t is not None)

    def _scalars(self) -> dict:
        """The ``_DERIVED_BUFFERS`` computed from the scale buffers (static-scale ones only with
        an ``input_scale``; the others are None)."""
        gs_x, alpha = None, None
        if self.input_scale is not None:
            gs_x = torch.reciprocal(self.input_scale.float())
            alpha = self.input_scale.float() * self.weight_scale_2.float()
        return dict(zip(_DERIVED_BUFFERS, (gs_x, alpha)))

    def _derive(self) -> None:
        """(Re)compute the ``_DERIVED_BUFFERS`` from the scale buffers."""
        with torch.no_grad():
            for name, t in self._scalars().items():
                setattr(self, name, t)
        self._derived_from = self._scales_key()

    def _weight_key(self) -> tuple:
        """What the prepacked copy was made from: storage and in-place version of both tensors."""
        return (self.weight.data_ptr(), self.weight._version, self.weight_scale.data_ptr(),
                self.weight_scale._version)

    # -- helpers -----------------------------------------------------------------------------

    def dequantized_weight(self) -> torch.Tensor:
        """float32 ``(N, K)``: ``e2m1 * e4m3 * weight_scale_2``."""
        from fp4mm.formats.nvfp4 import dequantize_nvfp4_blocks

        w = dequantize_nvfp4_blocks(self.weight, self.weight_scale.view(torch.uint8))
        return w * self.weight_scale_2

    def _apply(self, fn, recurse=True):
        # Keep the format's dtypes through .half()/.to(dtype): move those buffers, don't cast.
        kept = {n: self._buffers[n] for n in _FIXED_DTYPE_BUFFERS
                if self._buffers.get(n) is not None}
        # The prepacked copy is not moved: its layout belongs to the device it was made for; the
        # derived scalars are recomputed from the moved scales.
        rebuilt = {n: self._buffers[n] for n in (*_PREPACKED_BUFFERS, *_DERIVED_BUFFERS)}
        for n in (*kept, *rebuilt):
            self._buffers[n] = None
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.weight.device
            for n, t in kept.items():
                self._buffers[n] = t.to(device)
            self._buffers.update(rebuilt)
        if self._derived_from != self._scales_key():
            self._derive()
        if self.is_prepacked and self._prepacked_from != self._weight_key():
            try:
                self.prepack()  # moved: re-lay it for the new device
            except ValueError as e:
                self.drop_prepacked()
                warnings.warn(f"NVFP4Linear: the prepacked weight was dropped after the move to "
                              f"{device}: {e}", stacklevel=2)
        return self

    def extra_repr(self) -> str:
        act = "dynamic" if self.input_scale is None else "static"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, mode={self.mode}"
                + (f", activations={act}" if self.mode == "w4a4" else ""))


def _refresh_after_load(module: NVFP4Linear, incompatible_keys) -> None:
    """load_state_dict post-hook: the loaded tensors replace those the derived scalars and the
    prepacked copy were made from (a compiled model does not check them per call)."""
    module._derive()
    if module.is_prepacked:
        module.prepack()


def _scalar(name: str, t, required: bool) -> None:
    if t is None:
        if required:
            raise ValueError(f"{name}: missing (expected a float32 scalar)")
        return
    check_tensor(name, t, dtype=torch.float32, contiguous=False)
    if t.numel() != 1 or t.dim() > 1:
        raise ValueError(f"{name}: expected a float32 scalar (shape () or (1,)), got shape "
                         f"{tuple(t.shape)}")


def check_modelopt_layer(name, weight, weight_scale, weight_scale_2, input_scale=None, bias=None,
                         in_features: int | None = None, out_features: int | None = None):
    """Validate one ModelOpt NVFP4 layer's tensors; returns ``(N, K)``.

    Every error names the tensor (``f"{name}.weight_scale"``) and what was expected.
    """
    p = f"{name}." if name else ""
    check_tensor(p + "weight", weight, dtype=torch.uint8, ndim=2, contiguous=False)
    N, K = weight.shape[0], weight.shape[1] * 2
    if out_features is not None and N != out_features or in_features is not None and \
            K != in_features:
        raise ValueError(f"{p}weight: expected shape ({out_features}, {in_features // 2}) "
                         f"(N, K/2) for a Linear({in_features}, {out_features}), got "
                         f"{tuple(weight.shape)}")
    if K == 0 or K % NVFP4_BLOCK:
        raise ValueError(f"{p}weight: expected (N, K/2) with K a positive multiple of "
                         f"{NVFP4_BLOCK}, got {tuple(weight.shape)}")
    check_tensor(p + "weight_scale", weight_scale, dtype=torch.float8_e4m3fn,
                 shape=(N, K // NVFP4_BLOCK), contiguous=False)
    _scalar(p + "weight_scale_2", weight_scale_2, required=True)
    _scalar(p + "input_scale", input_scale, required=False)
    if bias is not None:
        check_tensor(p + "bias", bias, shape=(N,), contiguous=False)
        if not bias.is_floating_point():
            raise TypeError(f"{p}bias: expected a floating-point tensor, got {bias.dtype}")
    return N, K
