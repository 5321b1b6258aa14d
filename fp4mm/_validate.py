"""Argument checks shared by every public entry point.

Each check raises ``TypeError`` (wrong Python type or dtype) or ``ValueError`` (wrong shape, value,
device or layout) with a message that names the argument, what was expected and what came.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

ORDERS = ("low_first", "high_first")


def _describe(t: torch.Tensor) -> str:
    return f"{t.dtype} tensor of shape {tuple(t.shape)} on {t.device}"


def check_tensor(
    name: str,
    t,
    *,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    shape: Sequence[int | None] | None = None,
    ndim: int | None = None,
    contiguous: bool = True,
) -> torch.Tensor:
    """Check a tensor argument. ``None`` in ``shape`` matches any size in that dimension."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if t.dtype not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise TypeError(f"{name}: expected dtype {want}, got {_describe(t)}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got {_describe(t)}")
    if shape is not None:
        ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
        if not ok:
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {_describe(t)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(
            f"{name}: expected a contiguous (row-major) tensor, got strides {t.stride()} "
            f"for shape {tuple(t.shape)}; call .contiguous() first"
        )
    return t


def check_same_device(**tensors: torch.Tensor | torch.device) -> torch.device:
    """All tensors (or devices: where the call's device is known, no tensor need be made) on one
    device; returns it."""
    devices = {name: t if isinstance(t, torch.device) else t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"expected all tensors on one device, got {listing}")
    return first


def check_order(order) -> str:
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
    return order


def check_k(name: str, K, multiple: int = 16) -> int:
    """K (the reduction length) must be a positive multiple of ``multiple``."""
    if not isinstance(K, int) or isinstance(K, bool):
        raise TypeError(f"{name}: expected an int, got {type(K).__name__}")
    if K <= 0 or K % multiple != 0:
        raise ValueError(f"{name}: expected a positive multiple of {multiple}, got {K}")
    return K


def check_positive_int(name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return v


def check_group_size(group_size, K: int) -> int:
    check_positive_int("group_size", group_size)
    if group_size % 2 != 0 or K % group_size != 0:
        raise ValueError(
            f"group_size: expected an even divisor of K = {K} (two FP4 values share a byte), "
            f"got {group_size}"
        )
    return group_size


def as_scalar(name: str, value, *, positive: bool = False) -> float:
    """A finite float (positive if asked) from a real number (Python's or NumPy's; not a bool) or
    a one-element tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name}: expected a float or a one-element tensor, got {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        kind = "finite positive number" if positive else "finite number"
        raise ValueError(f"{name}: expected a {kind}, got {value}")
    return value


def as_alpha(alpha) -> float:
    """The per-tensor factor of a W4A4 product: any finite float."""
    return as_scalar("alpha", alpha)


def kernel_scalar(name: str, value, device: torch.device, *, positive: bool = False,
                  reciprocal: bool = False):
    """A per-tensor factor for the kernels (``fp4mm.kernels.alpha``), without a host sync.

    A Python number or a tensor on another device (the CPU) is read and checked as by
    :func:`as_scalar` and returned as a float. A one-element floating tensor on ``device`` is
    returned as a float32 tensor of shape (1,), its value unread: checking it would wait for the
    GPU, which is what a tensor factor avoids (a dynamic activation scale, CUDA graphs); a NaN or
    inf there gives NaN or inf outputs. ``reciprocal``: the factor is ``1 / value``."""
    if isinstance(value, torch.Tensor) and value.device == torch.device(device) \
            and value.device.type != "cpu":
        if value.numel() != 1:
            raise ValueError(f"{name}: expected a scalar, got a tensor of shape "
                             f"{tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
        t = value.reshape(1).to(torch.float32)
        return torch.reciprocal(t) if reciprocal else t
    v = as_scalar(name, value, positive=positive)
    return 1.0 / v if reciprocal else v


def check_out_dtype(out_dtype) -> torch.dtype:
    allowed = (torch.float16, torch.bfloat16, torch.float32)
    if out_dtype not in allowed:
        raise TypeError(f"out_dtype: expected one of {allowed}, got {out_dtype!r}")
    return out_dtype
