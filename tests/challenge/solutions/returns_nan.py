"""Wrong: correct except for one NaN and one inf."""

import math

import fp4mm


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    fp4mm.solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K)
    y[0, 0] = math.nan
    y[-1, -1] = math.inf
