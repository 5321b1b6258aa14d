"""Raises in functional case #2 (M = 3); correct elsewhere."""

import fp4mm


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    if M == 3:
        raise ValueError("boom: M == 3")
    fp4mm.solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K)
