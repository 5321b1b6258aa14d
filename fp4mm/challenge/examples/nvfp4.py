"""A simple, correct PyTorch solution of "NVFP4 Matrix Multiplication" (revision 2), in plain
PyTorch (no fp4mm needed): decode both operands to float32, multiply, scale, round to fp16.

    fp4mm check nvfp4.py --challenge nvfp4
"""

import torch

# E2M1 values by 4-bit code: sign in bit 3, exponent in bits 2..1 (bias 1), mantissa in bit 0.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
BLOCK = 16  # elements per E4M3 scale


def dequantize(q: torch.Tensor, scale_bytes: torch.Tensor) -> torch.Tensor:
    """uint8 (R, K/2) packed codes, high nibble first, and uint8 E4M3 scale bytes (R, K/16) to
    float32 (R, K)."""
    rows = q.shape[0]
    codes = torch.stack((q >> 4, q & 0xF), dim=-1).reshape(rows, -1)  # even index = high nibble
    values = torch.tensor(E2M1_VALUES, device=q.device)[codes.long()]
    scales = scale_bytes.view(torch.float8_e4m3fn).float().repeat_interleave(BLOCK, dim=1)
    return values * scales


def solve(x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor, w_scales: torch.Tensor,
          alpha: float, y: torch.Tensor, M: int, N: int, K: int) -> None:
    """x_q: uint8 (M, K/2); x_scales: uint8 (M, K/16); w_q: uint8 (N, K/2); w_scales: uint8
    (N, K/16); alpha: float; y: float16 (M, N), written in place."""
    x = dequantize(x_q, x_scales)
    w = dequantize(w_q, w_scales)
    y.copy_((x @ w.T) * alpha)
