"""Where an eager decode op's host time goes (session 37): enqueue time per call with the GPU held
busy (only Python and the launches count) for the public ops at their decode kernels and for the
kernel launchers they end in, then a cProfile of 300 calls of each op (top functions by own time).
18432 x 3072 weights. Usage on an sm_90 machine: ``python scripts/gpu_op_host_profile.py``
(text and JSON to $OUT or .)."""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import enqueue_us, host_profile  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90, fp4_gemv_sm90, fp4_gemv_tma_sm90  # noqa: E402


def main():
    out_dir = os.environ.get("OUT", ".")
    N, K, dev = 18432, 3072, "cuda"
    qw = fp4mm.quantize_nvfp4(torch.randn(N, K, device=dev))
    gw = fp4mm.quantize_fp4_groupwise(torch.randn(N, K, device=dev), 32)
    gs = float(qw.global_scale)
    alpha = torch.tensor(1.0 / gs, device=dev)
    x1 = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
    x16 = torch.randn(16, K, device=dev, dtype=torch.bfloat16)
    qx1 = fp4mm.quantize_nvfp4(x1.float())
    o1h = torch.empty(1, N, device=dev, dtype=torch.float16)
    o1 = torch.empty(1, N, device=dev, dtype=torch.bfloat16)
    o16 = torch.empty(16, N, device=dev, dtype=torch.bfloat16)
    ops = {
        "nvfp4_mm W4A4 M=1": lambda: fp4mm.nvfp4_mm(qx1.data, qx1.scales, qw.data, qw.scales,
                                                    alpha, out=o1h),
        "nvfp4_w4a16_mm M=16": lambda: fp4mm.nvfp4_w4a16_mm(x16, qw.data, qw.scales, gs,
                                                            out=o16),
        "nvfp4_w4a16_mm M=1": lambda: fp4mm.nvfp4_w4a16_mm(x1, qw.data, qw.scales, gs, out=o1),
        "w4a16_mm g32 M=1": lambda: fp4mm.w4a16_mm(x1.half(), gw.data, gw.scales, 32),
    }
    launchers = {
        "launcher: E4M3 GEMV M=1": lambda: fp4_gemv_fp8_sm90.gemv_fp8_sm90(
            qx1.data, qx1.scales, qw.data, qw.scales, alpha, o1h),
        "launcher: TMA GEMV M=16": lambda: fp4_gemv_tma_sm90.gemv_tma_sm90(
            x16, qw.data, qw.scales, alpha, "low_first", o16),
        "launcher: ring GEMV M=1": lambda: fp4_gemv_sm90.gemv_sm90(
            x1, None, qw.data, qw.scales, alpha, "low_first", o1),
    }
    empty = torch.empty(1, device=dev)
    cases = {"empty torch op": lambda: empty.add_(1), **ops, **launchers}
    for fn in cases.values():
        fn()
    torch.cuda.synchronize()
    rows = {}
    for _ in range(3):  # interleaved passes: the VM's host drifts
        for name, fn in cases.items():
            rows.setdefault(name, []).append(enqueue_us(fn))
    for name, v in rows.items():
        print(f"{name:28s} enqueue medians " + " ".join(f"{m:6.1f}" for m, _, _ in v)
              + f" | min {min(lo for _, lo, _ in v):6.1f} us", flush=True)
    text = "".join(host_profile(fn, 300, name) for name, fn in ops.items())
    with open(os.path.join(out_dir, "op_host_profile.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "op_host_enqueue.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       enqueue_us=rows), f, indent=1)


if __name__ == "__main__":
    main()
