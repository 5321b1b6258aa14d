# ruff: noqa: B023  (closures are used inside their loop iteration)
"""Probe (session 32): one shared-memory carve-out for every fp4mm kernel, so that a kernel
launched early by PDL can start beside the kernel before it.

``gpu_pdl_timeline.py`` found why a pre-pass that lets the next kernel launch at its start made
the TMA GEMV 11-44 us slower: the GEMV's early CTAs ran only on the SMs the pre-pass left free
(128 CTAs on 23 SMs, 6 on the busiest, at 4096 x 14336). With the pre-pass's preferred carve-out
at the maximum they spread over 128 SMs and the pair beat the late trigger. The same setting on
the activation quantiser made ``NVFP4Linear`` slower where its GEMV is the register ring or the
E4M3 GEMV (8192 -> 8192 at 16 tokens 25 -> 36 us): the two kernels of a pair seem to need the
same carve-out to share an SM. So this probe sets one carve-out on every kernel Triton loads (a
``kernel_load_end_hook`` plus the ones already loaded) and times, for ``default`` (-1, the
driver's choice), ``max`` (100: 228 KB shared, the rest L1) and ``half`` (50):

- ``NVFP4Linear`` W4A4 layers (static scale, bf16 x, the quantiser's early launch) at the points
  where the early launch cost 1-5 us in session 32's sweep and where the max carve-out on the
  quantiser alone hurt;
- the decode-bar rows on their own (18432 x 3072, M = 1 / 4 / 16, each op; no PDL producer
  before them), where a smaller L1 could cost;
- W4A4 at 16-32 tokens through the pre-pass and the TMA GEMV with the early trigger (``pair``)
  beside the op (the late trigger);
- the challenge GEMM (2048 x 18432 x 3072, prepacked).

CUDA-graph medians over 4 weight copies, 3 rounds, the configurations' order rotated each round
(a configuration applies to the whole process, so each round sets it and captures new graphs).
Usage on an sm_90 machine: ``python -u scripts/gpu_carveout.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import ctypes
import os
import statistics as st
import sys

import torch
from triton import knobs

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemv_tma_sm90  # noqa: E402
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4  # noqa: E402
from fp4mm.nn import NVFP4Linear  # noqa: E402
from scripts.gpu_decode import Problem, save_rows, seeded_linear, time_graph  # noqa: E402

_CUDA = ctypes.CDLL("libcuda.so.1")
_CARVEOUT = 9  # CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
LOADED = []  # CUfunction handles of every kernel loaded since import
CARVE = [-1]


def _set(function, percent):
    rc = _CUDA.cuFuncSetAttribute(ctypes.c_void_p(function), _CARVEOUT, int(percent))
    assert rc == 0, f"cuFuncSetAttribute: CUresult {rc}"


def _on_load(module, function, name, metadata_group, hash):
    LOADED.append(function)
    _set(function, CARVE[0])


def carve_all(percent):
    CARVE[0] = percent
    for f in LOADED:
        _set(f, percent)


knobs.runtime.kernel_load_end_hook.add(_on_load)
CONFIGS = {"default": -1, "max": 100, "half": 50}


def main():
    ops = torch.ops.fp4mm
    cases = {}  # name -> [fn(copy i)]
    layer_points = [(14336, 4096, (1, 4, 8, 16)), (12288, 4096, (12,)), (8192, 8192, (1, 12, 16)),
                    (4096, 14336, (8, 16)), (11008, 4096, (16,)), (18944, 3584, (32,))]
    for K, N, tokens in layer_points:
        layers = [NVFP4Linear.from_linear(seeded_linear(K, N, i), mode="w4a4",
                                          activation_scale=672.0) for i in range(4)]
        for M in tokens:
            x = (torch.randn(M, K, device="cuda") * 0.5).bfloat16()
            for la in layers:  # the derived scales refresh on a layer's first call
                la(x)
            cases[f"layer {K}->{N} M={M}"] = [lambda la=la, x=x: la(x) for la in layers]
    N, K = 18432, 3072
    for M in (1, 4, 16, 32):
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        o = torch.empty((M, N), dtype=torch.float16, device="cuda")
        cases[f"nvfp4_mm {N}x{K} M={M}"] = [
            lambda w=w, p=p, o=o: fp4mm.nvfp4_mm(*p.x, *w, p.alpha, out=o) for w in p.w]
    for M in (1, 4, 16):
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
        o = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        cases[f"nvfp4_w4a16 bf16 {N}x{K} M={M}"] = [
            lambda w=w, p=p, o=o: fp4mm.nvfp4_w4a16_mm(p.x[0], *w, 1.0 / p.alpha, out=o)
            for w in p.w]
        p = Problem("w4a16_mm", M, N, K, group=32, copies=4)
        o = torch.empty((M, N), dtype=torch.float16, device="cuda")
        cases[f"w4a16 g32 {N}x{K} M={M}"] = [
            lambda w=w, p=p, o=o: fp4mm.w4a16_mm(p.x[0], *w, 32, out=o) for w in p.w]
    for (N, K), M in (((4096, 14336), 16), ((8192, 8192), 24), ((18432, 3072), 32)):
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        o = torch.empty((M, N), dtype=torch.float16, device="cuda")

        def pair(w, p=p, o=o):
            x16 = dequant_nvfp4(*p.x, dtype=torch.float16, pdl=True)
            fp4_gemv_tma_sm90.gemv_tma_sm90(x16, *w, p.alpha, "low_first", o)

        # (pair bound now: the run of session 32 looked it up when timed, so every "pair
        # early" row ran the last shape's pre-pass on that row's weights; those rows are void)
        cases[f"pair early {N}x{K} M={M}"] = [lambda w=w, pair=pair: pair(w) for w in p.w]
        cases[f"op (late) {N}x{K} M={M}"] = [
            lambda w=w, p=p, o=o: fp4mm.nvfp4_mm(*p.x, *w, p.alpha, out=o) for w in p.w]
    p = Problem("nvfp4_mm", 2048, 18432, 3072, copies=2)
    packs = [fp4mm.prepack_nvfp4_weight(*w) for w in p.w]
    o = torch.empty((2048, 18432), dtype=torch.float16, device="cuda")
    cases["gemm prepacked 2048x18432x3072"] = [
        lambda pk=pk: fp4mm.nvfp4_mm(*p.x, pk, None, p.alpha, out=o) for pk in packs]
    del ops

    for fns in cases.values():  # compile and load everything before the first configuration
        for f in fns:
            f()
    torch.cuda.synchronize()
    print(f"{len(LOADED)} kernels loaded", flush=True)
    names = list(CONFIGS)
    got = {c: {k: [] for k in cases} for c in names}
    for r in range(3):
        for c in names[r % 3:] + names[:r % 3]:
            carve_all(CONFIGS[c])
            for k, fns in cases.items():
                got[c][k].append(time_graph(fns)[0])
        print(f"round {r + 1} done", flush=True)
    carve_all(-1)
    rows = []
    print(f"{'case':44s} " + " ".join(f"{c:>8s}" for c in names))
    for k in cases:
        med = {c: st.median(got[c][k]) for c in names}
        rows.append(dict(case=k, rounds={c: got[c][k] for c in names}, medians=med))
        print(f"{k:44s} " + " ".join(f"{med[c]:8.2f}" for c in names), flush=True)
    save_rows("carveout", rows)


if __name__ == "__main__":
    main()
