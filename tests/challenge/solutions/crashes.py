"""Kills its process in functional case #2 (M = 3: os._exit(7)) and segfaults in case #3
(M = 16: reads address 0 through ctypes); correct elsewhere."""

import ctypes
import os

import fp4mm


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    if M == 3:
        os._exit(7)
    if M == 16:
        ctypes.string_at(0)
    fp4mm.solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K)
