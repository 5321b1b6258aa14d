"""Host time of the decode launchers with Triton's dispatch and with ``fp4mm.kernels.launch``'s
direct path, on a machine without a GPU: a stand-in CUDA driver (``tests/kernels/_fake_driver``)
compiles the kernels for sm_90 and turns each launch into a no-op, so what is timed is our
launcher's Python plus the dispatch, not the CUDA launch itself (about 13 us a launch on the H100
VM, scripts/gpu_launch_direct.py). Interleaved rounds; (median, min) us per call.
Usage: ``python scripts/cpu_direct_launch.py [out.json]`` (TRITON_INTERPRET must be unset)."""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "kernels"))

import torch  # noqa: E402
import triton  # noqa: E402
from _launch_equivalence import cases  # noqa: E402

from fp4mm.kernels import launch as L  # noqa: E402

DECODE = ("ring GEMV, bf16 x, 1 token", "E4M3 GEMV, 1 token", "E4M3 GEMV, 4 tokens",
          "TMA GEMV, NVFP4 weights, 13 tokens", "quantiser, static scale")


def per_call_us(fn, calls=200):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e6 / calls


def main():
    assert not os.environ.get("TRITON_INTERPRET"), "unset TRITON_INTERPRET"
    from _fake_driver import fake_sm90_driver

    res = {}
    with fake_sm90_driver() as fake:
        calls = dict(cases())
        for name in DECODE:
            calls[name]()  # compile
            calls[name]()
        for _ in range(7):
            for name in DECODE:
                for enabled in (False, True):
                    L.ENABLED = enabled
                    calls[name]()  # a miss fills the cache on the first direct round
                    fake.launches.clear()
                    us = per_call_us(calls[name])
                    res.setdefault(name, {}).setdefault(
                        "direct" if enabled else "triton dispatch", []).append(us)
    table = {name: {path: (sorted(v)[len(v) // 2], min(v)) for path, v in paths.items()}
             for name, paths in res.items()}
    for name, paths in table.items():
        (tm, tl), (dm, dl) = paths["triton dispatch"], paths["direct"]
        print(f"{name:40s} Triton dispatch {tm:6.1f} (min {tl:6.1f})   direct {dm:6.1f} "
              f"(min {dl:6.1f})   saved {tl - dl:5.1f} us", flush=True)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(dict(machine="local CPU, no GPU (stand-in driver, launches are no-ops)",
                           torch=torch.__version__, triton=triton.__version__,
                           method="us per launcher call, 200 calls a round, 7 interleaved "
                                  "rounds; (median, min)",
                           us=table), f, indent=1)


if __name__ == "__main__":
    main()
