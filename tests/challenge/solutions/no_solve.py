"""Defines no solve."""


def solution(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    pass
