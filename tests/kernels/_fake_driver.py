"""A stand-in for Triton's CUDA driver on a machine without a GPU: Gluon kernels compile for sm_90
as usual, and a launch records what the compiled kernel's launcher was handed instead of running.
Used to compare Triton's dispatch with ``fp4mm.kernels.launch``'s direct path argument for
argument."""

from __future__ import annotations

import contextlib

from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver


class _Utils:
    def load_binary(self, name, kernel, shared, device):
        return None, name, 0, 0, 1024  # module, function, n_regs, n_spills, max threads

    def get_device_properties(self, device):
        return {"max_shared_mem": 232448, "multiprocessor_count": 132}


class FakeSM90Driver:
    def __init__(self):
        self.utils = _Utils()
        self.launches: list[tuple] = []
        self.launcher_cls = lambda src, metadata: (
            lambda *args: self.launches.append((src.fn.__name__, args)))

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 7  # any stream handle: both paths must pass this one

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


class _SM90Properties:
    """What ``fp4mm.backend`` reads of a device's properties."""
    major, minor, multi_processor_count = 9, 0, 132


@contextlib.contextmanager
def fake_sm90_driver():
    """Triton's driver and fp4mm.backend's device lookups answer for an H100 (device 0)."""
    from fp4mm import backend

    saved = driver._active, backend._cuda_index, backend._properties
    fake = FakeSM90Driver()
    driver.set_active(fake)
    backend._cuda_index = lambda device: 0
    backend._properties = lambda index: _SM90Properties
    try:
        yield fake
    finally:
        driver._active, backend._cuda_index, backend._properties = saved
