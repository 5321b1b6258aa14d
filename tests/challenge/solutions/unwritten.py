"""Wrong: rebinds y instead of writing into it, so the judge's tensor keeps its NaN poison."""

import torch


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M, N, K):
    y = torch.zeros(M, N, dtype=torch.float16)  # noqa: F841 - the bug under test
