"""Explicit, optional weight re-layout for the prefill GEMMs.

``prepack_w4a16_weight(w_q, scales, group_size, order=...)`` does the same for FP4 weights with
16-bit group scales (``w4a16_mm``): on Hopper, for group sizes 32 and multiples of 64, the codes in
the Gluon GEMM's register order and the scales as fp32 (``fp4_gemm_sm90.prepack_grouped_sm90``).

``prepack_nvfp4_weight(w_q, w_scales, order=...)`` returns a :class:`PrepackedNVFP4Weight` that
``nvfp4_mm`` and ``nvfp4_w4a16_mm`` accept in place of ``(w_q, w_scales)``. It costs one pass over
the weights (measured separately, see ``docs/perf-log.md``); do it once per weight, not per call.
What it holds depends on where the prefill GEMM runs for the weight's device:

- CUDA on Hopper (sm_90): ``sm90``, the register-order layout of the Gluon kernel
  (``fp4mm.kernels.fp4_gemm_sm90.prepack_weight_sm90``; any K % 16 == 0);
- elsewhere (other GPUs, the CPU interpreter): ``packed``, the layout of the plain-Triton GEMM
  (``fp4mm.kernels.fp4_gemm``), described below.

Memory: the result keeps references to the raw tensors (the decode GEMVs read those) and adds one
re-laid copy of the same size (codes and E4M3 scales once each; on Hopper, rows padded to a
multiple of 128 and K to a multiple of 128). So while both are alive a prepacked weight takes
twice the raw weight's memory.

Layout of ``packed`` (uint8 ``(N, K/2)``, requires ``K % 64 == 0``): nibbles in low-first order,
and inside every 32-byte group (64 values of K) physical byte ``8c + i`` holds logical byte
``4i + c`` (c in 0..3, i in 0..7). In the register-A ``wgmma`` operand layout each thread owns the
logical bytes ``4i + c`` of one ``c``, so it reads its 8 bytes with one 8-byte shared-memory load
instead of eight 1-byte loads. The E4M3 scales keep their row-major ``(N, K/16)`` layout (the
kernel reads them as 4-byte words). The raw tensors stay referenced (no copy), so kernels that want
the original layout (the decode GEMV) can use them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from fp4mm import reference
from fp4mm._validate import check_order, check_tensor
from fp4mm.backend import is_hopper, on_device_of_first_argument
from fp4mm.formats.e2m1 import swap_nibbles
from fp4mm.reference import as_scale_bytes

PREPACK_K_MULTIPLE = 64


class PrepackedNVFP4Weight(NamedTuple):
    """An NVFP4 weight re-laid-out for the prefill GEMM.

    Attributes:
        w_q: the raw uint8 ``(N, K/2)`` packed weight, in ``order`` (a reference, not a copy).
        w_scales: uint8 ``(N, K/16)`` E4M3 bytes, row-major (float8 inputs are viewed as uint8).
        order: nibble order of ``w_q``.
        packed: uint8 ``(N, K/2)``, low-first, bytes permuted per 32-byte group (module
            docstring), or ``None`` when ``sm90`` is set.
        sm90: the Gluon kernel's ``PackedWeightSM90`` on a Hopper GPU, else ``None``; inside
            the ``fp4mm::`` custom ops a zero-argument callable that makes it (its TMA
            descriptors are made only if the GEMM runs).
    """

    w_q: torch.Tensor
    w_scales: torch.Tensor
    order: str
    packed: torch.Tensor | None
    sm90: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)`` of the dequantised weight."""
        return (self.w_q.shape[0], self.w_q.shape[1] * 2)


def permute_weight_bytes(w_q: torch.Tensor) -> torch.Tensor:
    """Logical -> physical byte order of ``packed`` (rows of ``K/2`` bytes, K % 64 == 0)."""
    N, KB = w_q.shape
    return w_q.reshape(N, KB // 32, 8, 4).transpose(-1, -2).reshape(N, KB).contiguous()


def unpermute_weight_bytes(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`permute_weight_bytes`."""
    N, KB = packed.shape
    return packed.reshape(N, KB // 32, 4, 8).transpose(-1, -2).reshape(N, KB).contiguous()


class PrepackedW4A16Weight(NamedTuple):
    """An FP4 weight with 16-bit group scales (``w4a16_mm``), re-laid-out for the Hopper GEMM.

    Attributes:
        w_q: the raw uint8 ``(N, K/2)`` packed weight, in ``order`` (a reference, not a copy).
        scales: the raw fp16/bf16 ``(N, K/group_size)`` group scales (a reference).
        group_size: the scales' group size.
        order: nibble order of ``w_q``.
        sm90: the Gluon GEMM's ``PackedWeightSM90`` (codes in register order, fp32 scales) on a
            Hopper GPU for group sizes 32 and multiples of 64, else ``None``: the other kernels
            (decode GEMVs, the plain-Triton GEMM) read the raw tensors, so a weight prepacked
            anywhere works everywhere.
    """

    w_q: torch.Tensor
    scales: torch.Tensor
    group_size: int
    order: str
    sm90: Any = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, K)`` of the dequantised weight."""
        return (self.w_q.shape[0], self.w_q.shape[1] * 2)


@on_device_of_first_argument
def prepack_w4a16_weight(w_q: torch.Tensor, scales: torch.Tensor, group_size: int, *,
                         order: str = "low_first") -> PrepackedW4A16Weight:
    """Re-lay-out an FP4 weight with 16-bit group scales for the Hopper prefill GEMM, once per
    weight instead of on every ``w4a16_mm`` call (about 30 us for 8192 x 3072 on an H100; see
    ``docs/perf-log.md``).

    Args:
        w_q: uint8 ``(N, K/2)`` packed E2M1, contiguous.
        scales: fp16/bf16 ``(N, K/group_size)`` group scales, contiguous.
        group_size: an even divisor of K; the Hopper GEMM takes 32 and multiples of 64, other
            group sizes (and other devices) keep the raw layout (``sm90`` is ``None``).
        order: nibble order of ``w_q``; ops called with the result must be given the same one.
    """
    check_order(order)
    check_tensor("w_q", w_q, dtype=torch.uint8, ndim=2)
    # the checks of w4a16_mm (group_size, scales), with an empty x of the weight's K
    x_probe = torch.empty((0, w_q.shape[1] * 2), dtype=torch.float16, device=w_q.device)
    reference.check_w4a16_operands(x_probe, w_q, scales, group_size, contiguous=True)
    sm90 = None
    if is_hopper(w_q.device):
        from fp4mm.kernels import fp4_gemm_sm90

        if fp4_gemm_sm90.group_k(group_size):
            sm90 = fp4_gemm_sm90.prepack_grouped_sm90(w_q, scales, group_size, order)
    return PrepackedW4A16Weight(w_q, scales, group_size, order, sm90)


LAYOUTS = ("auto", "sm90", "triton")


@on_device_of_first_argument
def prepack_nvfp4_weight(w_q: torch.Tensor, w_scales: torch.Tensor, *,
                         order: str = "low_first", layout: str = "auto") -> PrepackedNVFP4Weight:
    """Re-lay-out an NVFP4 weight for the prefill GEMM.

    Args:
        w_q: uint8 ``(N, K/2)`` packed E2M1, contiguous; K a multiple of 16 for the Hopper
            layout, of 64 for the plain-Triton one.
        w_scales: uint8 or float8_e4m3fn ``(N, K/16)`` E4M3 block scales, contiguous.
        order: nibble order of ``w_q``; the result remembers it, so ops called with the
            prepacked weight must be given the same ``order``.
        layout: ``"auto"`` (the layout of the GEMM that runs on ``w_q``'s device: ``"sm90"`` on
            Hopper, else ``"triton"``), ``"sm90"`` (the Gluon kernel's; Hopper only) or
            ``"triton"`` (the plain-Triton GEMM's, e.g. to benchmark or test it on Hopper).
    """
    check_tensor("w_q", w_q, dtype=torch.uint8, ndim=2)
    check_order(order)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    if layout == "sm90" and not is_hopper(w_q.device):
        raise ValueError(f"layout: 'sm90' needs w_q on a Hopper GPU, got {w_q.device}")
    N, K = w_q.shape[0], w_q.shape[1] * 2
    sm90 = layout == "sm90" or (layout == "auto" and is_hopper(w_q.device))
    multiple = 16 if sm90 else PREPACK_K_MULTIPLE
    if K == 0 or K % multiple != 0:
        raise ValueError(
            f"w_q: prepacking needs K (= 2 * w_q.shape[1]) to be a positive multiple of "
            f"{multiple}, got shape {tuple(w_q.shape)} (K = {K}); use the raw weight"
        )
    w_scales = check_tensor("w_scales", as_scale_bytes("w_scales", w_scales), shape=(N, K // 16))
    if w_scales.device != w_q.device:
        raise ValueError(f"expected w_q and w_scales on one device, got {w_q.device} and "
                         f"{w_scales.device}")
    if sm90:
        from fp4mm.kernels import fp4_gemm_sm90

        packed = fp4_gemm_sm90.prepack_weight_sm90(w_q, w_scales, order)
        return PrepackedNVFP4Weight(w_q, w_scales, order, None, packed)
    low_first = w_q if order == "low_first" else swap_nibbles(w_q)
    return PrepackedNVFP4Weight(w_q, w_scales, order, permute_weight_bytes(low_first))
