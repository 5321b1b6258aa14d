"""Revision 1: "FP4 MatMul", fp16 activations times FP4 weights with fp16 group scales."""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from fp4mm import reference
from fp4mm._validate import check_tensor
from fp4mm.challenge.base import ChallengeBase

# (M, N, K, group_size, zero_x), in the spec's order; drawn after torch.manual_seed(42).
FUNCTIONAL_CASES = (
    (1, 2, 4, 2, True),
    (2, 4, 4, 2, False),
    (3, 5, 8, 4, False),
    (16, 16, 32, 16, False),
    (32, 64, 64, 32, False),
    (128, 128, 256, 32, False),
    (30, 50, 64, 32, False),
    (100, 200, 128, 32, False),
    (255, 100, 128, 32, False),
    (512, 1024, 1024, 32, False),
)
PERFORMANCE_CASE = (2048, 8192, 3072, 32)
FUNCTIONAL_SEED = 42
PERFORMANCE_SEED = 0


class FP4MatmulChallenge(ChallengeBase):
    def __init__(self, device: str = "cuda"):
        super().__init__(name="FP4 MatMul", atol=0.05, rtol=0.05, num_gpus=1, access_tier="free",
                         device=device)

    def reference_impl(self, x: torch.Tensor, w_q: torch.Tensor, scales: torch.Tensor,
                       y: torch.Tensor, M: int, N: int, K: int, group_size: int) -> None:
        check_tensor("x", x, dtype=torch.float16, shape=(M, K))
        check_tensor("w_q", w_q, dtype=torch.uint8, shape=(N, K // 2))
        check_tensor("y", y, dtype=torch.float16, shape=(M, N))
        y.copy_(reference.w4a16_mm(x, w_q, scales, group_size, order="high_first"))

    def get_solve_signature(self) -> dict[str, tuple]:
        return {
            "x": (ctypes.POINTER(ctypes.c_uint16), "in"),
            "w_q": (ctypes.POINTER(ctypes.c_uint8), "in"),
            "scales": (ctypes.POINTER(ctypes.c_uint16), "in"),
            "y": (ctypes.POINTER(ctypes.c_uint16), "out"),
            "M": (ctypes.c_int, "in"),
            "N": (ctypes.c_int, "in"),
            "K": (ctypes.c_int, "in"),
            "group_size": (ctypes.c_int, "in"),
        }

    def flops(self, case: dict[str, Any]) -> float:
        return 2.0 * case["M"] * case["N"] * case["K"]

    def _case(self, M: int, N: int, K: int, group_size: int, zero_x: bool = False):
        x = torch.zeros(M, K) if zero_x else 0.5 * torch.randn(M, K)
        w_q = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8)
        scales = 0.1 * torch.rand(N, K // group_size) + 0.01
        d = self.device
        return {
            "x": x.to(torch.float16).to(d), "w_q": w_q.to(d),
            "scales": scales.to(torch.float16).to(d),
            "y": torch.empty((M, N), dtype=torch.float16, device=d),
            "M": M, "N": N, "K": K, "group_size": group_size,
        }

    def generate_example_test(self) -> dict[str, Any]:
        d = self.device
        x = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float16, device=d)
        w_q = torch.tensor([[0x22, 0x22], [0x44, 0x44], [0xAA, 0xAA], [0x00, 0x00]],
                           dtype=torch.uint8, device=d)
        scales = torch.full((4, 2), 0.5, dtype=torch.float16, device=d)
        return {
            "x": x, "w_q": w_q, "scales": scales,
            "y": torch.empty((2, 4), dtype=torch.float16, device=d),
            "M": 2, "N": 4, "K": 4, "group_size": 2,
        }

    def generate_functional_test(self) -> list[dict[str, Any]]:
        torch.manual_seed(FUNCTIONAL_SEED)
        return [self._case(*case) for case in FUNCTIONAL_CASES]

    def generate_performance_test(self) -> dict[str, Any]:
        torch.manual_seed(PERFORMANCE_SEED)
        return self._case(*PERFORMANCE_CASE)
