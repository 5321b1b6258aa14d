"""How much of a decode launch is Triton's JIT dispatch: the TMA GEMV launcher at 16 tokens of
18432 x 3072 (its kernel and the split-K reduce) enqueued as shipped, its two launches replayed
through ``JITFunction`` (``kernel[grid](*args, **kwargs)``), and the same two launches sent
straight to the compiled kernels' launcher with the bound arguments captured once (no binder, no
cache key; the host TMA descriptors are still encoded at every launch). The direct replay's
output is checked bit for bit against the shipped call's. Enqueue per call with the GPU held
busy, 15 rounds of 50 calls: (median, min) us, in three interleaved passes.
Usage on an sm_90 machine: ``python -u scripts/gpu_launch_direct.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import json
import os
import sys

import torch
import triton
from triton.runtime.jit import JITFunction

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import enqueue_us  # noqa: E402

import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402


def main():
    N, K, M = 18432, 3072, 16
    qw = fp4mm.quantize_nvfp4(torch.randn(N, K, device="cuda"))
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    alpha = 1.0 / float(qw.global_scale)

    def shipped():
        T.gemv_tma_sm90(x, qw.data, qw.scales, alpha, "low_first", out)

    shipped()  # compile
    launches = []  # (JITFunction, grid, args, kwargs) of one shipped call
    real_run = JITFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        launches.append((self, grid, args, dict(kwargs)))
        return real_run(self, *args, grid=grid, warmup=warmup, **kwargs)

    JITFunction.run = recording_run
    shipped()
    JITFunction.run = real_run
    torch.cuda.synchronize()
    ref = out.clone()

    def replay():
        for fn, grid, args, kwargs in launches:
            fn[grid](*args, **kwargs)

    device = torch.cuda.current_device()
    direct_calls = []
    for fn, grid, args, kwargs in launches:
        compiled = fn[grid](*args, **kwargs)  # the CompiledKernel of this specialisation
        binder = fn.device_caches[device][4]
        bound = tuple(binder(*args, **kwargs)[0].values())
        g = tuple(grid) + (1,) * (3 - len(grid))
        direct_calls.append((compiled, g, bound))
    stream = torch.cuda.current_stream().cuda_stream

    def direct():
        for compiled, g, bound in direct_calls:
            compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata,
                         None, None, None, *bound)

    out.fill_(float("nan"))
    direct()
    torch.cuda.synchronize()
    same = bool(torch.equal(out, ref))
    print(f"launches per call: {[fn.fn.__name__ for fn, *_ in launches]}; direct == shipped: "
          f"{same}", flush=True)
    cases = {"shipped launcher": shipped, "JIT replay of its launches": replay,
             "direct launches": direct}
    res = {}
    for _ in range(3):
        for name, fn in cases.items():
            res.setdefault(name, []).append(enqueue_us(fn, rounds=15)[:2])
    for name, v in res.items():
        print(f"{name:28s} " + "  ".join(f"{m:6.1f} (min {lo:6.1f})" for m, lo in v), flush=True)
    path = os.path.join(os.environ.get("OUT", "."), "launch_direct.json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       triton=triton.__version__, shape=f"M={M}, N={N}, K={K}, bf16 x",
                       direct_equals_shipped=same,
                       method="enqueue us per call (median, min of 15 rounds of 50), GPU held "
                              "busy, three interleaved passes",
                       enqueue_us=res), f, indent=1)


if __name__ == "__main__":
    main()
