# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""A/B: NVFP4Linear's W4A4 forward with a static activation scale, with the quantiser's compare
tables kept by the layer (``input_encode_tables``, made once in ``_derive``) and without them
(the same layers with the buffer set to None: the quantiser makes its table in a kernel of its
own on every call, as before session 20; the layer of commit ``314fbf1``, reverted after this
run, so on later code both variants are the same). bf16 and fp16 activations, CUDA-graph
medians over 4 layer copies, A and B alternating twice; also eager wall-clock per call (launch cost
included: decode without CUDA graphs is host-bound); outputs compared bit for bit first.
Usage on an sm_90 machine: ``python scripts/gpu_linear_static_tables.py`` (JSON to $OUT or .)."""

from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import save_rows, seeded_linear, time_graph  # noqa: E402

from fp4mm.nn import NVFP4Linear  # noqa: E402


def time_eager(layers, x, calls=400):
    """Wall-clock microseconds per eager forward (launch cost included), median of 5 rounds."""
    ts = []
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for j in range(calls):
            layers[j % len(layers)](x)
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e6 / calls)
    ts.sort()
    return ts[2], ts[0], ts[-1]


def kept_and_plain(K, N, copies=4):
    """``copies`` static-scale w4a4 layers keeping their tables, and the same layers without."""
    kept, plain = [], []
    for i in range(copies):
        lin = seeded_linear(K, N, i)
        kept.append(NVFP4Linear.from_linear(lin, mode="w4a4", activation_scale=2688.0 / 4))
        p = NVFP4Linear.from_linear(lin, mode="w4a4", activation_scale=2688.0 / 4)
        p.input_encode_tables = None
        plain.append(p)
    return kept, plain


def main():
    rows = []
    for K, N in ((3072, 18432), (3072, 3072), (8192, 8192)):
        kept, plain = kept_and_plain(K, N)
        assert kept[0].input_encode_tables is not None
        for dtype in (torch.bfloat16, torch.float16):
            for M in (1, 16, 2048):
                x = (torch.randn(M, K, device="cuda") * 0.5).to(dtype)
                a, b = plain[0](x), kept[0](x)
                torch.cuda.synchronize()
                same = torch.equal(a, b)
                res = {}
                for run in range(2):
                    for name, layers in (("table_per_call", plain), ("tables_kept", kept)):
                        for timer in ("graph", "eager"):
                            t = time_graph([lambda la=la: la(x) for la in layers]) \
                                if timer == "graph" else time_eager(layers, x)
                            res.setdefault(f"{name}/{timer}", []).append(t[0])
                            rows.append(dict(K=K, N=N, M=M, dtype=str(dtype), variant=name,
                                             timer=timer, run=run, median_us=t[0], min_us=t[1],
                                             max_us=t[2], bit_identical=same))
                print(f"{K}->{N} {dtype} M={M} same={same}: " + "  ".join(
                    f"{n} " + "/".join(f"{v:.2f}" for v in ts) for n, ts in res.items()),
                    flush=True)
    save_rows("linear-static-tables", rows)


if __name__ == "__main__":
    main()
