"""Starter for "NVFP4 Matrix Multiplication" (revision 2). Copy this file, fill in solve, then run
``fp4mm check my_solution.py --challenge nvfp4``.

y = fp16(alpha * dequant(x) @ dequant(w)^T), computed in fp32, where
dequant(v)[r, k] = e2m1(nibble(v, r, k)) * e4m3(scales[r, k // 16]).
Packed bytes hold two E2M1 codes: the HIGH nibble is the even index k, the low nibble k + 1.
"""

import torch


def solve(x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor, w_scales: torch.Tensor,
          alpha: float, y: torch.Tensor, M: int, N: int, K: int) -> None:
    """x_q: uint8 (M, K/2); x_scales: uint8 E4M3 bytes (M, K/16); w_q: uint8 (N, K/2);
    w_scales: uint8 (N, K/16); alpha: float; y: float16 (M, N), write the result in place."""
    # TODO: compute the product and write it into y, e.g. y.copy_(result).
    pass
