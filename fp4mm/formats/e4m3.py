"""E4M3 (float8_e4m3fn) scale bytes: decode all 256 bytes, encode with RNE and saturation.

Bias 7, no infinities, 0x7F and 0xFF are NaN, largest finite 448, smallest subnormal 2^-9,
0x38 = 1.0.
"""

from __future__ import annotations

import torch

from fp4mm._validate import check_tensor

E4M3_MAX = 448.0
E4M3_ONE = 0x38
E4M3_NAN = 0x7F


def _e4m3_value(byte: int) -> float:
    sign = -1.0 if byte & 0x80 else 1.0
    exponent, mantissa = (byte >> 3) & 0xF, byte & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa * 2.0**-9
    return sign * (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)


# Built from the bit layout, not from torch's float8 type, so tests can check one against the other.
_E4M3_VALUES = tuple(_e4m3_value(b) for b in range(256))


def e4m3_table(device=None) -> torch.Tensor:
    """float32 value of every byte 0..255 (NaN at 0x7F and 0xFF)."""
    return torch.tensor(_E4M3_VALUES, dtype=torch.float32, device=device)


def e4m3_to_float(scale_bytes: torch.Tensor) -> torch.Tensor:
    """uint8 E4M3 bytes (any shape) to float32. Also accepts a float8_e4m3fn tensor."""
    if isinstance(scale_bytes, torch.Tensor) and scale_bytes.dtype == torch.float8_e4m3fn:
        scale_bytes = scale_bytes.view(torch.uint8)
    check_tensor("scale_bytes", scale_bytes, dtype=torch.uint8, contiguous=False)
    return e4m3_table(scale_bytes.device)[scale_bytes.long()]


def float_to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """float values to uint8 E4M3 bytes: round to nearest even, saturate at +-448, NaN to 0x7F."""
    check_tensor("x", x, contiguous=False)
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor, got {x.dtype}")
    x = x.float()
    out = x.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8)
    return torch.where(torch.isnan(x), torch.full_like(out, E4M3_NAN), out)
