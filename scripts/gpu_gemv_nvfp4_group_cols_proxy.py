# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Would NVFP4 weights with 16-bit x gain from the group-column form? A proxy, no new kernel:
the E4M3 block scales become bf16 / fp16 "group scales" of 16 (exact), and ``w4a16_mm``'s
column form (``fp4_gemv_sm90`` ``group_cols``, groups of 16: 8 columns a token) runs them,
against the shipped NVFP4 path of the same ring (the scales multiplied into the decoded
weights) on the same codes. The proxy reads 2-byte scales instead of 1-byte ones (6% more
bytes at 18432 x 3072), so it is pessimistic on memory.

Usage on an sm_90 machine: ``python scripts/gpu_gemv_nvfp4_group_cols_proxy.py`` (JSON to $OUT).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.formats import e4m3_to_float  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, rounds, time_graph  # noqa: E402


def main():
    rows = []
    for dt in (torch.bfloat16, torch.float16):
        for M, (N, K) in ((1, (18432, 3072)), (2, (18432, 3072)), (1, (8192, 8192))):
            p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
            out = torch.empty((M, N), dtype=dt, device="cuda")
            g16 = [e4m3_to_float(ws).to(dt).contiguous() for _, ws in p.w]
            gc = S.choose_config(M, N, K, False, 16, bf16_x=dt == torch.bfloat16)
            fns = {
                "nvfp4 ring": lambda i, o: S.gemv_sm90(p.x[0], None, *p.w[i], p.alpha,
                                                       "low_first", o),
                "g16 columns " + str(gc.split_k): lambda i, o: S.gemv_sm90(
                    p.x[0], None, p.w[i][0], g16[i], p.alpha, "low_first", o, config=gc,
                    group_size=16),
            }
            for k, f in fns.items():
                o = torch.full_like(out, float("nan"))
                f(0, o)
                ok, err = close(o, p.reference(0))
                if not ok:
                    raise SystemExit(f"FAIL {k} {dt} M={M}: {err}")
            got = rounds({k: (lambda f=f: time_graph([lambda i=i: f(i, out)
                                                      for i in range(4)])[0])
                          for k, f in fns.items()})
            med = {k: sorted(v)[1] for k, v in got.items()}
            for k, v in got.items():
                rows.append(dict(x=str(dt), M=M, N=N, K=K, impl=k, median_us=med[k], rounds_us=v))
            print(f"{str(dt):14s} M={M} {N}x{K}: "
                  + "  ".join(f"{k} {t:.2f}" for k, t in med.items()), flush=True)
            with open(os.path.join(os.environ.get("OUT", "."), "gemv-nvfp4-group-cols-proxy.json"),
                      "w") as fh:
                json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                               rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
