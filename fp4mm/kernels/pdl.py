"""Programmatic dependent launch (PDL, sm_90+) for the plain-Triton kernels.

A kernel launched with ``launch_pdl=True`` may start while the kernel before it still runs. The
kernels that take a constexpr ``PDL`` therefore call :func:`pdl_prologue` first: it waits for
the kernel before (whose writes are then visible) and lets the next kernel launch at once (which
waits the same way before any memory access). Nothing changes in what anything reads or writes;
launch latency is hidden behind the kernel before. (The Gluon kernels issue the same two
``griddepcontrol`` instructions as inline PTX.) Triton's interpreter has no PDL: ``PDL`` stays
False there.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from fp4mm.backend import cuda_capability


@triton.jit
def pdl_prologue(PDL: tl.constexpr, LATE: tl.constexpr = False):
    """At a kernel's start: with PDL, wait for the kernel before, then let the next launch
    (unless LATE: then :func:`pdl_epilogue` lets it, after the kernel's stores)."""
    if PDL:
        gdc_wait()
        if not LATE:
            gdc_launch_dependents()


@triton.jit
def pdl_epilogue(PDL: tl.constexpr, LATE: tl.constexpr):
    """After a kernel's last store: with PDL and LATE, let the next kernel launch. A next
    kernel launched at this kernel's start made some GEMVs behind it 11-44 us slower at large K:
    their early CTAs cannot share an SM with this kernel's running ones, so they pile onto the
    SMs it leaves free (fp4mm.ops.dispatch.quantiser_pdl_late, GEMV_W4A4_TMA_MIN_M)."""
    if PDL and LATE:
        gdc_launch_dependents()


def pdl_launch_args(device: torch.device) -> dict:
    """``{"PDL": True, "launch_pdl": True}`` for a CUDA device of compute capability 9.0 or
    more (where ``griddepcontrol`` exists), else ``{}`` (the kernels' default: no PDL)."""
    if device.type == "cuda" and cuda_capability(device) >= (9, 0):
        return {"PDL": True, "launch_pdl": True}
    return {}
