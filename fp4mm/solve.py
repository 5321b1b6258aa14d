"""The challenge's seed signatures, backed by fp4mm: ``solve`` (revision 2, NVFP4 W4A4) and
``solve_w4a16`` (revision 1). Both take high-first packed bytes and write ``y`` (fp16) in place,
through the fastest correct implementation for the tensors' device (``fp4mm.backend``)."""

from __future__ import annotations

import torch

from fp4mm._validate import check_k, check_positive_int, check_tensor
from fp4mm.ops import nvfp4_mm, w4a16_mm


def solve(x_q, x_scales, w_q, w_scales, alpha, y, M: int, N: int, K: int) -> None:
    """``y = fp16(alpha * dequant(x) @ dequant(w)^T)``; shapes as in the challenge:
    x_q ``(M, K/2)``, x_scales ``(M, K/16)``, w_q ``(N, K/2)``, w_scales ``(N, K/16)`` (uint8),
    y fp16 ``(M, N)``."""
    check_positive_int("M", M)
    check_positive_int("N", N)
    check_k("K", K, 16)
    check_tensor("x_q", x_q, dtype=torch.uint8, shape=(M, K // 2))
    check_tensor("w_q", w_q, dtype=torch.uint8, shape=(N, K // 2))
    check_tensor("y", y, dtype=torch.float16, shape=(M, N))
    nvfp4_mm(x_q, x_scales, w_q, w_scales, alpha, out_dtype=torch.float16, order="high_first",
             out=y)


def solve_w4a16(x, w_q, scales, y, M: int, N: int, K: int, group_size: int) -> None:
    """``y = fp16(x @ (e2m1(w_q) * scales)^T)``; x fp16 ``(M, K)``, w_q uint8 ``(N, K/2)``,
    scales fp16 ``(N, K/group_size)``, y fp16 ``(M, N)``."""
    check_positive_int("M", M)
    check_positive_int("N", N)
    check_k("K", K, 2)
    check_tensor("x", x, dtype=torch.float16, shape=(M, K))
    check_tensor("w_q", w_q, dtype=torch.uint8, shape=(N, K // 2))
    check_tensor("y", y, dtype=torch.float16, shape=(M, N))
    w4a16_mm(x, w_q, scales, group_size, order="high_first", out=y)
