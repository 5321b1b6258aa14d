"""Wrong: writes the right y, then overwrites its input w_scales with 2.0 (0x40)."""

import fp4mm


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    fp4mm.solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K)
    w_scales.fill_(0x40)  # 2.0; every generated scale byte differs somewhere
