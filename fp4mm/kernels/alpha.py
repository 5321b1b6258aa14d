"""The per-tensor factor ``alpha`` of every kernel's epilogue, as kernel arguments.

``alpha`` is a Python float (a kernel argument, as it always was) or a one-element float32
tensor on the kernel's device, which the epilogue reads itself: a dynamic activation scale then
costs no host sync, and a call can be captured in a CUDA graph. Kernels take ``alpha``,
``alpha_ptr`` and the constexpr ``ALPHA_PTR``; ``alpha_args`` makes the three from either kind,
``apply_alpha`` (Triton) is the epilogue's factor. With a float nothing is loaded: the pointer is
a dummy and the compiled kernel is the one without this feature.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def alpha_args(alpha, dummy: torch.Tensor) -> tuple[float, torch.Tensor, bool]:
    """``(alpha, alpha_ptr, ALPHA_PTR)`` for a float or a one-element float32 device tensor
    (validated by ``fp4mm.ops``); ``dummy``: any tensor of the launch, passed as the unused
    pointer when ``alpha`` is a float."""
    if isinstance(alpha, torch.Tensor):
        return 1.0, alpha, True
    return float(alpha), dummy, False


@triton.jit
def apply_alpha(acc, alpha, alpha_ptr, ALPHA_PTR: tl.constexpr):
    """``acc * alpha`` (times ``*alpha_ptr`` when ALPHA_PTR), in fp32."""
    if ALPHA_PTR:
        return acc * (alpha * tl.load(alpha_ptr))
    return acc * alpha
