"""E2M1 (FP4) elements: the value table, round-to-nearest-even encoding, and byte packing.

Code layout: sign in bit 3, exponent in bits 2..1 (bias 1), mantissa in bit 0. Two codes share a
byte; ``order`` says which nibble holds the even element:

- ``"low_first"``: element 2i in bits 3..0 (torch.float4_e2m1fn_x2, PTX, CUTLASS, ModelOpt);
  the canonical order.
- ``"high_first"``: element 2i in bits 7..4 (the challenge's order).
"""

from __future__ import annotations

import torch

from fp4mm._validate import check_order, check_tensor

E2M1_MAX = 6.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)

# Magnitude thresholds between neighbouring codes, with the comparison that makes a tie go to the
# even code: at 0.25, 1.25, 2.5 and 5.0 the lower neighbour is even (strict >), at 0.75, 1.75
# and 3.5 the upper one is (>=).
_RNE_STEPS = ((0.25, False), (0.75, True), (1.25, False), (1.75, True), (2.5, False), (3.5, True),
              (5.0, False))


def e2m1_table(device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 16 E2M1 values indexed by code, as a tensor."""
    return torch.tensor(E2M1_VALUES, dtype=dtype, device=device)


def decode_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes in 0..15 (any shape) to float32 values."""
    check_tensor("codes", codes, dtype=torch.uint8, contiguous=False)
    return e2m1_table(codes.device)[codes.long() & 0xF]


def encode_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Float values to uint8 E2M1 codes: round to nearest, ties to even, saturating at +-6.

    The sign is kept (so -0.1 encodes as 0x8, -0.0). NaN is not representable; callers reject it.
    """
    check_tensor("x", x, contiguous=False)
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    mag = x.abs().float()
    code = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for threshold, tie_up in _RNE_STEPS:
        code += (mag >= threshold if tie_up else mag > threshold).to(torch.uint8)
    return code | (torch.signbit(x).to(torch.uint8) << 3)


def pack_fp4(codes: torch.Tensor, order: str = "low_first") -> torch.Tensor:
    """uint8 codes ``(..., K)`` (values 0..15, K even) to packed bytes ``(..., K/2)``."""
    check_tensor("codes", codes, dtype=torch.uint8, contiguous=False)
    check_order(order)
    if codes.dim() == 0 or codes.shape[-1] % 2 != 0:
        raise ValueError(f"codes: expected an even last dimension, got shape {tuple(codes.shape)}")
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError(f"codes: expected values in 0..15, got a maximum of {int(codes.max())}")
    even, odd = codes[..., 0::2], codes[..., 1::2]
    if order == "high_first":
        even, odd = odd, even
    return (even | (odd << 4)).contiguous()


def unpack_fp4(packed: torch.Tensor, order: str = "low_first") -> torch.Tensor:
    """Packed bytes ``(..., K/2)`` to uint8 codes ``(..., K)``."""
    check_tensor("packed", packed, dtype=torch.uint8, contiguous=False)
    check_order(order)
    if packed.dim() == 0:
        raise ValueError("packed: expected at least one dimension, got a 0-d tensor")
    low, high = packed & 0xF, packed >> 4
    first, second = (low, high) if order == "low_first" else (high, low)
    return torch.stack((first, second), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def swap_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Convert packed bytes between the two orders (the conversion is its own inverse)."""
    check_tensor("packed", packed, dtype=torch.uint8, contiguous=False)
    return ((packed >> 4) | (packed << 4)).contiguous()
