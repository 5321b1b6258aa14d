# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Follow-up A/B to ``gpu_linear_static_tables.py`` (session 20; needs the layer of commit
``NVFP4Linear (static w4a4) keeps the quantiser's compare tables``): at M = 1, the host time to
enqueue one eager forward (the GPU held busy by ``torch.cuda._sleep``, so the loop measures
Python and the launches only), and CUDA-graph medians over 4 layer copies and over 1 (the
weights L2-resident, as in session 19's probe), kept tables vs the per-call table kernel,
three alternating runs. Usage on an sm_90 machine (JSON to $OUT or .)."""

from __future__ import annotations

import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import enqueue_us, save_rows, time_graph  # noqa: E402
from gpu_linear_static_tables import kept_and_plain  # noqa: E402


def host_us(layers, x, calls=60):
    """Median/min/max microseconds to enqueue one eager forward, over 9 rounds."""
    turn = itertools.cycle(layers)
    return enqueue_us(lambda: next(turn)(x), calls=calls, rounds=9, sleep_cycles=200_000_000)


def main():
    rows = []
    for K, N in ((3072, 18432), (3072, 3072)):
        kept, plain = kept_and_plain(K, N)
        for dtype in (torch.float16, torch.bfloat16):
            x = (torch.randn(1, K, device="cuda") * 0.5).to(dtype)
            res = {}
            for run in range(3):
                for name, layers in (("table_per_call", plain), ("tables_kept", kept)):
                    timers = (
                        ("host", lambda: host_us(layers, x)),
                        ("graph4", lambda: time_graph([lambda la=la: la(x) for la in layers])),
                        ("graph1", lambda: time_graph([lambda: layers[0](x)])))
                    for timer, fn in timers:
                        t = fn()
                        res.setdefault(f"{name}/{timer}", []).append(t[0])
                        rows.append(dict(K=K, N=N, M=1, dtype=str(dtype), variant=name,
                                         timer=timer, run=run, median_us=t[0], min_us=t[1],
                                         max_us=t[2]))
            for k, v in res.items():
                print(f"{K}->{N} {dtype} {k}: " + "/".join(f"{a:.2f}" for a in v), flush=True)
    save_rows("linear-static-tables-host", rows)


if __name__ == "__main__":
    main()
