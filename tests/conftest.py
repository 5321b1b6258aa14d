"""Without a GPU, run the Triton kernels in Triton's CPU interpreter.

TRITON_INTERPRET must be set before any module decorated with ``triton.jit`` is imported.
"""

import os
import sys

import torch

assert "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET"), (
    "triton was imported before tests/conftest.py could set TRITON_INTERPRET"
)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
