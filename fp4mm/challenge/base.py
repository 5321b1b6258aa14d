"""The upstream challenge format: a class with six members.

A challenge sets ``name``, ``atol``, ``rtol``, ``num_gpus`` and ``access_tier`` in its constructor
and provides ``reference_impl`` (same arguments as the contestant's ``solve``, writes the output in
place), ``get_solve_signature`` (ordered ``name -> (ctypes type, "in" | "out")``, the C argument
order), ``generate_example_test``, ``generate_functional_test`` and ``generate_performance_test``.

fp4mm's classes take a ``device`` ("cpu" or "cuda") instead of hard-coding CUDA. Inputs are drawn
on the CPU and then moved, so a seed gives the same data on every device.
"""

from __future__ import annotations

from typing import Any

import torch


class ChallengeBase:
    def __init__(self, name: str, atol: float, rtol: float, num_gpus: int, access_tier: str,
                 device: str = "cuda"):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
        self.name = name
        self.atol = atol
        self.rtol = rtol
        self.num_gpus = num_gpus
        self.access_tier = access_tier
        self.device = torch.device(device)

    def output_names(self) -> list[str]:
        """Names of the ``"out"`` arguments of the signature."""
        return [name for name, (_, io) in self.get_solve_signature().items() if io == "out"]

    def flops(self, case: dict[str, Any]) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def reference_impl(self, *args, **kwargs) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def get_solve_signature(self) -> dict[str, tuple]:  # pragma: no cover - overridden
        raise NotImplementedError

    def generate_example_test(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def generate_functional_test(self) -> list[dict[str, Any]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def generate_performance_test(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError
