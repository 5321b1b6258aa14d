"""fp4mm's own implementations as the benchmark sees them, and the full registry.

Optional pieces (weight pre-packing, ``nvfp4_w4a16_mm``, a fast quantiser) are found by
:func:`find_callable`, so the harness runs whatever exists in this checkout and skips the rest.
"""

from __future__ import annotations

import importlib

import torch

import fp4mm
from fp4mm import reference
from fp4mm.bench.cases import Impl, Problem, Runner, tensor_bytes


def find_callable(*paths: str):
    """The first of ``"module:attr"`` paths that imports and is callable, else None."""
    for path in paths:
        module, _, attr = path.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            continue
        if callable(obj):
            return obj
    return None


def prepack_nvfp4():
    return find_callable("fp4mm:prepack_nvfp4_weight", "fp4mm.ops:prepack_nvfp4_weight")


def prepack_w4a16():
    return find_callable("fp4mm:prepack_w4a16_weight", "fp4mm.ops:prepack_w4a16_weight")


def nvfp4_w4a16_op():
    return find_callable("fp4mm:nvfp4_w4a16_mm", "fp4mm.ops:nvfp4_w4a16_mm")


def fast_quantizer():
    """A Triton NVFP4 quantiser (``x -> (data, scales, global_scale)``), or None. The public
    ``fp4mm.quantize_nvfp4`` counts only once it is no longer the torch twin."""
    from fp4mm.formats.nvfp4 import quantize_nvfp4 as twin

    for path in ("fp4mm.kernels.quantize_nvfp4:quantize_nvfp4_triton",
                 "fp4mm.kernels.quantize_nvfp4:quantize_nvfp4",
                 "fp4mm.kernels.quantize:quantize_nvfp4_triton",
                 "fp4mm.ops:quantize_nvfp4", "fp4mm:quantize_nvfp4"):
        found = find_callable(path)
        if found is not None and found is not twin:
            return found
    return None


def _copies(problem: Problem, *tensors):
    """``[tensors, clone, clone, ...]``: enough copies to exceed 3x the L2 cache."""
    n = problem.copies(tensor_bytes(*tensors))
    return [tuple(tensors)] + [tuple(t.clone() for t in tensors) for _ in range(n - 1)]


def _outs(problem: Problem, n: int, dtype) -> list[torch.Tensor]:
    c = problem.case
    return [torch.empty((c.M, c.N), dtype=dtype, device=problem.device) for _ in range(n)]


def _build_nvfp4(prepacked: bool):
    def build(case, problem: Problem, ctx):
        d = problem.data
        weights = (d["w_q"], d["w_scales"])
        extra = {}
        if prepacked:
            ws = _prepacked_copies(problem, weights, ctx, extra)
            if ws is None:
                return None
            call = lambda i, out: fp4mm.nvfp4_mm(d["x_q"], d["x_scales"], ws[i], None,  # noqa: E731
                                                 d["alpha"], out=out)
        else:
            ws = _copies(problem, *weights)
            call = lambda i, out: fp4mm.nvfp4_mm(d["x_q"], d["x_scales"], *ws[i],  # noqa: E731
                                                 d["alpha"], out=out)
        outs = _outs(problem, len(ws), torch.float16)
        return Runner(run=lambda i: call(i, outs[i]), copies=len(ws), prepacked=prepacked,
                      extra=extra)
    return build


def _prepacked_copies(problem: Problem, weights, ctx, extra: dict):
    """Pre-packed weight copies (the packing time goes to ``extra["prepack_us"]``), or None when
    there is no ``prepack_nvfp4_weight`` or it does not take this shape (a ValueError)."""
    prepack = prepack_nvfp4()
    if prepack is None:
        return None
    try:
        first = prepack(*weights)
    except ValueError:
        return None
    extra["prepack_us"] = ctx.time(lambda: prepack(*weights))[0] * 1e3
    return [first] + [prepack(w.clone(), s.clone()) for w, s in _copies(problem, *weights)[1:]]


def _build_w4a16(prepacked: bool):
    def build(case, problem: Problem, ctx):
        d = problem.data
        weights = (d["w_q"], d["scales"])
        g = d["group_size"]
        extra = {}
        if prepacked:
            prepack = prepack_w4a16()
            if prepack is None:
                return None
            extra["prepack_us"] = ctx.time(lambda: prepack(*weights, g))[0] * 1e3
            ws = [prepack(*weights, g)] + [prepack(w.clone(), s.clone(), g) for w, s in
                                           _copies(problem, *weights)[1:]]
            call = lambda i, out: fp4mm.w4a16_mm(d["x"], ws[i], None, g, out=out)  # noqa: E731
        else:
            ws = _copies(problem, *weights)
            call = lambda i, out: fp4mm.w4a16_mm(d["x"], *ws[i], g, out=out)  # noqa: E731
        outs = _outs(problem, len(ws), d["x"].dtype)
        return Runner(run=lambda i: call(i, outs[i]), copies=len(ws), prepacked=prepacked,
                      extra=extra)
    return build


def _build_nvfp4_w4a16(prepacked: bool):
    def build(case, problem: Problem, ctx):
        op = nvfp4_w4a16_op()
        if op is None:
            return None
        d = problem.data
        extra = {}
        if prepacked:
            ws = _prepacked_copies(problem, (d["w_q"], d["w_scales"]), ctx, extra)
            if ws is None:
                return None
            ws = [(w, None) for w in ws]
        else:
            ws = _copies(problem, d["w_q"], d["w_scales"])
        outs = _outs(problem, len(ws), d["x"].dtype)
        return Runner(run=lambda i: op(d["x"], *ws[i], d["w_global_scale"], out=outs[i]),
                      copies=len(ws), prepacked=prepacked, extra=extra)
    return build


def _build_solve(case, problem: Problem, ctx):
    """The challenge's own entry point (raw high-first bytes every call), challenge cases only."""
    if "challenge" not in case.suites:
        return None
    d = problem.data
    M, N, K = case.M, case.N, case.K
    if case.op == "nvfp4_mm":
        ws = _copies(problem, d["w_q"], d["w_scales"])
        outs = _outs(problem, len(ws), torch.float16)
        run = lambda i: fp4mm.solve(d["x_q"], d["x_scales"], *ws[i], d["alpha"],  # noqa: E731
                                    outs[i], M, N, K) or outs[i]
        expected = lambda: reference.nvfp4_mm(d["x_q"], d["x_scales"], d["w_q"],  # noqa: E731
                                              d["w_scales"], d["alpha"], order="high_first")
    elif case.op == "w4a16_mm":
        ws = _copies(problem, d["w_q"], d["scales"])
        outs = _outs(problem, len(ws), torch.float16)
        g = d["group_size"]
        run = lambda i: fp4mm.solve_w4a16(d["x"], *ws[i], outs[i], M, N, K, g) or outs[i]  # noqa: E731,E501
        expected = lambda: reference.w4a16_mm(d["x"], d["w_q"], d["scales"], g,  # noqa: E731
                                              order="high_first")
    else:
        return None
    return Runner(run=run, copies=len(ws), expected=expected,
                  note="challenge entry point: high-first bytes, any re-layout included")


def _build_quantize(static: bool):
    """The fast quantiser with a given global scale (``static``: one pass, the issue's bar) or
    computing it (dynamic: an amax pass first)."""
    def build(case, problem: Problem, ctx):
        quantize = fast_quantizer()
        if quantize is None:
            return None
        from fp4mm.formats import nvfp4_global_scale

        x = problem.data["x"]
        xs = _copies(problem, x)
        if not static:
            return Runner(run=lambda i: tuple(quantize(xs[i][0]))[:3], copies=len(xs),
                          check="exact", note="dynamic: amax pass, then quantise")
        # the codec's own global scale (computed on the CPU), kept on the device: no host sync
        gs = nvfp4_global_scale(x.cpu()).to(problem.device)
        return Runner(run=lambda i: tuple(quantize(xs[i][0], gs))[:3], copies=len(xs),
                      check="exact", note="static: global scale given (a device tensor)")
    return build


def _build_single_kernel(kind: str):
    """One kernel forced (``fp4mm_gemm`` / ``fp4mm_gemv`` / ``fp4mm_gemv_sm90`` /
    ``fp4mm_gemv_fp8_sm90``), M-sweep cases only: the dispatched ``fp4mm`` must be within 5% of
    the best of them at every M (issue 4)."""
    def build(case, problem: Problem, ctx):
        if "sweep" not in case.suites or (kind == "gemv" and case.M > GEMV_SWEEP_MAX_M):
            return None
        launch = find_callable(f"fp4mm.kernels.fp4_{kind}:nvfp4_mm_{kind}")
        if launch is None:
            return None
        if kind == "gemv_sm90":  # only where it applies: Hopper, its largest token tile
            from fp4mm.kernels import fp4_gemv_sm90

            if case.M > fp4_gemv_sm90.MAX_M or not fp4_gemv_sm90.is_hopper(problem.device):
                return None
        if kind == "gemv_fp8_sm90":  # 1-4 tokens, K % 256 == 0, Hopper
            from fp4mm.kernels import fp4_gemv_fp8_sm90

            if not fp4_gemv_fp8_sm90.is_supported(problem.device, case.M, case.K):
                return None
        d = problem.data
        ws = _copies(problem, d["w_q"], d["w_scales"])
        outs = _outs(problem, len(ws), torch.float16)

        def run(i):
            launch(d["x_q"], d["x_scales"], *ws[i], float(d["alpha"]), "low_first", outs[i])
            return outs[i]
        return Runner(run=run, copies=len(ws), note=f"the {kind} kernel forced")
    return build


GEMV_SWEEP_MAX_M = 256  # a GEMV above this M is far off the GEMM and slow to time

OURS = (
    Impl("fp4mm", frozenset({"nvfp4_mm"}), _build_nvfp4(False), kind="ours"),
    Impl("fp4mm", frozenset({"nvfp4_mm"}), _build_nvfp4(True), kind="ours"),
    Impl("fp4mm", frozenset({"w4a16_mm"}), _build_w4a16(False), kind="ours"),
    Impl("fp4mm", frozenset({"w4a16_mm"}), _build_w4a16(True), kind="ours"),
    Impl("fp4mm", frozenset({"nvfp4_w4a16_mm"}), _build_nvfp4_w4a16(False), kind="ours"),
    Impl("fp4mm", frozenset({"nvfp4_w4a16_mm"}), _build_nvfp4_w4a16(True), kind="ours"),
    Impl("fp4mm", frozenset({"quantize_nvfp4"}), _build_quantize(static=True), kind="ours"),
    Impl("fp4mm_dynamic", frozenset({"quantize_nvfp4"}), _build_quantize(static=False),
         kind="ours"),
    Impl("fp4mm_solve", frozenset({"nvfp4_mm", "w4a16_mm"}), _build_solve, kind="ours"),
    Impl("fp4mm_gemm", frozenset({"nvfp4_mm"}), _build_single_kernel("gemm"), kind="ours"),
    Impl("fp4mm_gemv", frozenset({"nvfp4_mm"}), _build_single_kernel("gemv"), kind="ours"),
    Impl("fp4mm_gemv_sm90", frozenset({"nvfp4_mm"}), _build_single_kernel("gemv_sm90"),
         kind="ours"),
    Impl("fp4mm_gemv_fp8_sm90", frozenset({"nvfp4_mm"}), _build_single_kernel("gemv_fp8_sm90"),
         kind="ours"),
)


def all_impls() -> tuple[Impl, ...]:
    """fp4mm's implementations, then the baselines and peers (imports Triton)."""
    from fp4mm.bench.baselines import BASELINES

    return OURS + BASELINES
