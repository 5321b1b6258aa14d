"""Scale layouts. Row-major ``(rows, K/16)`` is canonical; Blackwell libraries (cuBLASLt, CUTLASS
sm100, ``torch._scaled_mm``) want the swizzled 128x4 layout:

rows padded to a multiple of 128 and scale columns to a multiple of 4, then for row r, column c::

    offset = ((r // 128) * ceil(cols / 4) + c // 4) * 512
             + (r % 32) * 16 + ((r // 32) % 4) * 4 + c % 4
"""

from __future__ import annotations

import torch

from fp4mm._validate import check_positive_int, check_tensor


def _padded(rows: int, cols: int) -> tuple[int, int]:
    return -(-rows // 128) * 128, -(-cols // 4) * 4


def swizzle_scales_128x4(scales: torch.Tensor) -> torch.Tensor:
    """Row-major ``(rows, cols)`` scales to the swizzled layout, as a ``(R, C)`` tensor
    (R, C the padded sizes) whose flat storage follows the offset formula; padding is zero."""
    check_tensor("scales", scales, ndim=2, contiguous=False)
    rows, cols = scales.shape
    R, C = _padded(rows, cols)
    padded = scales.new_zeros((R, C))
    padded[:rows, :cols] = scales
    # (r//128, (r//32)%4, r%32, c//4, c%4) -> (r//128, c//4, r%32, (r//32)%4, c%4)
    tiles = padded.reshape(R // 128, 4, 32, C // 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(R, C).contiguous()


def unswizzle_scales_128x4(swizzled: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`swizzle_scales_128x4`: back to row-major ``(rows, cols)``."""
    check_positive_int("rows", rows)
    check_positive_int("cols", cols)
    R, C = _padded(rows, cols)
    check_tensor("swizzled", swizzled, contiguous=True)
    if swizzled.numel() != R * C:
        raise ValueError(
            f"swizzled: expected {R * C} elements for rows={rows}, cols={cols} "
            f"(padded to {R} x {C}), got shape {tuple(swizzled.shape)}"
        )
    tiles = swizzled.reshape(R // 128, C // 4, 32, 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(R, C)[:rows, :cols].contiguous()
