"""Host time of one eager decode call (M = 1, 3072 -> 18432, bf16 x, w4a16): the ``fp4mm::``
custom op against its Python implementation called directly (what the dispatcher adds), and
the layer, in grad mode, ``no_grad`` and ``inference_mode``. Enqueue time per call with the GPU
held busy (``torch.cuda._sleep``), median of 7 rounds of 50 calls.
Usage on an sm_90 machine: ``python scripts/gpu_op_dispatch_cost.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import enqueue_us  # noqa: E402

import fp4mm.library as library  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402


def main():
    lin = torch.nn.Linear(3072, 18432, bias=False, dtype=torch.bfloat16, device="cuda")
    layer = NVFP4Linear.from_linear(lin, mode="w4a16")
    x = torch.randn(1, 3072, device="cuda", dtype=torch.bfloat16)
    op = torch.ops.fp4mm.nvfp4_w4a16_mm_alpha
    impl = library._nvfp4_w4a16_mm_alpha_op._init_fn  # the Python function behind the op
    args = (x, layer.weight, layer.weight_scale, None, layer.weight_scale_2, "low_first", None,
            None)
    assert torch.equal(op(*args), impl(*args))
    empty = torch.empty(1, device="cuda")
    res = {}
    for _ in range(2):
        for mode, ctx in (("grad", torch.enable_grad), ("no_grad", torch.no_grad),
                          ("inference_mode", torch.inference_mode)):
            with ctx():
                for name, fn in (("empty torch op", lambda: empty.add_(1)),
                                 ("op", lambda: op(*args)), ("impl", lambda: impl(*args)),
                                 ("layer", lambda: layer(x))):
                    res.setdefault(f"{mode}/{name}", []).append(enqueue_us(fn, rounds=7)[0])
    for k, v in res.items():
        print(f"{k:28s} " + " / ".join(f"{t:7.1f}" for t in v), flush=True)
    path = os.path.join(os.environ.get("OUT", "."), "op_dispatch_cost.json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       shape="M=1, 3072 -> 18432, bf16, w4a16", enqueue_us=res), f, indent=1)


if __name__ == "__main__":
    main()
