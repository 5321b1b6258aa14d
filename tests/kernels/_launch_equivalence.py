"""Every kernel module's launcher, run with a stand-in CUDA driver (``_fake_driver``) through
Triton's dispatch and then through ``fp4mm.kernels.launch``'s cache: for each launch of the
cached (second) pass, whether the compiled kernel's launcher got what Triton's dispatch gave it.

Run in a child process without TRITON_INTERPRET (the interpreter turns ``@triton.jit`` kernels
into CPU functions that cannot be compiled for sm_90): ``python _launch_equivalence.py`` prints
one JSON object, ``{case: {"kernels": [...], "mismatches": [...], "cached": n}}``."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import torch
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def same(a, b) -> bool:
    """Argument equality as the launcher sees it: tensors by shape, strides, dtype and alignment
    (launchers allocate their split-K buffers anew at every call); descriptors field by field,
    the base by address too."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return (a.data_ptr() % 16, a.shape, a.stride(), a.dtype) == (
            b.data_ptr() % 16, b.shape, b.stride(), b.dtype)
    if isinstance(a, TensorDescriptor) and isinstance(b, TensorDescriptor):
        return (a.base.data_ptr() == b.base.data_ptr() and same(a.base, b.base)
                and list(a.shape) == list(b.shape) and list(a.strides) == list(b.strides)
                and a.block_shape == b.block_shape and a.layout == b.layout
                and a.padding == b.padding)
    return type(a) is type(b) and a == b


def cases():
    """(name, call) for each launcher on CPU tensors; nothing runs, so the data is arbitrary."""
    from fp4mm.formats.groupwise import quantize_fp4_groupwise
    from fp4mm.formats.nvfp4 import quantize_nvfp4
    from fp4mm.kernels import (
        dequant_nvfp4,
        fp4_gemm,
        fp4_gemm_sm90,
        fp4_gemv,
        fp4_gemv_fp8_sm90,
        fp4_gemv_sm90,
        fp4_gemv_tma_sm90,
        prepack_sm90,
    )
    from fp4mm.kernels import quantize_nvfp4 as quantiser

    torch.manual_seed(0)
    N, K = 2048 + 40, 1024
    qw = quantize_nvfp4(torch.randn(N, K))
    ws = qw.scales.view(torch.uint8)
    gq = quantize_fp4_groupwise(torch.randn(N, K), 32)
    out = {m: torch.empty(m, N, dtype=torch.bfloat16) for m in (1, 4, 13, 16, 256)}
    x = {m: torch.randn(m, K, dtype=torch.bfloat16) for m in (1, 4, 13, 16, 256)}
    qx = {m: quantize_nvfp4(torch.randn(m, K)) for m in (1, 4, 8, 256)}
    xs = {m: q.scales.view(torch.uint8) for m, q in qx.items()}
    o8 = torch.empty(8, N, dtype=torch.float16)
    x16h, o16h, o1h, x32 = x[16].half(), out[16].half(), out[1].half(), x[4].float()
    gs = torch.tensor([0.5])
    packed = fp4_gemm_sm90.prepack_weight_sm90(qw.data, ws)
    return [
        ("ring GEMV, bf16 x, 1 token", lambda: fp4_gemv_sm90.gemv_sm90(
            x[1], None, qw.data, ws, 0.5, "low_first", out[1])),
        ("ring GEMV, NVFP4 x, 8 tokens, alpha on the device", lambda: fp4_gemv_sm90.gemv_sm90(
            qx[8].data, xs[8], qw.data, ws, gs, "low_first", o8)),
        ("E4M3 GEMV, 1 token", lambda: fp4_gemv_fp8_sm90.gemv_fp8_sm90(
            qx[1].data, xs[1], qw.data, ws, 0.5, o1h)),
        ("E4M3 GEMV, 4 tokens", lambda: fp4_gemv_fp8_sm90.gemv_fp8_sm90(
            qx[4].data, xs[4], qw.data, ws, 0.5, out[4])),
        ("TMA GEMV, NVFP4 weights, 13 tokens", lambda: fp4_gemv_tma_sm90.gemv_tma_sm90(
            x[13], qw.data, ws, 0.5, "low_first", out[13])),
        ("TMA GEMV, groups of 32, 16 tokens", lambda: fp4_gemv_tma_sm90.gemv_tma_sm90(
            x16h, gq.data, gq.scales, 0.5, "low_first", o16h, group_size=32)),
        ("Gluon GEMM, 256 tokens", lambda: fp4_gemm_sm90.gemm_sm90_dense_x(
            x[256], packed, 0.5, out[256])),
        ("Gluon GEMM, split K, 16 tokens", lambda: fp4_gemm_sm90.gemm_sm90_dense_x(
            x[16], packed, 0.5, out[16])),
        ("prepack", lambda: prepack_sm90.prepack_sm90_triton(qw.data, ws)),
        ("prepack, group scales", lambda: prepack_sm90.group_scales_sm90_triton(
            gq.scales, 32, 32)),
        ("Triton GEMV, NVFP4 x, 4 tokens", lambda: fp4_gemv.nvfp4_mm_gemv(
            qx[4].data, xs[4], qw.data, ws, 0.5, "low_first", out[4])),
        ("Triton GEMM, 256 tokens", lambda: fp4_gemm.nvfp4_mm_gemm(
            qx[256].data, xs[256], qw.data, ws, 0.5, "low_first", out[256])),
        ("quantiser, global scale from amax", lambda: quantiser.quantize_nvfp4_triton(
            x[256])),
        ("quantiser, static scale", lambda: quantiser.quantize_nvfp4_triton(
            x[16], 100.0)),
        ("quantiser, fp32 input", lambda: quantiser.quantize_nvfp4_triton(x32)),
        ("dequantiser", lambda: dequant_nvfp4.dequant_nvfp4(qw.data, ws)),
    ]


def main():
    from fp4mm.kernels import launch as L

    fake_driver = _load("_fake_driver")
    L.CHECK = True
    results = {}
    with fake_driver.fake_sm90_driver() as fake:
        for name, fn in cases():
            L.ENABLED = False
            fake.launches.clear()
            fn()
            want = list(fake.launches)
            L.ENABLED = True
            L.clear_cache()
            fn()  # misses: Triton's path fills the cache
            fake.launches.clear()
            fn()
            got = list(fake.launches)
            bad = []
            if [k for k, _ in want] != [k for k, _ in got]:
                bad.append(f"kernels {[k for k, _ in want]} vs {[k for k, _ in got]}")
            for (kernel, w), (_, g) in zip(want, got):
                if len(w) != len(g):
                    bad.append(f"{kernel}: {len(w)} vs {len(g)} launcher arguments")
                    continue
                if g[6:9] != (None, None, None) or (w[7] is not None and w[7].calls):
                    bad.append(f"{kernel}: launch metadata or hooks")
                bad += [f"{kernel}: argument {i}" for i in (*range(6), *range(9, len(w)))
                        if not same(w[i], g[i])]
            results[name] = dict(kernels=[k for k, _ in want], mismatches=bad,
                                 cached=len(L._cache))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(HERE, "..", ".."))
    main()
