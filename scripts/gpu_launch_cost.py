"""Where an eager decode call's host time goes: enqueue time per call (GPU held busy, so only
the host counts; ``gpu_decode.enqueue_us``, median of 9 rounds of 50 calls) for a ladder from an
empty torch op and an empty Triton launch up to the public ops, with each op's kernel launchers
called directly in between; then the ops with the device capability looked up once per device
(``fp4mm.backend.cuda_capability``) against asking torch on every call. 18432 x 3072 weights.
Usage on an sm_90 machine: ``python -u scripts/gpu_launch_cost.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import json
import os
import sys

import torch
import triton
import triton.language as tl
from triton.experimental import gluon

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import enqueue_us  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90, fp4_gemv_sm90, fp4_gemv_tma_sm90  # noqa: E402
from fp4mm.kernels.fp4_gemv import reduce_partials  # noqa: E402
from fp4mm.kernels.fp4_gemv_tma_sm90 import _W_SWIZZLED, TensorDescriptor  # noqa: E402


@gluon.jit
def _empty_descs(d0, d1, d2, d3, d4, d5, n):
    pass


@triton.jit
def _empty(a, b, c, d, e, f, g, h, M, N, K, alpha, s0, s1,
           A: tl.constexpr, B: tl.constexpr, C: tl.constexpr, D: tl.constexpr):
    pass


def main():
    N, K = 18432, 3072
    dev = "cuda"
    w = torch.randn(N, K, device=dev)
    qw = fp4mm.quantize_nvfp4(w)
    gs = float(qw.global_scale)
    ws8 = qw.scales
    t = torch.empty(16, device=dev)
    x1 = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
    x16 = torch.randn(16, K, device=dev, dtype=torch.bfloat16)
    qx1 = fp4mm.quantize_nvfp4(x1.float())
    o1 = torch.empty(1, N, device=dev, dtype=torch.bfloat16)
    o16 = torch.empty(16, N, device=dev, dtype=torch.bfloat16)
    o1h = torch.empty(1, N, device=dev, dtype=torch.float16)
    part = torch.empty(2, 16, N, device=dev)
    a = 1.0 / gs

    def empty_triton():
        _empty[(288, 2)](t, t, t, t, t, t, t, t, 16, N, K, a, N, 1, A=1, B=2, C=True, D=16,
                         num_warps=4)

    descs = [TensorDescriptor.from_tensor(qw.data, [64, 128], _W_SWIZZLED) for _ in range(6)]

    def empty_gluon_descs():  # the launcher encodes each host descriptor on every launch
        _empty_descs[(288, 2)](*descs, N, num_warps=4)

    cases = [
        ("empty torch op", lambda: t.add_(1)),
        ("torch.empty (16, N) fp32", lambda: torch.empty(16, N, device=dev)),
        ("empty Triton launch, 18 args", empty_triton),
        ("empty Gluon launch, 6 descriptors", empty_gluon_descs),
        ("TensorDescriptor.from_tensor x1", lambda: TensorDescriptor.from_tensor(
            qw.data, [64, 128], _W_SWIZZLED)),
        ("reduce_partials (2, 16, N)", lambda: reduce_partials(part, o16, a, pdl=True)),
        ("gemv_tma_sm90 M=16 (launcher)", lambda: fp4_gemv_tma_sm90.gemv_tma_sm90(
            x16, qw.data, ws8, a, "low_first", o16)),
        ("nvfp4_w4a16_mm M=16 (op)", lambda: fp4mm.nvfp4_w4a16_mm(x16, qw.data, ws8, gs,
                                                                    out=o16)),
        ("gemv_sm90 M=1 bf16 (launcher)", lambda: fp4_gemv_sm90.gemv_sm90(
            x1, None, qw.data, ws8, a, "low_first", o1)),
        ("nvfp4_w4a16_mm M=1 (op)", lambda: fp4mm.nvfp4_w4a16_mm(x1, qw.data, ws8, gs, out=o1)),
        ("gemv_fp8_sm90 W4A4 M=1 (launcher)", lambda: fp4_gemv_fp8_sm90.gemv_fp8_sm90(
            qx1.data, qx1.scales, qw.data, ws8, a, o1h)),
        ("nvfp4_mm W4A4 M=1 (op)", lambda: fp4mm.nvfp4_mm(qx1.data, qx1.scales, qw.data, ws8, a,
                                                          out=o1h)),
    ]
    for _, fn in cases:  # compile and warm every path first
        fn()
    torch.cuda.synchronize()
    res = {}
    for _ in range(2):
        for name, fn in cases:
            res.setdefault(name, []).append(enqueue_us(fn)[0])
    for name, v in res.items():
        print(f"{name:36s} " + " / ".join(f"{u:7.1f}" for u in v), flush=True)
    # the ops with the device capability looked up once (shipped) against asking torch each time
    from fp4mm import backend
    from fp4mm.kernels import pdl

    cached = backend.cuda_capability

    def uncached(device):
        return torch.cuda.get_device_capability(torch.device(device))

    ab = {}
    ops = [c for c in cases if c[0].endswith("(op)")]
    for _ in range(3):
        for kind, fn_cap in (("cached", cached), ("uncached", uncached)):
            backend.cuda_capability = pdl.cuda_capability = fn_cap
            for name, fn in ops:
                ab.setdefault(f"{name} {kind}", []).append(enqueue_us(fn)[0])
    backend.cuda_capability = pdl.cuda_capability = cached
    for name, v in ab.items():
        print(f"{name:36s} " + " / ".join(f"{u:7.1f}" for u in v), flush=True)
    res.update(ab)
    path = os.path.join(os.environ.get("OUT", "."), "launch_cost.json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       triton=triton.__version__, shape=f"N={N}, K={K}",
                       method="enqueue us per call, GPU held busy, median of 9 rounds of 50 "
                              "calls; the ladder in two passes, then the ops with the cached "
                              "and the uncached device capability in three interleaved passes",
                       enqueue_us=res), f, indent=1)


if __name__ == "__main__":
    main()
