"""Correct, and chatty: its prints must not disturb the judge's protocol."""

import fp4mm


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    print(f"hello from solve M={M}")
    fp4mm.solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K)
