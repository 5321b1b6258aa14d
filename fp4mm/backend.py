"""Which implementation runs: ``FP4MM_BACKEND`` = ``auto`` (default), ``reference`` or ``triton``.

- ``auto``: the Triton kernels for CUDA tensors on a GPU they support (NVIDIA sm_90 and newer),
  the FP32 oracle otherwise (other GPUs, AMD GPUs under a ROCm build of torch, the CPU).
- ``reference``: always the oracle (any device).
- ``triton``: always the Triton kernels; CPU tensors then need ``TRITON_INTERPRET=1`` set before
  fp4mm is imported (Triton's interpreter; fp16 paths only).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os

import torch

BACKENDS = ("auto", "reference", "triton")
ENV_VAR = "FP4MM_BACKEND"


def requested_backend() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}: expected one of {BACKENDS}, got {value!r}")
    return value


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _properties(index: int):
    return torch.cuda.get_device_properties(index)


def _cuda_index(device) -> int:
    device = torch.device(device)
    return device.index if device.index is not None else torch.cuda.current_device()


def cuda_capability(device) -> tuple[int, int]:
    """``(major, minor)`` of a CUDA device, its properties looked up once per device: an eager
    decode call asks several times (backend, dispatch, each kernel's support check, PDL), and
    ``torch.cuda.get_device_capability`` costs a few microseconds of host time each."""
    props = _properties(_cuda_index(device))
    return props.major, props.minor


def sm_count(device) -> int:
    """The multiprocessor count of a CUDA device (its properties looked up once per device)."""
    return _properties(_cuda_index(device)).multi_processor_count


def _nvidia(device: torch.device) -> bool:
    """A CUDA device of an NVIDIA build of torch. A ROCm build also calls its GPUs "cuda", and
    its capability is the gfx number (an MI300's gfx942 is (9, 4), an MI200's gfx90a (9, 0)):
    our kernels (PTX, and Gluon's Hopper instructions) are NVIDIA's only."""
    return device.type == "cuda" and torch.version.hip is None


def _triton_supports(device: torch.device) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    if _nvidia(device):
        return cuda_capability(device) >= (9, 0)
    return False


def is_hopper(device) -> bool:
    """An NVIDIA device of compute capability 9.x (wgmma, TMA, setmaxnreg: the Gluon kernels)."""
    device = torch.device(device)
    return _nvidia(device) and torch.cuda.is_available() and cuda_capability(device)[0] == 9


def resolve_backend(device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The backend that runs for tensors on ``device``: ``"reference"`` or ``"triton"``.
    ``dtype``: the activations' dtype; bf16 on CPU tensors cannot take the Triton kernels
    (Triton's interpreter computes bf16 wrongly), so asking for them is an error, not garbage."""
    requested = requested_backend()
    if requested == "reference":
        return "reference"
    if requested == "auto":
        return "triton" if _triton_supports(device) else "reference"
    if importlib.util.find_spec("triton") is None:
        raise RuntimeError(f"{ENV_VAR}=triton, but triton is not installed (pip install triton)")
    if device.type == "cpu" and not triton_interpreting():
        raise RuntimeError(
            f"{ENV_VAR}=triton with CPU tensors needs TRITON_INTERPRET=1 in the environment "
            "before fp4mm is imported"
        )
    if device.type == "cpu" and dtype == torch.bfloat16:
        raise RuntimeError(
            f"{ENV_VAR}=triton with bfloat16 CPU tensors: Triton's interpreter computes bf16 "
            "wrongly; use float16 activations or the reference backend"
        )
    if device.type == "cuda" and not _nvidia(device):
        raise RuntimeError(f"{ENV_VAR}=triton: the kernels are for NVIDIA GPUs, got {device} "
                           f"under a ROCm build of torch (HIP {torch.version.hip}); use the "
                           "reference backend")
    if device.type == "cuda" and cuda_capability(device) < (9, 0):
        raise RuntimeError(f"{ENV_VAR}=triton: the kernels need sm_90 or newer, got {device}")
    return "triton"


def device_guard(device: torch.device):
    """A context in which kernels launch on ``device``. Triton launches on the *current* CUDA
    device, not on its tensors' one, so a call with tensors on another GPU (a model spread over
    GPUs in one process, as ``device_map="auto"`` does) must switch to theirs first, as torch's
    own ops do. A no-op for CPU tensors and when ``device`` is already current."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def on_device_of_first_argument(fn):
    """Run ``fn`` under :func:`device_guard` of its first argument (a tensor, or anything else:
    then nothing changes)."""
    @functools.wraps(fn)
    def wrapper(first, *args, **kwargs):
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
        with device_guard(device):
            return fn(first, *args, **kwargs)
    return wrapper
