"""Starter for "FP4 MatMul" (revision 1, fp16 activations x FP4 weights). Copy this file, fill in
solve, then run ``fp4mm check my_solution.py --challenge w4a16``.

y = fp16(x @ (e2m1(w) * scales)^T), computed in fp32; scales[n, k // group_size] scales w[n, k].
Packed bytes hold two E2M1 codes: the HIGH nibble is the even index k, the low nibble k + 1.
"""

import torch


def solve(x: torch.Tensor, w_q: torch.Tensor, scales: torch.Tensor, y: torch.Tensor, M: int,
          N: int, K: int, group_size: int) -> None:
    """x: float16 (M, K); w_q: uint8 (N, K/2); scales: float16 (N, K/group_size);
    y: float16 (M, N), write the result in place."""
    # TODO: compute the product and write it into y, e.g. y.copy_(result).
    pass
