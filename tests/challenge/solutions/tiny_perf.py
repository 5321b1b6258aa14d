"""The nvfp4 challenge with a small performance case, so a --perf smoke test is quick on a CPU."""

import torch

from fp4mm.challenge.nvfp4 import NVFP4MatmulChallenge


class TinyPerfNVFP4(NVFP4MatmulChallenge):
    def generate_performance_test(self):
        torch.manual_seed(0)
        return self._case(64, 128, 256, 1.0 / 64)
