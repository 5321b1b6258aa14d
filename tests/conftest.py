"""Without a GPU, run the Triton kernels in Triton's CPU interpreter.

TRITON_INTERPRET must be set before any module decorated with ``triton.jit`` is imported.
"""

import os
import sys

import pytest
import torch

assert "triton" not in sys.modules or os.environ.get("TRITON_INTERPRET"), (
    "triton was imported before tests/conftest.py could set TRITON_INTERPRET"
)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Kernels launch through fp4mm.kernels.launch's cache, and every launch that reuses a cached
# kernel asks Triton which kernel it would have chosen: the whole suite checks the cache's key.
os.environ.setdefault("FP4MM_DIRECT_LAUNCH", "1")
os.environ.setdefault("FP4MM_CHECK_LAUNCH", "1")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_gpu_memory(gib): run only where a CUDA GPU has this many GiB free")


def pytest_collection_modifyitems(config, items):
    """Skip ``needs_gpu_memory`` tests (tensors past 2^31 elements) without a GPU that holds
    them."""
    free = None
    for item in items:
        marker = item.get_closest_marker("needs_gpu_memory")
        if marker is None:
            continue
        if free is None:
            free = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
        if free < marker.args[0] * 2**30:
            item.add_marker(pytest.mark.skip(
                reason=f"needs a CUDA GPU with {marker.args[0]} GiB free"))
