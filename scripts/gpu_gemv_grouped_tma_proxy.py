# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Would 16-bit group scales gain from the TMA-fed GEMV's four-warp CTAs at 9-16 tokens?
A proxy before building it (session 27): at the same shapes, the register ring's time for
NVFP4 weights with 16-bit x (``fp4_gemv_sm90``, forced) against the TMA GEMV's (shipped rule),
beside the ring's time for group-32 scales (what ``w4a16_mm`` runs there). If the NVFP4 ring
and the group-32 ring take about the same time, a grouped TMA kernel would gain about what the
TMA kernel gains for NVFP4.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_grouped_tma_proxy.py`` (JSON to $OUT).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, close, rounds, time_graph  # noqa: E402


def main():
    rows = []
    for dt in (torch.float16, torch.bfloat16):
        for M, N, K in ((16, 18432, 3072), (12, 18432, 3072), (16, 8192, 8192),
                        (16, 28672, 4096)):
            nv = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
            gp = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
            out = torch.empty((M, N), dtype=dt, device="cuda")
            fns = {
                "nvfp4 ring": (nv, lambda i, o: S.gemv_sm90(nv.x[0], None, *nv.w[i], nv.alpha,
                                                            "low_first", o)),
                "nvfp4 tma": (nv, lambda i, o: T.gemv_tma_sm90(nv.x[0], *nv.w[i], nv.alpha,
                                                               "low_first", o)),
                "g32 ring": (gp, lambda i, o: S.gemv_sm90(gp.x[0], None, *gp.w[i], 1.0,
                                                          "low_first", o, group_size=32)),
            }
            for name, (p, f) in fns.items():
                o = torch.full_like(out, float("nan"))
                f(0, o)
                if not close(o, p.reference(0))[0]:
                    raise SystemExit(f"FAIL {name} {dt} M={M} {N}x{K}")
            got = rounds({k: (lambda f=f: time_graph([lambda i=i: f(i, out) for i in range(4)])[0])
                          for k, (_, f) in fns.items()})
            med = {k: sorted(v)[1] for k, v in got.items()}
            rows.append(dict(dtype=str(dt), M=M, N=N, K=K, rounds=got, us=med))
            print(f"{str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} "
                  + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()), flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gemv-grouped-tma-proxy.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)


if __name__ == "__main__":
    main()
