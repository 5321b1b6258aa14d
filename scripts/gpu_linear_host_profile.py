"""Where the host time of one eager ``NVFP4Linear`` forward goes (decode, M = 1): enqueue time
per call with the GPU held busy (so only Python and the launches count), for each mode, and a
cProfile of 200 calls (top functions by own time and by cumulative time).
Usage on an sm_90 machine: ``python scripts/gpu_linear_host_profile.py`` (files to $OUT or .)."""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import enqueue_us, host_profile  # noqa: E402

from fp4mm.nn import NVFP4Linear  # noqa: E402


def main():
    out_dir = os.environ.get("OUT", ".")
    K, N = 3072, 18432
    lin = torch.nn.Linear(K, N, bias=False, dtype=torch.bfloat16, device="cuda")
    layers = {
        "w4a4 static": NVFP4Linear.from_linear(lin, mode="w4a4", activation_scale=672.0),
        "w4a4 dynamic": NVFP4Linear.from_linear(lin, mode="w4a4"),
        "w4a16": NVFP4Linear.from_linear(lin, mode="w4a16"),
    }
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    empty = torch.empty(1, device="cuda")
    rows = {"empty torch op": enqueue_us(lambda: empty.add_(1))}
    for name, layer in layers.items():
        layer(x)
        rows[name] = enqueue_us(lambda layer=layer: layer(x))
    for name, (med, lo, hi) in rows.items():
        print(f"{name:16s} enqueue {med:8.1f} us (min {lo:.1f}, max {hi:.1f})", flush=True)
    text = "".join(host_profile(lambda layer=layer: layer(x), 200, name,
                                keys=("tottime", "cumtime"), lines=35)
                   for name, layer in layers.items())
    with open(os.path.join(out_dir, "linear_host_profile.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "linear_host_enqueue.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       enqueue_us={k: dict(median=v[0], min=v[1], max=v[2])
                                   for k, v in rows.items()}), f, indent=1)
    print(text[:6000])


if __name__ == "__main__":
    main()
