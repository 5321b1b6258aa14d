# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""The TMA-fed GEMV copying its first weight chunks before the PDL wait (session 27).

Split-K calls launch with programmatic dependent launch and wait for the previous kernel before
touching memory. The weights (and their E4M3 or group scales) are no previous kernel's output,
so the prologue may copy their first chunks before the wait, under the previous kernel's tail;
x, the output and the partials wait. The fixed cost per call at 16 tokens is about 4.7 us (a
fit of time against weight bytes, bench/results/2026-11-27-gemv-tma-balance-h100.json), much of
it the first chunk's latency. This times the shipped kernel ("early") against the same source
with every prologue copy after the wait ("late", the kernel before this change), back to back
as in the benchmark (each call's reduce is the next call's previous kernel), after oracle
checks of both. CUDA-graph medians over 4 weight copies, 3 rotating rounds.
Not kept (bench/results/2026-11-27-gemv-tma-weights-early-h100.json: -1% to +4%, noise at the
bar shape; and a weight written by the kernel just before, e.g. a quantiser that lets its
dependents launch early, would be read before it is written). It runs only at commit 60c7ed0,
which has the change.
Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_weights_early.py`` (JSON to $OUT).
"""

from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_tma_sm90 as T  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, rounds, time_graph  # noqa: E402

EARLY = '''    for t in gl.static_range(STAGES):
        _issue(w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, t, row0, c_begin + t,
               t < n_c, GROUPED, X=False)
    if GROUPED:'''
LATE = '''    if PDL:
        gl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
    for t in gl.static_range(STAGES):
        _issue(w_desc, s_desc, x_desc, w_bufs, s_bufs, x_bufs, ready, t, row0, c_begin + t,
               t < n_c, GROUPED, X=False)
    if GROUPED:'''


def main():
    with open(T.__file__) as f:
        late = patched_module("fp4_gemv_tma_late", f.read(), [(EARLY, LATE)])
    rows = []
    cases = [("nvfp4_w4a16_mm", torch.bfloat16, 16, 18432, 3072),
             ("nvfp4_w4a16_mm", torch.float16, 16, 18432, 3072),
             ("nvfp4_w4a16_mm", torch.bfloat16, 9, 18432, 3072),
             ("nvfp4_w4a16_mm", torch.bfloat16, 16, 8192, 8192),
             ("nvfp4_w4a16_mm", torch.bfloat16, 16, 4096, 4096),
             ("nvfp4_w4a16_mm", torch.bfloat16, 24, 8192, 8192),
             ("w4a16_mm", torch.float16, 32, 18432, 3072),
             ("w4a16_mm", torch.float16, 24, 8192, 8192)]
    for op, dt, M, N, K in cases:
        group = 32 if op == "w4a16_mm" else None
        p = Problem(op, M, N, K, group=group or 16, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        cfg = T.choose_config(M, N, K, group)
        fns = {}
        for name, mod in (("early", T), ("late", late)):
            def run(i, o, mod=mod):
                mod.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", o,
                                  config=mod.GemvTMAConfig(**vars(cfg)), group_size=group)
            o = torch.full_like(out, float("nan"))
            run(0, o)
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL {name} {op} {dt} M={M} {N}x{K}")
            fns[name] = (lambda run=run: time_graph([lambda i=i: run(i, out) for i in range(4)])[0])
        got = rounds(fns)
        med = {k: sorted(v)[1] for k, v in got.items()}
        rows.append(dict(op=op, dtype=str(dt), M=M, N=N, K=K, cfg=str(cfg), rounds=got, us=med))
        print(f"{op:15s} {str(dt)[6:]:8s} M={M:2d} {N:5d}x{K:<5d} split {cfg.split_k} warps "
              f"{cfg.warps} | early {med['early']:6.2f}  late {med['late']:6.2f}  ratio "
              f"{med['early'] / med['late']:.3f}", flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gemv-tma-weights-early.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)


if __name__ == "__main__":
    main()
