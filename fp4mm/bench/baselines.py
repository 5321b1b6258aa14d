"""The baselines and peers timed beside fp4mm, and the two small Triton kernels they need.

- ``cublas_bf16`` / ``cublas_fp16``: ``torch.matmul`` on operands dequantised beforehand (exact
  in 16 bits: E2M1 x E4M3 products need 5 significant bits). The classic ceiling.
- ``torch_dequant_mm``: what a PyTorch user writes: dequantise both operands with a 256-entry
  lookup table each call, then an fp16 (bf16 for bf16 activations) matmul.
- ``triton_dot_scaled_mxfp4``: ``tl.dot_scaled`` with e2m1 operands and e8m0 scales (group 32):
  Triton's own FP4 path, emulated on sm_90. It computes MXFP4, not NVFP4 (E4M3 group-16 scales do
  not compile on sm_90), on the same packed bytes with e8m0 scales in {0.5, 1, 2}; it is checked
  against its own torch twin, not against the NVFP4 oracle.
- ``quack_w4a16`` (and ``quack_w4a16_plus_xdequant`` for W4A4 rows, which adds dequantising the
  activations to bf16 with :func:`dequant_nvfp4_triton`): quack's NVFP4 weight-only GEMM (bf16
  activations and output, weights pre-packed by ``fmt.prepare``), when ``import quack`` works. It
  gets the case's own NVFP4 bytes and alpha as ``tensor_scale``, so it is checked like fp4mm;
  ``w4a16_mm`` weights are re-quantised to NVFP4 for it and checked by relative L2 error.
- ``torch_quantize_nvfp4``: the torch twin of the NVFP4 quantiser (``fp4mm.formats``).
"""

from __future__ import annotations

import importlib

import torch
import triton
import triton.language as tl

from fp4mm import reference
from fp4mm.bench.cases import Impl, Problem, Runner, tensor_bytes
from fp4mm.formats import E2M1_VALUES, dequantize_fp4_groupwise, dequantize_nvfp4_blocks
from fp4mm.formats.nvfp4 import quantize_nvfp4 as quantize_nvfp4_torch
from fp4mm.kernels.host import cdiv

NVFP4_OPS = frozenset({"nvfp4_mm"})
MATMUL_OPS = frozenset({"nvfp4_mm", "w4a16_mm", "nvfp4_w4a16_mm"})
MX_GROUP = 32
E8M0_BIAS = 127
_MX_GROUP = tl.constexpr(MX_GROUP)  # the same numbers, readable inside @triton.jit
_E8M0_BIAS = tl.constexpr(E8M0_BIAS)


# ----------------------------------------------------------------------------- Triton kernels
@triton.jit
def _mxfp4_mm_kernel(a_ptr, sa_ptr, b_ptr, sb_ptr, c_ptr, alpha, M, N, K,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
    """c (M, N) fp16 = alpha * mx(a) @ mx(b)^T; a (M, K/2), b (N, K/2) e2m1 packed low-first,
    sa (M, K/32), sb (N, K/32) e8m0; K % BLOCK_K == 0."""
    tl.static_assert(BLOCK_K % 64 == 0)
    pid = tl.program_id(0)
    grid_m = tl.cdiv(M, BLOCK_M)
    grid_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * grid_n  # grouped launch order, for L2 reuse
    first_m = (pid // width) * GROUP_M
    group_rows = min(grid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % group_rows
    pid_n = (pid % width) // group_rows
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = tl.arange(0, BLOCK_K // 2)
    offs_s = tl.arange(0, BLOCK_K // _MX_GROUP)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_ptrs = a_ptr + offs_m[:, None] * (K // 2) + offs_b[None, :]
    b_ptrs = b_ptr + offs_n[None, :] * (K // 2) + offs_b[:, None]
    sa_ptrs = sa_ptr + offs_m[:, None] * (K // _MX_GROUP) + offs_s[None, :]
    sb_ptrs = sb_ptr + offs_n[:, None] * (K // _MX_GROUP) + offs_s[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, K // BLOCK_K):
        a = tl.load(a_ptrs, mask=mask_m[:, None], other=0)
        b = tl.load(b_ptrs, mask=mask_n[None, :], other=0)
        sa = tl.load(sa_ptrs, mask=mask_m[:, None], other=_E8M0_BIAS)
        sb = tl.load(sb_ptrs, mask=mask_n[:, None], other=_E8M0_BIAS)
        acc = tl.dot_scaled(a, sa, "e2m1", b, sb, "e2m1", acc)
        a_ptrs += BLOCK_K // 2
        b_ptrs += BLOCK_K // 2
        sa_ptrs += BLOCK_K // _MX_GROUP
        sb_ptrs += BLOCK_K // _MX_GROUP
    c = (acc * alpha).to(tl.float16)
    tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], c,
             mask=mask_m[:, None] & mask_n[None, :])


def mxfp4_mm_triton(a, sa, b, sb, alpha: float, out, block_m: int = 128, block_n: int = 128,
                    block_k: int = 128, num_warps: int = 8, num_stages: int = 3):
    """``out`` fp16 (M, N) = alpha * mx(a) @ mx(b)^T via ``tl.dot_scaled`` (see the kernel)."""
    M, N, K = a.shape[0], b.shape[0], a.shape[1] * 2
    if K % block_k != 0:
        raise ValueError(f"K: the MXFP4 baseline needs K % {block_k} == 0, got K = {K}")
    grid = (cdiv(M, block_m) * cdiv(N, block_n),)
    _mxfp4_mm_kernel[grid](a, sa, b, sb, out, float(alpha), M, N, K, BLOCK_M=block_m,
                           BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=num_warps,
                           num_stages=num_stages)
    return out


@triton.jit
def _nvfp4_dequant_kernel(q_ptr, s_ptr, out_ptr, total, K, BLOCK: tl.constexpr):
    """out (R, K) = e2m1(q) * e4m3(s); q (R, K/2) packed low-first, s (R, K/16) E4M3 bytes."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # element index
    mask = offs < total
    byte = tl.load(q_ptr + offs // 2, mask=mask, other=0)
    code = (byte >> ((offs % 2) * 4).to(tl.uint8)) & 0xF
    row = offs // K
    s = tl.load(s_ptr + row * (K // 16) + (offs % K) // 16, mask=mask, other=0)
    scale = s.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    e = ((code >> 1) & 3).to(tl.int32)
    m = (code & 1).to(tl.float32)
    pow2 = (1 << tl.maximum(e - 1, 0)).to(tl.float32)
    mag = tl.where(e == 0, 0.5 * m, (1.0 + 0.5 * m) * pow2)
    value = tl.where((code & 8) != 0, -mag, mag) * scale
    tl.store(out_ptr + offs, value.to(out_ptr.dtype.element_ty), mask=mask)


def dequant_nvfp4_triton(q: torch.Tensor, s: torch.Tensor, dtype=torch.bfloat16,
                         out: torch.Tensor | None = None) -> torch.Tensor:
    """NVFP4 block dequantisation ``e2m1(q) * e4m3(s)`` to a 16-bit ``(R, K)`` tensor (exact).

    q: uint8 (R, K/2) packed low-first, contiguous; s: uint8 (R, K/16) E4M3 bytes, contiguous.
    """
    R, K = q.shape[0], q.shape[1] * 2
    if out is None:
        out = torch.empty((R, K), dtype=dtype, device=q.device)
    block = 1024
    _nvfp4_dequant_kernel[(cdiv(R * K, block),)](q, s, out, R * K, K, BLOCK=block)
    return out


# ----------------------------------------------------------------------------- torch helpers
def _pair_lut(dtype, device) -> torch.Tensor:
    """(256, 2) table: byte -> (value of the low nibble, value of the high nibble)."""
    values = torch.tensor(E2M1_VALUES, dtype=torch.float32)
    b = torch.arange(256)
    return torch.stack((values[b & 0xF], values[b >> 4]), dim=1).to(dtype=dtype, device=device)


def lut_dequant_nvfp4(q, s, lut) -> torch.Tensor:
    """The plain torch path: look both nibbles up, times the E4M3 scale, in ``lut.dtype``."""
    R, K = q.shape[0], q.shape[1] * 2
    vals = lut[q.int()].view(R, K // 16, 16)
    scale = s.view(torch.float8_e4m3fn).to(lut.dtype).unsqueeze(-1)
    return (vals * scale).view(R, K)


def lut_dequant_groupwise(q, scales, group_size: int, lut) -> torch.Tensor:
    R, K = q.shape[0], q.shape[1] * 2
    vals = lut[q.int()].view(R, K // group_size, group_size)
    return (vals * scales.to(lut.dtype).unsqueeze(-1)).view(R, K)


def dequantised_x(problem: Problem, dtype) -> torch.Tensor:
    """The activations as a 16-bit (M, K) tensor (exact), cached on the problem."""
    d = problem.data
    if problem.case.op == "nvfp4_mm":
        make = lambda: dequantize_nvfp4_blocks(d["x_q"], d["x_scales"]).to(dtype)  # noqa: E731
    else:
        make = lambda: d["x"].to(dtype)  # noqa: E731
    return problem.derived(f"x_{dtype}", make)


def dequantised_w(problem: Problem, dtype) -> torch.Tensor:
    """The weights as a 16-bit (N, K) tensor, cached (exact for NVFP4; fp16 group scales times
    E2M1 may round in bf16)."""
    d = problem.data
    if problem.case.op == "w4a16_mm":
        make = lambda: dequantize_fp4_groupwise(d["w_q"], d["scales"], d["group_size"]).to(dtype)  # noqa: E731,E501
    else:
        make = lambda: (dequantize_nvfp4_blocks(d["w_q"], d["w_scales"])  # noqa: E731
                        / d.get("w_global_scale", 1.0)).to(dtype)
    return problem.derived(f"w_{dtype}", make)


def _scale_out(problem: Problem):
    """Turn a plain matmul output into the op's value (times alpha for W4A4)."""
    alpha = problem.data.get("alpha") or 1.0
    return lambda out: out.float() * alpha


def _clones(t: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [t] + [t.clone() for _ in range(n - 1)]


# ----------------------------------------------------------------------------- builders
def _build_cublas(dtype):
    def build(case, problem: Problem, ctx):
        x = dequantised_x(problem, dtype)
        w = dequantised_w(problem, dtype)
        ws = _clones(w, problem.copies(tensor_bytes(w)))
        outs = [torch.empty((case.M, case.N), dtype=dtype, device=problem.device) for _ in ws]
        runner = Runner(run=lambda i: torch.matmul(x, ws[i].t(), out=outs[i]), copies=len(ws),
                        result=_scale_out(problem))
        if case.op == "w4a16_mm" and dtype == torch.bfloat16:
            # bf16 cannot hold the fp16 activations and scales: close, not within the challenge's
            # fp16 tolerance at K in the thousands.
            runner.check, runner.rel_l2_tol = "rel_l2", 1e-2
            runner.note = "bf16 rounds the fp16 operands: checked by relative L2 error <= 1%"
        return runner
    return build


def _build_torch_dequant(case, problem: Problem, ctx):
    d = problem.data
    dtype = d["x"].dtype if case.op == "nvfp4_w4a16_mm" else torch.float16
    lut = _pair_lut(dtype, problem.device)
    if case.op == "nvfp4_mm":
        ws = [(d["w_q"], d["w_scales"])]
        ws += [(d["w_q"].clone(), d["w_scales"].clone())
               for _ in range(problem.copies(tensor_bytes(*ws[0])) - 1)]

        def run(i):
            x = lut_dequant_nvfp4(d["x_q"], d["x_scales"], lut)
            return torch.matmul(x, lut_dequant_nvfp4(*ws[i], lut).t())
    else:
        scales = d["scales"] if case.op == "w4a16_mm" else d["w_scales"]
        ws = [(d["w_q"], scales)]
        ws += [(d["w_q"].clone(), scales.clone())
               for _ in range(problem.copies(tensor_bytes(*ws[0])) - 1)]
        x = d["x"]

        def run(i):
            if case.op == "w4a16_mm":
                w = lut_dequant_groupwise(*ws[i], d["group_size"], lut)
            else:
                w = lut_dequant_nvfp4(*ws[i], lut)
            return torch.matmul(x, w.t())
    return Runner(run=run, copies=len(ws), result=_scale_out(problem))


def _mx_twin(a, sa, b, sb, alpha) -> torch.Tensor:
    """float32 torch twin of the MXFP4 kernel."""
    lut = _pair_lut(torch.float32, a.device)

    def deq(q, s):
        vals = lut[q.int()].reshape(q.shape[0], -1)
        scale = torch.exp2(s.float() - E8M0_BIAS).repeat_interleave(MX_GROUP, dim=1)
        return vals * scale
    with reference._ieee_fp32():
        return (deq(a, sa) @ deq(b, sb).t()) * alpha


def _build_mxfp4(case, problem: Problem, ctx):
    if problem.device.type != "cuda" or case.K % 128 != 0:
        return None
    d = problem.data
    gen = torch.Generator().manual_seed(1)
    sa = torch.randint(E8M0_BIAS - 1, E8M0_BIAS + 2, (case.M, case.K // MX_GROUP),
                       dtype=torch.uint8, generator=gen).to(problem.device)
    sb = torch.randint(E8M0_BIAS - 1, E8M0_BIAS + 2, (case.N, case.K // MX_GROUP),
                       dtype=torch.uint8, generator=gen).to(problem.device)
    ws = [(d["w_q"], sb)]
    ws += [(d["w_q"].clone(), sb.clone()) for _ in range(problem.copies(tensor_bytes(*ws[0])) - 1)]
    outs = [torch.empty((case.M, case.N), dtype=torch.float16, device=problem.device) for _ in ws]
    alpha = d["alpha"]
    return Runner(
        run=lambda i: mxfp4_mm_triton(d["x_q"], sa, ws[i][0], ws[i][1], alpha, outs[i]),
        copies=len(ws), expected=lambda: _mx_twin(d["x_q"], sa, d["w_q"], sb, alpha),
        note="MXFP4 (e8m0 scales, group 32), checked against its own twin")


def quack_module():
    """``(gemm_w4a16, W4_FORMATS)`` from quack, or None when it does not import."""
    try:
        gemm_w4 = importlib.import_module("quack.gemm_w4")
        formats = importlib.import_module("quack.operand_transform.formats")
    except Exception:  # noqa: BLE001 - any import failure means "not installed here"
        return None
    return gemm_w4.gemm_w4a16, formats.W4_FORMATS


def _quack_weights(case, problem: Problem, fmt):
    """quack's blobs of the case's weights, and whether they are the very same NVFP4 values.

    quack's NVFP4 format is ours (packed low-first ``(N, K/2)``, E4M3 ``(N, K/16)``), so NVFP4
    weights go in unchanged and the product is exact; W4A16 group-32 fp16 scales are not NVFP4,
    so those weights are re-quantised by quack's reference quantiser (same size, not the same
    values)."""
    d = problem.data
    if case.op == "w4a16_mm":
        q, sf = fmt.quantize_reference(dequantised_w(problem, torch.float16).float())
        return fmt.prepare(q, sf), False
    return fmt.prepare(d["w_q"], d["w_scales"].view(torch.float8_e4m3fn)), True


def _build_quack(plus_xdequant: bool):
    def build(case, problem: Problem, ctx):
        if problem.device.type != "cuda" or (plus_xdequant and case.op != "nvfp4_mm"):
            return None
        if case.N % 64 or case.K % 64:
            return None
        mod = quack_module()
        if mod is None:
            return None
        gemm_w4a16, formats = mod
        (blob, sf_blob), exact = _quack_weights(case, problem, formats["nvfp4"])
        ws = [(blob, sf_blob)]
        ws += [(blob.clone(), sf_blob.clone())
               for _ in range(problem.copies(tensor_bytes(blob, sf_blob)) - 1)]
        outs = [torch.empty((case.M, case.N), dtype=torch.bfloat16, device=problem.device)
                for _ in ws]
        d = problem.data
        scale = d.get("alpha") or 1.0 / d.get("w_global_scale", 1.0)

        def gemm(x, i):
            return gemm_w4a16(x, *ws[i], tensor_scale=scale, out=outs[i], n_out=case.N,
                              wformat="nvfp4")
        if plus_xdequant:
            xbuf = torch.empty((case.M, case.K), dtype=torch.bfloat16, device=problem.device)

            def run(i):
                return gemm(dequant_nvfp4_triton(d["x_q"], d["x_scales"], out=xbuf), i)
        else:
            x = dequantised_x(problem, torch.bfloat16)

            def run(i):
                return gemm(x, i)
        runner = Runner(run=run, copies=len(ws), prepacked=True)
        if plus_xdequant:
            runner.note = "x dequantised to bf16 by a Triton kernel, then quack's W4A16 GEMM"
        if not exact:
            runner.check, runner.rel_l2_tol = "rel_l2", 0.05
            runner.note = ("quack re-quantises the W4A16 weights to NVFP4 (own scales): checked "
                           "by relative L2 error <= 5%")
        return runner
    return build


def _build_torch_quantize(case, problem: Problem, ctx):
    x = problem.data["x"]
    xs = _clones(x, problem.copies(tensor_bytes(x)))
    return Runner(run=lambda i: tuple(quantize_nvfp4_torch(xs[i])), copies=len(xs),
                  check="exact")


BASELINES = (
    Impl("cublas_bf16", MATMUL_OPS, _build_cublas(torch.bfloat16)),
    Impl("cublas_fp16", MATMUL_OPS, _build_cublas(torch.float16)),
    Impl("torch_dequant_mm", MATMUL_OPS, _build_torch_dequant),
    Impl("triton_dot_scaled_mxfp4", NVFP4_OPS, _build_mxfp4),
    Impl("quack_w4a16", MATMUL_OPS, _build_quack(False), kind="peer"),
    Impl("quack_w4a16_plus_xdequant", NVFP4_OPS, _build_quack(True), kind="peer"),
    Impl("torch_quantize_nvfp4", frozenset({"quantize_nvfp4"}), _build_torch_quantize),
)
