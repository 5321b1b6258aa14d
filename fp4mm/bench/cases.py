"""What the benchmark runs: cases (op and shape), the suites that group them, their inputs, and
the small types the implementations and the harness share.

A case's inputs are drawn with the challenge's generators (random packed bytes, every code;
E4M3 scales uniform in [0.5, 2); fp16 activations ``0.5 * randn``), never zeros, from a fixed
seed on the CPU and then moved to the device, so every device sees the same data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from fp4mm.challenge.nvfp4 import random_scale_bytes

OPS = ("nvfp4_mm", "w4a16_mm", "nvfp4_w4a16_mm", "quantize_nvfp4")
SUITES = ("challenge", "table5", "decode", "sweep", "quant")
DEFAULT_SUITES = ("challenge", "table5", "decode")

CHALLENGE_ALPHA = 1.0 / 64
W4A16_GROUP = 32
TABLE5_SHAPES = (
    (128, 3072, 3072), (128, 18432, 3072), (1024, 3072, 3072), (1024, 18432, 3072),
    (2048, 3072, 3072), (2048, 18432, 3072), (4096, 3072, 3072),
)
DECODE_SHAPES = ((1, 18432, 3072), (4, 18432, 3072), (16, 18432, 3072), (1, 8192, 8192))
SWEEP_MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SWEEP_NK = (18432, 3072)
QUANT_SHAPE = (8192, 8192)
# Only these run at M-sweep points that no other selected suite asks for (keeps the sweep short).
SWEEP_IMPLS = frozenset({"fp4mm", "fp4mm_gemm", "fp4mm_gemv", "fp4mm_gemv_sm90",
                         "fp4mm_gemv_fp8_sm90", "cublas_bf16", "quack_w4a16",
                         "quack_w4a16_plus_xdequant"})
# The baseline each op's ratio is taken against (same shape, same run).
RATIO_BASELINE = {"nvfp4_mm": "cublas_bf16", "w4a16_mm": "cublas_fp16",
                  "nvfp4_w4a16_mm": "cublas_bf16", "quantize_nvfp4": None}
# The challenge's tolerances (torch.allclose) for each op's output.
TOLERANCE = {"nvfp4_mm": (0.1, 0.05), "w4a16_mm": (0.05, 0.05), "nvfp4_w4a16_mm": (0.05, 0.05)}
DEFAULT_L2_BYTES = 50 * 2**20
MAX_COPIES = 64


@dataclass(frozen=True)
class Case:
    """One op at one shape. ``K`` is the reduction length (for ``quantize_nvfp4``: the row
    length, and ``N`` is unused and 0). ``impls`` limits which implementations run (None: all).
    ``memory_bound`` cases report effective GB/s first, the others TF/s."""

    op: str
    M: int
    N: int
    K: int
    suites: tuple[str, ...]
    group_size: int | None = None
    alpha: float | None = None
    memory_bound: bool = False
    impls: frozenset[str] | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op: expected one of {OPS}, got {self.op!r}")
        for name in ("M", "K"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive size, got {getattr(self, name)}")

    @property
    def key(self) -> tuple:
        return (self.op, self.M, self.N, self.K, self.group_size, self.alpha)

    @property
    def shape(self) -> str:
        if self.op == "quantize_nvfp4":
            return f"{self.M}x{self.K}"
        return f"{self.M}x{self.N}x{self.K}"

    @property
    def flops(self) -> float:
        return 0.0 if self.op == "quantize_nvfp4" else 2.0 * self.M * self.N * self.K

    @property
    def bytes(self) -> int:
        """Bytes that must be read and written once: packed values, scales, activations, out."""
        M, N, K = self.M, self.N, self.K
        if self.op == "nvfp4_mm":
            return (M + N) * (K // 2 + K // 16) + M * N * 2
        if self.op == "w4a16_mm":
            return M * K * 2 + N * K // 2 + N * (K // self.group_size) * 2 + M * N * 2
        if self.op == "nvfp4_w4a16_mm":
            return M * K * 2 + N * (K // 2 + K // 16) + 4 + M * N * 2
        return M * K * 2 + M * (K // 2 + K // 16) + 4  # quantize: bf16 in, packed out

    def allows(self, impl: str) -> bool:
        return self.impls is None or impl in self.impls


def _nvfp4(M, N, K, suites, **kw) -> Case:
    return Case("nvfp4_mm", M, N, K, suites, alpha=CHALLENGE_ALPHA, **kw)


def suite_cases(suite: str, shapes: Iterable[tuple[int, int, int]] | None = None,
                have_nvfp4_w4a16: bool = True) -> list[Case]:
    """The cases of one suite; ``shapes`` (M, N, K) replaces the suite's own shapes."""
    if suite not in SUITES:
        raise ValueError(f"suite: expected one of {SUITES}, got {suite!r}")
    s = (suite,)
    if suite == "challenge":
        if shapes is not None:
            return [c for M, N, K in shapes for c in (
                _nvfp4(M, N, K, s), Case("w4a16_mm", M, N, K, s, group_size=W4A16_GROUP))]
        return [_nvfp4(2048, 18432, 3072, s),
                Case("w4a16_mm", 2048, 8192, 3072, s, group_size=W4A16_GROUP)]
    if suite == "table5":
        return [_nvfp4(M, N, K, s) for M, N, K in (shapes or TABLE5_SHAPES)]
    if suite == "decode":
        cases = []
        for M, N, K in shapes or DECODE_SHAPES:
            cases.append(_nvfp4(M, N, K, s, memory_bound=True))
            cases.append(Case("w4a16_mm", M, N, K, s, group_size=W4A16_GROUP, memory_bound=True))
            if have_nvfp4_w4a16:
                cases.append(Case("nvfp4_w4a16_mm", M, N, K, s, memory_bound=True))
        return cases
    if suite == "sweep":
        points = shapes or [(M, *SWEEP_NK) for M in SWEEP_MS]
        return [_nvfp4(M, N, K, s, memory_bound=M <= 64, impls=SWEEP_IMPLS) for M, N, K in points]
    points = shapes or [(QUANT_SHAPE[0], 0, QUANT_SHAPE[1])]
    return [Case("quantize_nvfp4", M, 0, K, s, memory_bound=True) for M, _, K in points]


def select_cases(suites: Iterable[str], shapes=None, have_nvfp4_w4a16: bool = True) -> list[Case]:
    """Cases of all ``suites``, in order, with duplicates (same op, shape, group, alpha) merged:
    the merged case lists every suite and runs the union of their implementations."""
    merged: dict[tuple, Case] = {}
    for suite in suites:
        for case in suite_cases(suite, shapes, have_nvfp4_w4a16):
            old = merged.get(case.key)
            if old is None:
                merged[case.key] = case
                continue
            impls = None if old.impls is None or case.impls is None else old.impls | case.impls
            merged[case.key] = replace(old, suites=old.suites + case.suites, impls=impls,
                                       memory_bound=old.memory_bound or case.memory_bound)
    return list(merged.values())


_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``"2048x18432x3072,1x8192x8192"`` to ``[(M, N, K), ...]``; ``MxK`` means N = 0 (for the
    quantiser)."""
    shapes = []
    for item in text.split(","):
        if not item.strip():
            continue
        m = _SHAPE_RE.match(item)
        if m is None:
            raise ValueError(f"--shapes: expected MxNxK (or MxK) items separated by commas, "
                             f"got {item!r}")
        a, b, c = m.groups()
        M, N, K = (int(a), int(b), int(c)) if c is not None else (int(a), 0, int(b))
        if M <= 0 or K <= 0 or K % 32 != 0:
            raise ValueError(f"--shapes: {item!r}: M and K must be positive and K a multiple of "
                             "32 (NVFP4 blocks of 16, MXFP4 groups of 32)")
        shapes.append((M, N, K))
    if not shapes:
        raise ValueError("--shapes: no shape given")
    return shapes


def impl_label(row: dict) -> str:
    """A result row's implementation label: ``fp4mm (prepacked)`` for fp4mm's pre-packed
    weights, else the impl name."""
    if row.get("prepacked") and row.get("kind") == "ours":
        return f"{row['impl']} (prepacked)"
    return row["impl"]


# Display order of implementation labels in tables and plots (others follow, sorted).
IMPL_ORDER = ("fp4mm", "fp4mm (prepacked)", "fp4mm_solve", "fp4mm_gemm", "fp4mm_gemv",
              "fp4mm_gemv_sm90", "fp4mm_gemv_fp8_sm90", "fp4mm_dynamic", "quack_w4a16",
              "quack_w4a16_plus_xdequant", "cublas_bf16", "cublas_fp16", "torch_dequant_mm",
              "triton_dot_scaled_mxfp4", "torch_quantize_nvfp4")


def ordered_labels(rows) -> list[str]:
    present = {impl_label(r) for r in rows}
    return [c for c in IMPL_ORDER if c in present] + sorted(present - set(IMPL_ORDER))


def n_copies(nbytes: int, l2_bytes: int, factor: int = 3) -> int:
    """How many copies of ``nbytes`` of weights to rotate through so that together they are at
    least ``factor`` times the L2 cache (1 when ``l2_bytes`` is 0)."""
    if l2_bytes <= 0 or nbytes <= 0:
        return 1
    return max(1, min(MAX_COPIES, math.ceil(factor * l2_bytes / nbytes)))


def tensor_bytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


@dataclass
class Problem:
    """A case's inputs on ``device``: ``data`` holds the op's arguments (see :func:`make_problem`);
    ``cache`` memoises derived tensors (dequantised operands) shared by several implementations."""

    case: Case
    device: torch.device
    l2_bytes: int
    data: dict[str, Any]
    cache: dict[str, Any] = field(default_factory=dict)

    def derived(self, key: str, make: Callable[[], Any]):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def copies(self, nbytes: int) -> int:
        return n_copies(nbytes, self.l2_bytes)


def make_problem(case: Case, device, l2_bytes: int = DEFAULT_L2_BYTES, seed: int = 0) -> Problem:
    """Draw the case's inputs (challenge generators, ``torch.manual_seed(seed)``).

    - nvfp4_mm: x_q uint8 (M, K/2), x_scales uint8 E4M3 (M, K/16), w_q (N, K/2), w_scales
      (N, K/16), alpha; packed low-first.
    - w4a16_mm: x fp16 (M, K), w_q (N, K/2), scales fp16 (N, K/group_size), group_size.
    - nvfp4_w4a16_mm: x bf16 (M, K) (fp16 on the CPU: Triton's interpreter computes bf16
      wrongly), w_q, w_scales as above, w_global_scale 1.0 (so the encode and decode conventions
      of a global scale agree).
    - quantize_nvfp4: x bf16 (M, K).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    M, N, K = case.M, case.N, case.K

    def packed(rows):
        return torch.randint(0, 256, (rows, K // 2), dtype=torch.uint8, generator=gen)

    if case.op == "nvfp4_mm":
        data = {"x_q": packed(M), "x_scales": random_scale_bytes(M, K // 16), "w_q": packed(N),
                "w_scales": random_scale_bytes(N, K // 16), "alpha": case.alpha}
    elif case.op == "w4a16_mm":
        g = case.group_size
        data = {"x": (0.5 * torch.randn(M, K, generator=gen)).half(), "w_q": packed(N),
                "scales": (0.1 * torch.rand(N, K // g, generator=gen) + 0.01).half(),
                "group_size": g}
    elif case.op == "nvfp4_w4a16_mm":
        x_dtype = torch.float16 if device.type == "cpu" else torch.bfloat16
        data = {"x": (0.5 * torch.randn(M, K, generator=gen)).to(x_dtype), "w_q": packed(N),
                "w_scales": random_scale_bytes(N, K // 16), "w_global_scale": 1.0}
    else:
        data = {"x": torch.randn(M, K, generator=gen).bfloat16()}
    data = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    return Problem(case, device, l2_bytes, data)


@dataclass
class Runner:
    """A prepared implementation of one case.

    ``run(i)`` computes the op on weight copy ``i`` (0 <= i < ``copies``) and returns its output.
    ``result(out)`` turns that output into what is compared with ``expected`` (default: the
    float32 tensor itself); ``expected`` None means the case's oracle. ``check`` is
    ``"allclose"`` (the challenge's tolerance), ``"exact"`` (bit for bit; outputs may be tuples)
    or ``"rel_l2"`` (relative L2 error at most ``rel_l2_tol``, for peers that re-quantise).
    """

    run: Callable[[int], Any]
    copies: int = 1
    result: Callable[[Any], Any] | None = None
    expected: Callable[[], Any] | None = None
    check: str = "allclose"
    rel_l2_tol: float = 0.05
    prepacked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Impl:
    """An implementation of some ops. ``build(case, problem, ctx)`` returns a :class:`Runner`, or
    None where it does not apply (optional package absent, op unsupported). ``ctx`` carries the
    harness's timer (``ctx.time(fn) -> (median, min, max)`` in ms) for costs reported on the side.
    ``kind``: ``"ours"``, ``"baseline"`` or ``"peer"``."""

    name: str
    ops: frozenset[str]
    build: Callable[..., Runner | None]
    kind: str = "baseline"
