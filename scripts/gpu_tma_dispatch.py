# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Where the TMA decode GEMV (``fp4_gemv_tma_sm90``, session 28's swizzled reads and one-row-tile
rule) should serve ``nvfp4_w4a16_mm``, against the kernels beside it (session 28):

1. 1-8 tokens (raw weights): the register ring (``fp4_gemv_sm90``, what the ops run there)
   against the TMA GEMV.
2. 9-32 tokens with prepacked weights: the Gluon GEMM on the prepacked layout (what the ops run
   above ``PREPACKED_SM90_GEMV_MAX_M``) against the TMA GEMV on the raw tensors.

Each kernel is checked against the oracle with a NaN-poisoned output first, then timed in 3
rotating rounds of CUDA-graph medians over 4 weight copies (bf16 x). Usage on an sm_90 machine:
``python scripts/gpu_tma_dispatch.py`` (JSON to $OUT).

``--grouped-prepacked`` (session 29): ``w4a16_mm`` with groups of 32 and a
``PrepackedW4A16Weight`` at 8-32 tokens, the public op with ``FP4MM_KERNEL=gemv`` (what the GEMV
side of the dispatch runs: the register ring below ``GEMV_SM90_TMA_MIN_M_GROUPED``, the TMA GEMV
from it, on the raw tensors the prepacked weight keeps) against ``FP4MM_KERNEL=gemm`` (the GEMM on
the prepacked layout): where ``W4A16_SM90_GEMV_MAX_M[(32, True)]`` should be.

``--grouped-small`` (session 30): ``w4a16_mm`` with groups of 32 and raw weights at 2-8 tokens,
the register ring at the ops' config (what the dispatch runs below
``GEMV_SM90_TMA_MIN_M_GROUPED``) against the TMA GEMV's group-scale form, which session 29's x
boxes (inside x's rows) made worth measuring there: where ``GEMV_SM90_TMA_MIN_M_GROUPED`` should be.
With ``--verify``: 5-8 tokens on six other weight shapes, and TMA configs beside the rule's at 6
tokens. With ``--wide-groups``: groups of 64 and 128 (the ring serves them up to 16 tokens) at
2-16 tokens on four shapes, ring against the TMA GEMV at its rule. ``--wide-group-edges``: the
same groups where other kernels serve them (:func:`wide_group_edges`). ``--big-groups``: groups
of 256 and 512 at 1-32 tokens (:func:`big_groups`; with ``--odd``, groups of 384).
``--k-odd`` (session 31): prepacked weights with K % 256 == 128, where the TMA GEMV cannot run
(:func:`k_odd`). ``--w4a4-prepass`` (session 31): W4A4 at 8-32 tokens through x dequantised to
fp16 and the TMA GEMV (:func:`w4a4_prepass`). ``--gemm-pdl``: the shipped W4A4 GEMM's pre-pass
with and without PDL at large K (:func:`gemm_prepass_pdl`).
"""

from __future__ import annotations

import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402
from fp4mm.kernels import fp4_gemm_sm90, fp4_gemv_sm90, fp4_gemv_tma_sm90  # noqa: E402
from fp4mm.ops.nvfp4_mm import sm90_layout  # noqa: E402
from scripts.gpu_decode import Problem, rounds, save_rows, time_graph  # noqa: E402
from scripts.gpu_gemv_tma_swizzle import check_poisoned  # noqa: E402


def compare(runs, ref, out, odt, label, row):
    """Check each of ``runs`` (name -> ``run(weight copy i, out)``) against the oracle ``ref`` in
    a NaN-poisoned output of ``odt``, then time them in 3 rotating rounds of CUDA-graph medians
    over the 4 weight copies into ``out``; prints ``label`` and the medians, returns ``row``
    with them added (a row of the result file)."""
    for name, run in runs.items():
        check_poisoned(lambda o, run=run: run(0, o), ref, odt, f"{name} {label}")
    got = rounds({name: (lambda run=run: time_graph([lambda i=i: run(i, out) for i in range(4)])[0])
                  for name, run in runs.items()}, 3)
    med = {k: st.median(v) for k, v in got.items()}
    print(f"{label} " + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()), flush=True)
    return dict(row, rounds=got, medians=med)


def grouped_kernels(M, N, K, group, dt):
    """A ``w4a16_mm`` problem over 4 weight copies, an output for it, and the raw-weight kernels
    that can serve it (name -> ``run(weight copy i, out)``): the TMA GEMV, the register ring and
    the plain-Triton GEMV, each at its own rule."""
    from fp4mm.kernels import fp4_gemv

    p = Problem("w4a16_mm", M, N, K, group=group, dtype=dt, copies=4)
    x = p.x[0]
    kernels = {
        "tma": lambda i, o: fp4_gemv_tma_sm90.gemv_tma_sm90(x, *p.w[i], 1.0, "low_first", o,
                                                            group_size=group),
        "ring": lambda i, o: fp4_gemv_sm90.gemv_sm90(x, None, *p.w[i], 1.0, "low_first", o,
                                                     group_size=group),
        "triton_gemv": lambda i, o: fp4_gemv.w4a16_mm_gemv(x, *p.w[i], group, "low_first", o)}
    return p, torch.empty((M, N), dtype=dt, device="cuda"), kernels


def grouped_prepacked():
    rows = []
    for (N, K), M, dt in [(nk, m, dt) for nk in ((18432, 3072), (8192, 8192), (4096, 4096))
                          for m in (8, 12, 16, 24, 32)
                          for dt in (torch.float16, torch.bfloat16)]:
        p = Problem("w4a16_mm", M, N, K, group=32, dtype=dt, copies=4)
        packs = [fp4mm.prepack_w4a16_weight(*w, 32) for w in p.w]
        out = torch.empty((M, N), dtype=dt, device="cuda")
        x = p.x[0]

        def run(i, o, kernel):
            os.environ["FP4MM_KERNEL"] = kernel
            try:
                fp4mm.w4a16_mm(x, packs[i], None, 32, out=o)
            finally:
                del os.environ["FP4MM_KERNEL"]

        ref = p.reference(0)
        for kernel in ("gemv", "gemm"):
            check_poisoned(lambda o, kernel=kernel: run(0, o, kernel), ref, dt,
                           f"{kernel} {M}x{N}x{K}")
        got = rounds({k: (lambda k=k: time_graph([lambda i=i: run(i, out, k)
                                                  for i in range(4)])[0])
                      for k in ("gemv", "gemm")}, 3)
        med = {k: st.median(v) for k, v in got.items()}
        print(f"M={M:2d} {N}x{K} {str(dt)[6:]:8s} "
              + "  ".join(f"{k} {v:6.2f}" for k, v in med.items()), flush=True)
        rows.append(dict(op="w4a16_mm", group=32, dtype=str(dt), M=M, N=N, K=K, prepacked=True,
                         rounds=got, medians=med))
    save_rows("w4a16-prepacked-dispatch", rows)


def grouped_small(verify=False, wide=False):
    rows = []
    shapes = ((18432, 3072), (8192, 8192), (4096, 4096))
    tokens = (2, 3, 4, 6, 8)
    groups = (32,)
    if verify:
        shapes = ((28672, 4096), (14336, 4096), (4096, 14336), (3072, 3072), (5120, 5120),
                  (18432, 3072))
        tokens = (5, 6, 7, 8)
    if wide:
        shapes = ((18432, 3072), (8192, 8192), (4096, 4096), (28672, 4096))
        tokens = (2, 4, 6, 8, 12, 16)
        groups = (64, 128)
    C = fp4_gemv_tma_sm90.GemvTMAConfig
    for (N, K), group, M, dt in [(nk, g, m, dt) for nk in shapes for g in groups for m in tokens
                                 for dt in (torch.float16, torch.bfloat16)]:
        p, out, kernels = grouped_kernels(M, N, K, group, dt)
        runs = {k: kernels[k] for k in ("ring", "tma")}
        if verify and M == 6:  # configs beside the rule's (one row tile, 2 stages)
            for w, k in ((1, 1), (1, 3), (2, 1), (2, 2), (4, 2)):
                cfg = C(1, 2, k, w)
                runs[f"tma_w{w}_k{k}"] = lambda i, o, cfg=cfg: (
                    fp4_gemv_tma_sm90.gemv_tma_sm90(p.x[0], *p.w[i], 1.0, "low_first", o,
                                                    config=cfg, group_size=group))
        rows.append(compare(runs, p.reference(0), out, dt,
                            f"g{group} M={M:2d} {N}x{K} {str(dt)[6:]:8s}",
                            dict(op="w4a16_mm", group=group, dtype=str(dt), M=M, N=N, K=K,
                                 prepacked=False)))
    save_rows("w4a16-grouped-small-dispatch" + ("-verify" if verify else "")
              + ("-wide-groups" if wide else ""), rows)


def wide_group_edges():
    """Groups of 64 and 128, fp16 x, where the ops' other kernels serve them: one token (the
    ring; the TMA GEMV loads a one-token x as a zero-filled 8-row box), 17-32 tokens on raw
    weights (the plain-Triton GEMV) and 8-24 tokens on prepacked ones (the Gluon GEMM), each
    against the TMA GEMV at its rule on the raw tensors."""
    rows = []
    cases = [(1, False), (17, False), (24, False), (32, False), (8, True), (12, True),
             (16, True), (24, True)]
    for (N, K), group, (M, prepacked) in [(nk, g, c) for nk in ((18432, 3072), (8192, 8192),
                                                               (4096, 4096), (28672, 4096))
                                          for g in (64, 128) for c in cases]:
        dt = torch.float16
        p, out, kernels = grouped_kernels(M, N, K, group, dt)
        runs = {"tma": kernels["tma"]}
        if prepacked:
            packs = [fp4mm.prepack_w4a16_weight(*w, group) for w in p.w]

            def gemm(i, o):
                os.environ["FP4MM_KERNEL"] = "gemm"
                try:
                    fp4mm.w4a16_mm(p.x[0], packs[i], None, group, out=o)
                finally:
                    del os.environ["FP4MM_KERNEL"]
            runs["gemm_prepacked"] = gemm
        else:
            other = "ring" if M == 1 else "triton_gemv"
            runs[other] = kernels[other]
        rows.append(compare(runs, p.reference(0), out, dt,
                            f"g{group} M={M:2d} {N}x{K} {'prepacked' if prepacked else 'raw':9s}",
                            dict(op="w4a16_mm", group=group, dtype=str(dt), M=M, N=N, K=K,
                                 prepacked=prepacked)))
    save_rows("w4a16-wide-group-edges", rows)


def big_groups():
    """Groups of 256 and 512 (the ops keep them on the ring up to 16 tokens and the plain-Triton
    GEMV above), fp16 x, raw weights: the kernel that serves them against the TMA GEMV."""
    rows = []
    odd = "--odd" in sys.argv  # K a multiple of 384 and of 256
    shapes = ((18432, 3072), (6144, 6144)) if odd else ((18432, 3072), (8192, 8192))
    for (N, K), group, M in [(nk, g, m) for nk in shapes for g in ((384,) if odd else (256, 512))
                             for m in (1, 2, 4, 8, 16, 24, 32)]:
        dt = torch.float16
        p, out, kernels = grouped_kernels(M, N, K, group, dt)
        runs = {k: kernels[k] for k in ("tma", "ring" if M <= 16 else "triton_gemv")}
        rows.append(compare(runs, p.reference(0), out, dt, f"g{group} M={M:2d} {N}x{K}",
                            dict(op="w4a16_mm", group=group, dtype=str(dt), M=M, N=N, K=K,
                                 prepacked=False)))
    save_rows("w4a16-big-groups" + ("-384" if "--odd" in sys.argv else ""), rows)


def k_odd():
    """Prepacked weights with K % 256 == 128: the TMA GEMV needs whole 256-K chunks, so the
    GEMV side of the dispatch runs the register ring (``w4a16_mm``, at most 16 tokens) or the
    plain-Triton GEMV (``nvfp4_w4a16_mm`` above 16). The public op with ``FP4MM_KERNEL=gemv``
    against ``=gemm`` (the Gluon GEMM on the prepacked layout), fp16 x: where the prepacked
    limits should stop for such K (session 30 capped ``w4a16_mm`` at 8 tokens there without a
    measurement; ``nvfp4_w4a16_mm`` keeps 32)."""
    rows = []
    cases = [("w4a16_mm", g, M) for g in (32, 64, 128) for M in (4, 8, 12, 16)]
    cases += [("nvfp4_w4a16_mm", None, M) for M in (8, 16, 20, 24, 32)]
    for (N, K), (op, group, M) in [(nk, c) for nk in ((18432, 2944), (16384, 1408), (8192, 3200))
                                   for c in cases]:
        dt = torch.float16
        p = Problem(op, M, N, K, group=group or 16, dtype=dt, copies=4)
        if op == "w4a16_mm":
            packs = [fp4mm.prepack_w4a16_weight(*w, group) for w in p.w]
            call = lambda i, o: fp4mm.w4a16_mm(p.x[0], packs[i], None, group, out=o)
        else:
            packs = [fp4mm.prepack_nvfp4_weight(*w) for w in p.w]
            call = lambda i, o: fp4mm.ops.nvfp4_w4a16_mm_alpha(p.x[0], packs[i], None,
                                                               p.alpha, out=o)

        def forced(kernel, call=call):
            def run(i, o):
                os.environ["FP4MM_KERNEL"] = kernel
                try:
                    call(i, o)
                finally:
                    del os.environ["FP4MM_KERNEL"]
            return run

        out = torch.empty((M, N), dtype=dt, device="cuda")
        runs = {"gemv": forced("gemv"), "gemm": forced("gemm")}
        rows.append(compare(runs, p.reference(0), out, dt,
                            f"{op} g{group} M={M:2d} {N}x{K}",
                            dict(op=op, group=group, dtype=str(dt), M=M, N=N, K=K,
                                 prepacked=True)))
    save_rows("prepacked-k-odd-dispatch", rows)


def w4a4_prepass():
    """W4A4 at 8-32 tokens: the public ``nvfp4_mm`` (the register ring there) against x
    dequantised to fp16 by the GEMM's pre-pass (``dequant_nvfp4``, exact; launched with PDL)
    followed by the TMA GEMV at its NVFP4 rule, which serves 16-bit x faster than the ring
    serves W4A4 at 16 tokens (README decode table: 18.8 vs 19.9 us, bf16 x)."""
    from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4

    rows = []
    second = "--parts" in sys.argv  # the GEMV alone on x decoded once, and more shapes
    shapes = ((18432, 3072), (8192, 8192), (4096, 4096), (28672, 4096))
    tokens = (8, 12, 16, 24, 32)
    if second:
        shapes = ((18432, 3072), (8192, 8192), (8192, 3072), (14336, 4096), (4096, 14336))
        tokens = (16, 24, 32)
    if "--pdl" in sys.argv:
        shapes, tokens = ((18432, 3072), (8192, 8192), (4096, 14336), (14336, 4096)), (16, 24)
    rule = "--rule" in sys.argv  # where a plain (non-PDL) pre-pass + the TMA GEMV wins
    if rule:
        shapes = ((18432, 3072), (14336, 4096), (28672, 4096), (12288, 4096), (16384, 2048),
                  (8192, 8192))
        tokens = (17, 20, 24, 28, 32)
    for (N, K), M in [(nk, m) for nk in shapes for m in tokens]:
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        xq, xs = p.x
        x16 = dequant_nvfp4(xq, xs, dtype=torch.float16)
        xbf = x16.bfloat16()  # exact: the decoded values need at most 6 significant bits

        def prepass_tma(i, o):
            x16 = dequant_nvfp4(xq, xs, dtype=torch.float16, pdl=True)
            fp4_gemv_tma_sm90.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o)

        runs = {"op": lambda i, o: fp4mm.nvfp4_mm(xq, xs, *p.w[i], p.alpha, out=o),
                "prepass_tma": prepass_tma}
        if second:
            runs["tma_only"] = lambda i, o: fp4_gemv_tma_sm90.gemv_tma_sm90(
                x16, *p.w[i], p.alpha, "low_first", o)
            runs["tma_only_bf16"] = lambda i, o: fp4_gemv_tma_sm90.gemv_tma_sm90(
                xbf, *p.w[i], p.alpha, "low_first", o)
        if rule:
            def plain_tma(i, o):
                x16 = dequant_nvfp4(xq, xs, dtype=torch.float16)
                fp4_gemv_tma_sm90.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o)

            runs = {"op": runs["op"], "prepass_plain_tma": plain_tma}
        if "--pdl" in sys.argv:  # where the pre-pass's cost comes from
            def prepass_nopdl_tma(i, o):
                x16 = dequant_nvfp4(xq, xs, dtype=torch.float16)
                fp4_gemv_tma_sm90.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o)

            def prepass_late_tma(i, o):
                x16 = dequant_nvfp4(xq, xs, dtype=torch.float16, pdl=True, pdl_late=True)
                fp4_gemv_tma_sm90.gemv_tma_sm90(x16, *p.w[i], p.alpha, "low_first", o)

            runs = {"prepass_tma": prepass_tma, "prepass_nopdl_tma": prepass_nopdl_tma,
                    "prepass_late_tma": prepass_late_tma, "tma_only": runs["tma_only"]}
            buf = torch.empty((M, K), dtype=torch.float16, device="cuda")
            for pdl in (True, False):
                got = rounds({"x": lambda pdl=pdl: time_graph(
                    [lambda: dequant_nvfp4(xq, xs, dtype=torch.float16, out=buf, pdl=pdl)])[0]},
                    3)
                print(f"prepass alone pdl={pdl} M={M} K={K}: {st.median(got['x']):.2f} us")
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        rows.append(compare(runs, p.reference(0), out, torch.float16, f"W4A4 M={M:2d} {N}x{K}",
                            dict(op="nvfp4_mm", M=M, N=N, K=K)))
    save_rows("w4a4-prepass-tma" + ("-parts" if second else "")
              + ("-pdl" if "--pdl" in sys.argv else "") + ("-rule" if rule else ""), rows)


def gemm_prepass_pdl():
    """W4A4 on prepacked weights (x pre-pass + the Gluon GEMM): the public op, whose pre-pass is
    launched with PDL, against the same call with the pre-pass launched plainly (the GEMM keeps
    PDL; its wait is then a no-op). The pre-pass before the TMA GEMV cost 3 us plainly and 11-44
    us with PDL at K = 8192-14336 (``--w4a4-prepass --parts --pdl``): does the GEMM pay it too?"""
    from fp4mm.kernels import dequant_nvfp4 as D

    shipped = fp4_gemm_sm90.dequant_nvfp4
    rows = []
    for (N, K), M in [(nk, m) for nk in ((4096, 14336), (8192, 8192), (18432, 3072))
                      for m in (17, 32, 64, 256, 2048)]:
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        xq, xs = p.x
        packs = [fp4mm.prepack_nvfp4_weight(*w) for w in p.w]

        def plain(i, o):
            fp4_gemm_sm90.dequant_nvfp4 = lambda *a, **k: D.dequant_nvfp4(*a, **{**k, "pdl": False})
            try:
                fp4mm.nvfp4_mm(xq, xs, packs[i], None, p.alpha, out=o)
            finally:
                fp4_gemm_sm90.dequant_nvfp4 = shipped

        runs = {"op": lambda i, o: fp4mm.nvfp4_mm(xq, xs, packs[i], None, p.alpha, out=o),
                "prepass_plain": plain}
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        rows.append(compare(runs, p.reference(0), out, torch.float16,
                            f"W4A4 prepacked M={M:4d} {N}x{K}", dict(op="nvfp4_mm", M=M, N=N, K=K,
                                                                     prepacked=True)))
    save_rows("w4a4-gemm-prepass-pdl", rows)


MODES = {"--gemm-pdl": gemm_prepass_pdl, "--w4a4-prepass": w4a4_prepass, "--k-odd": k_odd,
         "--big-groups": big_groups, "--wide-group-edges": wide_group_edges,
         "--grouped-prepacked": grouped_prepacked,
         "--grouped-small": lambda: grouped_small("--verify" in sys.argv,
                                                  "--wide-groups" in sys.argv)}


def main():
    for flag, mode in MODES.items():
        if flag in sys.argv:
            return mode()
    rows = []
    shapes = [(18432, 3072), (8192, 8192), (4096, 4096)]
    cases = [(M, N, K, False) for N, K in shapes for M in (1, 2, 4, 8)]
    cases += [(M, N, K, True) for N, K in shapes for M in (16, 24, 32)]
    for M, N, K, prepacked in cases:
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.bfloat16, copies=4)
        out = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        x = p.x[0]
        runs = {"tma": lambda i, o: fp4_gemv_tma_sm90.gemv_tma_sm90(x, *p.w[i], p.alpha,
                                                                    "low_first", o)}
        if prepacked:
            packs = [fp4mm.prepack_nvfp4_weight(*w) for w in p.w]
            runs["gemm_prepacked"] = lambda i, o: fp4_gemm_sm90.fp4_gemm_sm90_w4a16(
                x, *p.w[i], p.alpha, "low_first", o, prepacked=sm90_layout(packs[i]))
        else:
            runs["ring"] = lambda i, o: fp4_gemv_sm90.gemv_sm90(x, None, *p.w[i], p.alpha,
                                                                "low_first", o)
        rows.append(compare(runs, p.reference(0), out, torch.float32,
                            f"M={M:2d} {N}x{K} {'prepacked' if prepacked else 'raw':9s}",
                            dict(M=M, N=N, K=K, prepacked=prepacked)))
    save_rows("tma-dispatch", rows)


if __name__ == "__main__":
    main()
