# ruff: noqa: B023  (closures are used inside their loop iteration)
"""Probe (session 32): why a pre-pass that lets the next kernel launch at its start makes the TMA
GEMV behind it 11-44 us slower at K = 8192-14336 (session 31, ``pdl_epilogue``).

Hypothesis: the GEMV's CTAs launched early cannot share an SM with a running pre-pass CTA, so the
first ones pile onto the SMs the pre-pass left free (the GEMV's grid is about one wave there: 128
CTAs at 4096 x 14336, and the pre-pass has 112), and those SMs then run 2-6 GEMV CTAs each while
others run one. One candidate reason is the SM's shared-memory carve-out: the pre-pass uses 4 KB
of shared memory, the GEMV 34 KB; an SM changes its carve-out only when idle.

For W4A4 x (NVFP4, 16 tokens) -> ``dequant_nvfp4`` (fp16) -> the TMA GEMV (``%globaltimer`` and
``%smid`` stamped per CTA: ``gpu_gemv_tma_timeline.PATCHES``), CUDA graphs of 8 calls over 4
weight copies, the pre-pass launched ``plain`` (no PDL), ``early`` (shipped before session 31),
``late`` (the route's trigger after the stores) and ``early_carve`` (early, with the pre-pass's
preferred shared-memory carve-out set to the maximum by ``cuFuncSetAttribute``, so a GEMV CTA
fits beside it). Per call: the graph median, the GEMV's span, how many CTAs the busiest SM ran,
how many SMs ran any, and how many CTAs started before the first one passed its PDL wait.
``--route``: :func:`route`, the carve-out against the late trigger over the route's shapes.
Usage on an sm_90 machine: ``python -u scripts/gpu_pdl_timeline.py [--route]`` (JSON to $OUT
or .).
"""

from __future__ import annotations

import ctypes
import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import dequant_nvfp4 as D  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_timeline import PATCHES, stamp_buffers  # noqa: E402

# CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: percent of the maximum, -1 the default
_CARVEOUT = 9


def set_carveout(jit_fn, percent):
    """Set the preferred shared-memory carve-out of every compiled specialisation of the Triton
    kernel ``jit_fn``; returns their (name, shared bytes, registers)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    seen = []
    for caches in jit_fn.device_caches.values():
        for k in caches[0].values():
            k._init_handles()
            rc = cuda.cuFuncSetAttribute(ctypes.c_void_p(k.function), _CARVEOUT, int(percent))
            assert rc == 0, f"cuFuncSetAttribute: CUresult {rc}"
            seen.append((k.name, k.metadata.shared, k.n_regs))
    return seen


def timeline(probe, start_pass):
    """From one call's stamps: span, CTAs on the busiest SM, SMs used, early starters."""
    p = probe.cpu().to(torch.float64)
    t00 = float(p[:, 0].min())
    us = (p[:, :6] - t00) / 1000.0
    first_pass = float(us[:, 1].min())
    per_sm = {}
    for s in p[:, 6].long().tolist():
        per_sm[s] = per_sm.get(s, 0) + 1
    return dict(span=float(us[:, 5].max()), wait_pass_first=first_pass,
                run_med=st.median((us[:, 5] - us[:, 1]).tolist()),
                max_ctas_per_sm=max(per_sm.values()), sms=len(per_sm),
                early_starters=int((us[:, 0] < first_pass - start_pass).sum()),
                ctas=int(p.shape[0]))


def route():
    """``--route``: W4A4 at 17-32 tokens through the op (pre-pass with the late trigger, then the
    TMA GEMV) against the pre-pass with the early trigger and its carve-out at the maximum, on
    the route's rule shapes; and prepacked W4A4 on the GEMM (pre-pass with the early trigger)
    with and without that carve-out. 3 rotating rounds of CUDA-graph medians over 4 copies."""
    import fp4mm
    from fp4mm.kernels import fp4_gemv_tma_sm90
    from scripts.gpu_decode import rounds

    def carved(fn):
        def run():
            set_carveout(D._dequant_nvfp4_kernel, 100)
            try:
                return fn()
            finally:
                set_carveout(D._dequant_nvfp4_kernel, -1)
        return run

    rows = []
    cases = [((N, K), M, False) for N, K in ((18432, 3072), (14336, 4096), (28672, 4096),
                                             (12288, 4096), (16384, 2048), (8192, 8192),
                                             (4096, 14336)) for M in (17, 24, 32)]
    cases += [((N, K), M, True) for N, K in ((4096, 14336), (8192, 8192), (18432, 3072))
              for M in (17, 64, 256, 2048)]
    for (N, K), M, packed in cases:
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        xq, xs = p.x
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        if packed:
            ws = [(fp4mm.prepack_nvfp4_weight(*w), None) for w in p.w]
            op = [lambda w=w: fp4mm.nvfp4_mm(xq, xs, *w, p.alpha, out=out) for w in ws]
            fns = {"op": op, "op_carve": op}
        else:
            def pair(w):
                x16 = D.dequant_nvfp4(xq, xs, dtype=torch.float16, pdl=True)
                fp4_gemv_tma_sm90.gemv_tma_sm90(x16, *w, p.alpha, "low_first", out)

            fns = {"op": [lambda w=w: fp4mm.nvfp4_mm(xq, xs, *w, p.alpha, out=out)
                          for w in p.w],
                   "early_carve": [lambda w=w: pair(w) for w in p.w]}
        for name, f in fns.items():  # oracle first, NaN-poisoned output
            out.fill_(float("nan"))
            (carved(f[0]) if "carve" in name else f[0])()
            ok, err = close(out, p.reference(0))
            assert ok, f"{name} {N}x{K} M={M}: rel err {err}"
        timers = {n: (lambda f=f: time_graph(f)[0]) for n, f in fns.items()}
        got = rounds({n: (carved(t) if "carve" in n else t) for n, t in timers.items()}, 3)
        med = {n: st.median(v) for n, v in got.items()}
        rows.append(dict(N=N, K=K, M=M, prepacked=packed, rounds=got, medians=med))
        print(f"{N:5d}x{K:5d} M={M:4d} {'prepacked' if packed else 'raw':9s} "
              + "  ".join(f"{n} {v:7.2f}" for n, v in med.items()), flush=True)
    save_rows("pdl-carve-route", rows)


def main():
    if "--route" in sys.argv:
        return route()
    src = open(os.path.join(os.path.dirname(__file__), "..", "fp4mm", "kernels",
                            "fp4_gemv_tma_sm90.py")).read()
    T = patched_module("fp4_gemv_tma_pdl_timeline", src, PATCHES)
    rows = []
    for N, K in ((4096, 14336), (8192, 8192), (14336, 4096), (18432, 3072)):
        M = 16
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        xq, xs = p.x
        cfg = T.choose_config(M, N, K)
        probes = stamp_buffers(cfg, N, K)
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        kinds = {"plain": {}, "early": {"pdl": True}, "late": {"pdl": True, "pdl_late": True},
                 "early_carve": {"pdl": True}}
        for name, kw in kinds.items():
            def call(i, o):
                x16 = D.dequant_nvfp4(xq, xs, dtype=torch.float16, **kw)
                T.PROBE[0] = probes[i]
                T.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o, config=cfg)

            call(0, out)  # compiled before the carve-out is set
            info = set_carveout(D._dequant_nvfp4_kernel, 100 if name == "early_carve" else -1)
            o = torch.full((M, N), float("nan"), dtype=torch.float16, device="cuda")
            call(0, o)
            ok, err = close(o, p.reference(0))
            assert ok, f"{name} {N}x{K}: rel err {err}"
            meds = [time_graph([lambda i=i: call(i, out) for i in range(4)])[0] for _ in range(3)]
            calls = [timeline(pr, 0.5) for pr in probes]
            row = dict(N=N, K=K, M=M, variant=name, cfg=str(cfg), grid=int(probes[0].shape[0]),
                       graph_us=st.median(meds), rounds=meds, calls=calls, prepass=info)
            rows.append(row)
            c = calls[1]
            print(f"{N:5d}x{K:5d} {name:11s} graph {row['graph_us']:6.2f} us | GEMV span "
                  f"{c['span']:6.2f} run med {c['run_med']:6.2f} | CTAs {c['ctas']} on "
                  f"{c['sms']} SMs, busiest {c['max_ctas_per_sm']} | started early "
                  f"{c['early_starters']} | spans " + " ".join(f"{x['span']:.1f}" for x in calls),
                  flush=True)
        set_carveout(D._dequant_nvfp4_kernel, -1)
    save_rows("pdl-timeline", rows)


if __name__ == "__main__":
    main()
