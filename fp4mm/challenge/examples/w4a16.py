"""A simple, correct PyTorch solution of "FP4 MatMul" (revision 1), in plain PyTorch (no fp4mm
needed): decode the weights to float32, scale them per group, multiply in float32, round to fp16.

    fp4mm check w4a16.py --challenge w4a16
"""

import torch

# E2M1 values by 4-bit code: sign in bit 3, exponent in bits 2..1 (bias 1), mantissa in bit 0.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def solve(x: torch.Tensor, w_q: torch.Tensor, scales: torch.Tensor, y: torch.Tensor, M: int,
          N: int, K: int, group_size: int) -> None:
    """x: float16 (M, K); w_q: uint8 (N, K/2); scales: float16 (N, K/group_size);
    y: float16 (M, N), written in place."""
    codes = torch.stack((w_q >> 4, w_q & 0xF), dim=-1).reshape(N, K)  # even index = high nibble
    w = torch.tensor(E2M1_VALUES, device=w_q.device)[codes.long()]
    w = w * scales.float().repeat_interleave(group_size, dim=1)
    y.copy_(x.float() @ w.T)
