"""``quantize_model``: replace a model's ``nn.Linear`` layers with :class:`NVFP4Linear`;
``prepack_model``: prepack their weights."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Mapping

from torch import nn

from fp4mm.formats.nvfp4 import NVFP4_BLOCK
from fp4mm.nn.linear import NVFP4Linear, _check_mode


class UnsupportedLayerWarning(UserWarning):
    """A Linear layer was left in full precision because NVFP4 cannot represent it."""


def _patterns(skip) -> tuple[str, ...]:
    if skip is None:
        return ()
    if isinstance(skip, str):
        return (skip,)
    if not isinstance(skip, Iterable):
        raise TypeError(f"skip: expected a pattern or an iterable of patterns, got {skip!r}")
    return tuple(skip)


def _skipped(name: str, patterns: tuple[str, ...]) -> bool:
    """fnmatch patterns against the qualified name; a bare word also matches a name component
    (``"lm_head"`` skips ``"model.lm_head"``)."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(name, p) or p in parts for p in patterns)


def _activation_scale_for(name: str, activation_scale):
    if isinstance(activation_scale, Mapping):
        if name not in activation_scale:
            raise KeyError(f"activation_scale: no static scale for layer {name!r} (the mapping "
                           f"must name every quantised layer, or use 'dynamic')")
        return activation_scale[name]
    return activation_scale


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set ``model.<name>`` (a dotted path) to ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def quantize_model(model: nn.Module, mode: str = "w4a4", skip=None, *,
                   activation_scale="dynamic", strict: bool = False) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (in place) with an :class:`NVFP4Linear`.

    Args:
        model: any module; its Linear weights must be finite.
        mode: ``"w4a4"`` (NVFP4 activations too) or ``"w4a16"`` (16-bit activations).
        skip: fnmatch pattern(s) on qualified layer names to leave unquantised, e.g.
            ``["lm_head", "*.attention.*"]``; a bare name also matches any path component.
        activation_scale: ``"dynamic"``, one static encode scale ``gs_x`` for every layer, or a
            mapping from layer name to its ``gs_x`` (w4a4 only).
        strict: layers whose ``in_features`` is not a multiple of 16 cannot be NVFP4 (one E4M3
            scale per 16 inputs); by default they stay in full precision with an
            :class:`UnsupportedLayerWarning` naming them; ``strict=True`` raises ``ValueError``.

    Returns:
        ``model`` itself (modified in place), for chaining.
    """
    _check_mode(mode)
    patterns = _patterns(skip)
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and n and not _skipped(n, patterns)]
    if isinstance(model, nn.Linear):
        raise TypeError("model: expected a module that contains Linear layers; for a single "
                        "layer use NVFP4Linear.from_linear")
    for name, linear in targets:
        if linear.in_features % NVFP4_BLOCK:
            msg = (f"{name}: in_features = {linear.in_features} is not a multiple of "
                   f"{NVFP4_BLOCK}, so this Linear cannot be NVFP4")
            if strict:
                raise ValueError(msg)
            warnings.warn(msg + "; left in full precision", UnsupportedLayerWarning, stacklevel=2)
            continue
        layer = NVFP4Linear.from_linear(linear, mode=mode,
                                        activation_scale=_activation_scale_for(name,
                                                                               activation_scale))
        replace_module(model, name, layer)
    return model


def prepack_model(model: nn.Module) -> nn.Module:
    """:meth:`NVFP4Linear.prepack` on every NVFP4 layer of ``model`` (in place; returns it):
    prefill calls stop re-laying the weights out, for twice the NVFP4 weight memory.

    Raises ``ValueError`` naming the first layer that cannot be prepacked (off Hopper, K must
    be a multiple of 64)."""
    for name, m in model.named_modules():
        if isinstance(m, NVFP4Linear):
            try:
                m.prepack()
            except ValueError as e:
                raise ValueError(f"{name or 'model'}: {e}") from None
    return model
