"""Revision 2 (current): "NVFP4 Matrix Multiplication", both operands NVFP4, high-first nibbles."""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from fp4mm import reference
from fp4mm._validate import as_alpha, check_tensor
from fp4mm.challenge.base import ChallengeBase
from fp4mm.formats.e4m3 import E4M3_ONE, float_to_e4m3

# (M, N, K, alpha, zero_x), in the spec's order; drawn after torch.manual_seed(42).
FUNCTIONAL_CASES = (
    (1, 2, 16, 1.0, True),
    (2, 4, 16, 1.0, False),
    (3, 5, 32, 1.0, False),
    (16, 16, 32, 1.0, False),
    (32, 64, 64, 1.0, False),
    (128, 128, 256, 1.0, False),
    (30, 50, 64, 1.0, False),
    (100, 200, 128, 1.0, False),
    (255, 100, 128, 0.125, False),
    (512, 1024, 1024, 1.0 / 64, False),
)
PERFORMANCE_CASE = (2048, 18432, 3072, 1.0 / 64)
FUNCTIONAL_SEED = 42
PERFORMANCE_SEED = 0


def random_scale_bytes(rows: int, cols: int) -> torch.Tensor:
    """E4M3 bytes of scales drawn uniform in [0.5, 2.0), on the CPU."""
    return float_to_e4m3(torch.rand(rows, cols) * 1.5 + 0.5)


class NVFP4MatmulChallenge(ChallengeBase):
    def __init__(self, device: str = "cuda"):
        super().__init__(name="NVFP4 Matrix Multiplication", atol=0.1, rtol=0.05, num_gpus=1,
                         access_tier="free", device=device)

    def reference_impl(self, x_q: torch.Tensor, x_scales: torch.Tensor, w_q: torch.Tensor,
                       w_scales: torch.Tensor, alpha: float, y: torch.Tensor, M: int, N: int,
                       K: int) -> None:
        check_tensor("x_q", x_q, dtype=torch.uint8, shape=(M, K // 2))
        check_tensor("w_q", w_q, dtype=torch.uint8, shape=(N, K // 2))
        check_tensor("y", y, dtype=torch.float16, shape=(M, N))
        y.copy_(reference.nvfp4_mm(x_q, x_scales, w_q, w_scales, as_alpha(alpha),
                                   order="high_first"))

    def get_solve_signature(self) -> dict[str, tuple]:
        return {
            "x_q": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "x_scales": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "w_q": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "w_scales": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "alpha": (ctypes.c_float, "in"),
            "y": (ctypes.POINTER(ctypes.c_uint16), "out"),
            "M": (ctypes.c_int, "in"),
            "N": (ctypes.c_int, "in"),
            "K": (ctypes.c_int, "in"),
        }

    def flops(self, case: dict[str, Any]) -> float:
        return 2.0 * case["M"] * case["N"] * case["K"]

    def _case(self, M: int, N: int, K: int, alpha: float, zero_x: bool = False) -> dict[str, Any]:
        x_q = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8)
        if zero_x:
            x_q.zero_()
        x_scales = random_scale_bytes(M, K // 16)
        w_q = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8)
        w_scales = random_scale_bytes(N, K // 16)
        d = self.device
        return {
            "x_q": x_q.to(d), "x_scales": x_scales.to(d), "w_q": w_q.to(d),
            "w_scales": w_scales.to(d), "alpha": float(alpha),
            "y": torch.empty((M, N), dtype=torch.float16, device=d), "M": M, "N": N, "K": K,
        }

    def generate_example_test(self) -> dict[str, Any]:
        d = self.device
        x_q = torch.tensor([[0x22] * 8, [0x11] * 8], dtype=torch.uint8, device=d)  # 1.0, 0.5
        w_q = torch.tensor([[0x44] * 8, [0xAA] * 8], dtype=torch.uint8, device=d)  # 2.0, -1.0
        ones = torch.full((2, 1), E4M3_ONE, dtype=torch.uint8, device=d)
        return {
            "x_q": x_q, "x_scales": ones.clone(), "w_q": w_q, "w_scales": ones.clone(),
            "alpha": 1.0, "y": torch.empty((2, 2), dtype=torch.float16, device=d),
            "M": 2, "N": 2, "K": 16,
        }

    def generate_functional_test(self) -> list[dict[str, Any]]:
        torch.manual_seed(FUNCTIONAL_SEED)
        return [self._case(M, N, K, a, z) for M, N, K, a, z in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> dict[str, Any]:
        torch.manual_seed(PERFORMANCE_SEED)
        return self._case(*PERFORMANCE_CASE)
