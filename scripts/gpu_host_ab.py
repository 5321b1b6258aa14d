"""Eager host time of the decode calls for one copy of fp4mm: enqueue time per call with the GPU
held busy (15 rounds of 50 calls: :func:`enqueue_us`), 18432 x 3072 weights,
for the three ops at their decode kernels and ``NVFP4Linear`` (w4a16, w4a4 dynamic and static);
an empty torch op and an empty Triton launch calibrate the host. Run it once per copy, several
times interleaved, to compare two versions of the package on the same (noisy) host.
Usage on an sm_90 machine: ``python -u scripts/gpu_host_ab.py ROOT TAG`` (ROOT: the directory
holding the ``fp4mm`` to time; appends one JSON line to $OUT/host_ab.jsonl)."""

from __future__ import annotations

import json
import os
import sys
import time

root, tag = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.abspath(root))
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402


def enqueue_us(fn, calls=50, rounds=15):
    """Microseconds to enqueue one call of ``fn``, GPU held busy (as ``gpu_decode.enqueue_us``,
    copied: importing that module would import the fp4mm beside it): ``(median wall, min wall,
    median thread CPU)`` over the rounds. The device VM's host is shared and its wall times
    swing by 2x between processes; the minimum and the thread's CPU time are steadier."""
    wall, cpu = [], []
    for _ in range(rounds):
        torch.cuda.synchronize()
        torch.cuda._sleep(300_000_000)
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(calls):
            fn()
        wall.append((time.perf_counter() - t0) * 1e6 / calls)
        cpu.append((time.thread_time() - c0) * 1e6 / calls)
        torch.cuda.synchronize()
    wall.sort()
    cpu.sort()
    return wall[len(wall) // 2], wall[0], cpu[len(cpu) // 2]


@triton.jit
def _empty(a, b, M, N, alpha, A: tl.constexpr, B: tl.constexpr):
    pass


def main():
    assert os.path.dirname(fp4mm.__file__).startswith(os.path.abspath(root)), fp4mm.__file__
    N, K = 18432, 3072
    dev = "cuda"
    qw = fp4mm.quantize_nvfp4(torch.randn(N, K, device=dev))
    gs = float(qw.global_scale)
    x1 = torch.randn(1, K, device=dev, dtype=torch.bfloat16)
    x16 = torch.randn(16, K, device=dev, dtype=torch.bfloat16)
    qx1 = fp4mm.quantize_nvfp4(x1.float())
    o1 = torch.empty(1, N, device=dev, dtype=torch.bfloat16)
    o16 = torch.empty(16, N, device=dev, dtype=torch.bfloat16)
    o1h = torch.empty(1, N, device=dev, dtype=torch.float16)
    t = torch.empty(16, device=dev)
    lin = torch.nn.Linear(K, N, bias=False, dtype=torch.bfloat16, device=dev)
    layers = {
        "NVFP4Linear w4a16 M=1": NVFP4Linear.from_linear(lin, mode="w4a16"),
        "NVFP4Linear w4a4 dynamic M=1": NVFP4Linear.from_linear(lin, mode="w4a4"),
        "NVFP4Linear w4a4 static M=1": NVFP4Linear.from_linear(lin, mode="w4a4",
                                                               activation_scale=672.0),
    }
    cases = {
        "empty torch op": lambda: t.add_(1),
        "empty Triton launch": lambda: _empty[(288, 2)](t, t, 16, N, 0.5, A=1, B=True),
        "nvfp4_w4a16_mm M=16 (TMA GEMV)": lambda: fp4mm.nvfp4_w4a16_mm(x16, qw.data, qw.scales,
                                                                        gs, out=o16),
        "nvfp4_w4a16_mm M=1 (ring)": lambda: fp4mm.nvfp4_w4a16_mm(x1, qw.data, qw.scales, gs,
                                                                   out=o1),
        "nvfp4_mm W4A4 M=1 (E4M3 GEMV)": lambda: fp4mm.nvfp4_mm(qx1.data, qx1.scales, qw.data,
                                                                qw.scales, 1.0 / gs, out=o1h),
        **{name: (lambda layer=layer: layer(x1)) for name, layer in layers.items()},
    }
    for fn in cases.values():  # compile and warm every path
        fn()
    torch.cuda.synchronize()
    res = {name: enqueue_us(fn) for name, fn in cases.items()}
    line = dict(tag=tag, root=root, time=time.time(), device=torch.cuda.get_device_name(),
                torch=torch.__version__, triton=triton.__version__, enqueue_us=res)
    for name, (med, lo, cpu) in res.items():
        print(f"{tag:4s} {name:34s} median {med:7.1f}  min {lo:7.1f}  cpu {cpu:7.1f}", flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "host_ab.jsonl"), "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
