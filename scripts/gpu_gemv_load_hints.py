# ruff: noqa: B023  (closures are timed immediately, inside their loop iteration)
"""Cache hints on the decode GEMVs' weight loads (session 25): do they move the decode rows?

Every decode kernel streams its weight words with plain 16-byte ``ld.global`` (``LDG.E.128``),
read once. Variants (patched copies of the kernel modules, the same SASS but for the loads):

- ``evict_first``: ``gl.load(..., eviction_policy="evict_first")`` (``LDG.E.EF.128``, L1 and L2
  evict-first);
- ``no_alloc``: ``ld.global.L1::no_allocate`` by inline asm (the words never enter L1, which
  shares its storage with shared memory);
- ``no_alloc_256B``: the same with ``.L2::256B``, a hint that a miss may fetch 256 bytes: two
  windows of a row in the E4M3 GEMV, two K steps in the ring;
- ``l2_128B``: ``.L2::128B`` only.

Runs 1-2 patch the kernels of commit ``ae75f2f`` (before any hint); run 3 (``HINTS_RUN=3``)
patches the kernels as shipped after them (evict-first weights) with the weight scales
evict-first too and the ring's x (re-read by every warp) evict-last; run 4 (``HINTS_RUN=4``)
the same kernels with the weight scales evict-last.
Run 2 (``HINTS_RUN=2``) separates the two halves of ``evict_first``: ``l2_evict_first`` (the L2
policy alone), ``l1_evict_first`` (the L1 hint alone), ``no_alloc_l2_evict_first``.

(The group-scale ring loads its words in 8-byte runs, so it gets ``evict_first`` only.)

Kernels: the E4M3 GEMV (``fp4_gemv_fp8_sm90``, W4A4 1-4 tokens) and the register ring
(``fp4_gemv_sm90``: NVFP4 weights with bf16 x, W4A4 at 16 tokens, group-32 fp16 scales).
Oracle checks with a NaN-poisoned output first (and bit-for-bit against the shipped kernel at
the timed shapes), then CUDA-graph medians over weight copies that fill 3x the L2, rotating
rounds. Usage on an sm_90 machine: ``python scripts/gpu_gemv_load_hints.py`` (JSON to $OUT or .).
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from gpu_decode import patched_module, save_rows, time_graph  # noqa: E402
from gpu_gluon import check, gen  # noqa: E402

from fp4mm import reference  # noqa: E402
from fp4mm.bench.cases import n_copies  # noqa: E402
from fp4mm.kernels import fp4_gemv_fp8_sm90 as F0  # noqa: E402
from fp4mm.kernels import fp4_gemv_sm90 as S0  # noqa: E402

ROUNDS = 4


def _asm_load(qualifiers, ptr):
    """A 16-byte load of 4 int32 words with PTX ``qualifiers``; pack=4 hands the asm one
    thread's 4 contiguous words (their pointers; the first addresses all four). A qualifier
    with ``L2::cache_hint`` gets an evict-first policy made by ``createpolicy``."""
    policy = ""
    if "cache_hint" in qualifiers:
        policy = ", pol"
    body = "ld.global" + qualifiers + ".v4.u32 {$0, $1, $2, $3}, [$4]" + policy + ";"
    if policy:
        body = ("{ .reg .b64 pol; createpolicy.fractional.L2::evict_first.b64 pol, 1.0; "
                + body + " }")
    body += " // $5 $6 $7"
    return ('gl.inline_asm_elementwise("' + body + '", "=r,=r,=r,=r,l,l,l,l", [' + ptr
            + '], dtype=gl.int32, is_pure=True, pack=4)')


# name -> PTX qualifiers of the asm load (None: gl.load's eviction_policy="evict_first", which
# is L1::evict_first with an L2 evict-first cache policy)
HINTS = dict(
    [("evict_first", None), ("no_alloc", ".L1::no_allocate"),
     ("no_alloc_256B", ".L1::no_allocate.L2::256B"), ("l2_128B", ".L2::128B")]
    if os.environ.get("HINTS_RUN", "1") == "1" else
    [("evict_first", None), ("l2_evict_first", ".L2::cache_hint"),
     ("l1_evict_first", ".L1::evict_first"),
     ("no_alloc_l2_evict_first", ".L1::no_allocate.L2::cache_hint")])


def fp8_patches(hint):
    first, nxt = "w_ptr + w_offs", "w_ptr + w_offs + (i + 1) * 32"
    if HINTS[hint] is None:
        new_first = f'gl.load({first}, eviction_policy="evict_first")'
        new_next = f'gl.load({nxt}, mask=more, eviction_policy="evict_first")'
    else:  # unmasked: past the last window it loads the current window again (in bounds)
        new_first = _asm_load(HINTS[hint], first)
        new_next = _asm_load(HINTS[hint], "w_ptr + w_offs + gl.where(more, (i + 1) * 32, 0)")
    return [(f"words = gl.load({first})", f"words = {new_first}"),
            (f"words_next = gl.load({nxt}, mask=more)", f"words_next = {new_next}")]


def ring_patches(hint):
    old = "wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8))"  # the unmasked branch only
    if HINTS[hint] is None:
        new = 'wd = gl.load(w_ptr + w_offs + i * (KSTEP // 8), eviction_policy="evict_first")'
    else:
        new = "wd = " + _asm_load(HINTS[hint], "w_ptr + w_offs + i * (KSTEP // 8)")
    return [(old, new)]


# run 3 (``HINTS_RUN=3``, on the kernels as shipped after runs 1-2, the commit after ``c1400d8``):
# the weight scales evict-first too, and the ring's x (re-read by every warp) evict-last
_RING_SCALES = ("is_pure=True, pack=4)\n        sc = gl.load(ws_ptr + s_offs + s_step)",
                "is_pure=True, pack=4)\n        sc = gl.load(ws_ptr + s_offs + s_step, "
                "eviction_policy=\"evict_first\")")
_RING_X = [(f"{v} = gl.load({p})", f"{v} = gl.load({p}, eviction_policy=\"evict_last\")")
           for v, p in (("xa", "x_ptr + xa_offs + i * (KSTEP // 8)"),
                        ("xb", "xs_ptr + xb_offs + i * (KSTEP // 32)"),
                        ("xa", "x_ptr + xa_offs + i * (KSTEP // 2)"))]
_FP8_SCALES = ("sw = gl.load(ws_ptr + s_rows + gl.expand_dims(cols, 0) + i * 16)",
               "sw = gl.load(ws_ptr + s_rows + gl.expand_dims(cols, 0) + i * 16, "
               "eviction_policy=\"evict_first\")")
RUN3 = {"scales_evict_first": ([_FP8_SCALES], [_RING_SCALES]),
        "x_evict_last": (None, _RING_X),
        "both": (None, [_RING_SCALES] + _RING_X)}
# run 4: the weight scales evict-last (a scale line serves 8-16 K steps of its rows; run 3's
# evict-first scales were 4-9% slower, which suggests the streamed words evicted them before)
_LAST = 'eviction_policy="evict_last")'
RUN4 = {"scales_evict_last": (
    [(_FP8_SCALES[0], _FP8_SCALES[0][:-1] + ", " + _LAST)],
    [(_RING_SCALES[0], _RING_SCALES[0][:-1] + ", " + _LAST),
     ('eviction_policy="evict_first")\n        sc = gl.load(ws_ptr + s_offs + s_step)\n',
      'eviction_policy="evict_first")\n        sc = gl.load(ws_ptr + s_offs + s_step, '
      + _LAST + "\n")])}


def modules():
    fp8 = {"shipped": F0}
    ring = {"shipped": S0}
    if os.environ.get("HINTS_RUN", "1") in ("3", "4"):
        for name, (fp, rp) in (RUN3 if os.environ["HINTS_RUN"] == "3" else RUN4).items():
            if fp:
                fp8[name] = patched_module(f"fp8_{name}", open(F0.__file__).read(), fp)
            ring[name] = patched_module(f"ring_{name}", open(S0.__file__).read(), rp)
        return fp8, ring
    for h in HINTS:
        fp8[h] = patched_module(f"fp8_{h}", open(F0.__file__).read(), fp8_patches(h))
        ring[h] = patched_module(f"ring_{h}", open(S0.__file__).read(), ring_patches(h))
    return fp8, ring


def problem(kind, M, N, K, seed):
    """(make inputs for copy i, call(mod, inputs, out), out dtype, oracle(inputs))."""
    if kind == "fp8 w4a4" or kind == "ring w4a4":
        xq, xs, _, _ = gen(M, N, K, seed=seed)
        make = lambda i: gen(1, N, K, seed=seed + 100 + i)[2:]
        if kind == "fp8 w4a4":
            call = lambda mod, w, out: mod.gemv_fp8_sm90(xq, xs, w[0], w[1], 0.37, out)
        else:
            call = lambda mod, w, out: mod.nvfp4_mm_gemv_sm90(xq, xs, w[0], w[1], 0.37,
                                                              "low_first", out)
        oracle = lambda w: (xq, xs, w)
        return make, call, torch.float16, oracle
    x = (torch.randn(M, K, device="cuda") * 0.5).to(
        torch.bfloat16 if kind == "ring bf16" else torch.float16)
    if kind == "ring bf16":
        make = lambda i: gen(1, N, K, seed=seed + 100 + i)[2:]
        call = lambda mod, w, out: mod.nvfp4_w4a16_mm_gemv_sm90(x, w[0], w[1], 0.37,
                                                                "low_first", out)
        oracle = lambda w: reference.nvfp4_w4a16_mm(x, w[0], w[1], 1 / 0.37)
        return make, call, torch.bfloat16, oracle
    g = torch.Generator(device="cuda")

    def make(i):
        g.manual_seed(seed + 100 + i)
        wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device="cuda", generator=g)
        sc = (torch.rand(N, K // 32, device="cuda", generator=g) * 0.1 + 0.01).half()
        return wq, sc
    call = lambda mod, w, out: mod.w4a16_mm_gemv_sm90(x, w[0], w[1], 32, "low_first", out)
    oracle = lambda w: reference.w4a16_mm(x, w[0], w[1], 32)
    return make, call, torch.float16, oracle


def usable(kind, mods):
    """The group-scale ring's words are not 16-byte runs a thread: the asm loads would trap
    (misaligned), so it gets the evict-first variant only."""
    if os.environ.get("HINTS_RUN", "1") in ("3", "4"):
        return mods
    return {k: m for k, m in mods.items() if kind != "ring g32" or k in ("shipped", "evict_first")}


def verify(kind, mods, M, N, K):
    mods = usable(kind, mods)
    make, call, dtype, oracle = problem(kind, M, N, K, seed=7 * M + N)
    w = make(0)
    outs = {}
    for name, mod in mods.items():
        out = torch.full((M, N), float("nan"), dtype=dtype, device="cuda")
        call(mod, w, out)
        torch.cuda.synchronize()
        if kind.endswith("w4a4"):
            xq, xs, ww = oracle(w)
            ok = check(out, xq, xs, ww[0], ww[1], 0.37, "low_first")[0]
        else:
            ref = oracle(w)
            tol = (2.0**-7 if dtype == torch.bfloat16 else 2.0**-10) * ref.abs().max() * 1.01
            ok = bool(torch.isfinite(out).all()) and float((out.float() - ref).abs().max()) <= tol
        outs[name] = out
        if not ok:
            raise SystemExit(f"FAIL {kind} {name} M={M} {N}x{K}")
    same = all(torch.equal(o, outs["shipped"]) for o in outs.values())
    print(f"ok {kind} M={M} {N}x{K} bit-identical={same}", flush=True)
    if not same:
        raise SystemExit("variants differ from the shipped kernel")


def main():
    fp8, ring = modules()
    for kind, mods, M, N, K in (("fp8 w4a4", fp8, 3, 4099, 2048), ("fp8 w4a4", fp8, 1, 200, 768),
                                ("ring bf16", ring, 1, 4099, 3072),
                                ("ring w4a4", ring, 16, 300, 1024),
                                ("ring g32", ring, 4, 4099, 3072)):
        verify(kind, mods, M, N, K)
    cases = [("fp8 w4a4", fp8, 1, 18432, 3072), ("fp8 w4a4", fp8, 4, 18432, 3072),
             ("fp8 w4a4", fp8, 1, 8192, 8192), ("ring bf16", ring, 1, 18432, 3072),
             ("ring bf16", ring, 4, 18432, 3072), ("ring w4a4", ring, 16, 18432, 3072),
             ("ring g32", ring, 1, 18432, 3072)]
    if os.environ.get("HINTS_RUN", "1") == "4":
        cases += [("ring g32", ring, 4, 18432, 3072)]
    elif os.environ.get("HINTS_RUN", "1") == "3":
        cases += [("ring w4a4", ring, 8, 18432, 3072), ("ring bf16", ring, 1, 8192, 8192)]
    elif os.environ.get("HINTS_RUN", "1") != "1":
        cases += [("ring w4a4", ring, 8, 18432, 3072), ("ring bf16", ring, 1, 8192, 8192),
                  ("ring g32", ring, 4, 18432, 3072)]
    rows = []
    for kind, mods, M, N, K in cases:
        verify(kind, mods, M, N, K)
        mods = usable(kind, mods)
        make, call, dtype, _ = problem(kind, M, N, K, seed=M + N + K)
        copies = n_copies(N * K // 2 + N * K // 16, 50 * 2**20)
        ws = [make(i) for i in range(copies)]
        out = torch.empty((M, N), dtype=dtype, device="cuda")
        names = list(mods)
        res = {k: [] for k in names}
        for r in range(ROUNDS):
            for name in names[r % len(names):] + names[:r % len(names)]:
                mod = mods[name]
                t = time_graph([lambda i=i: call(mod, ws[i], out) for i in range(copies)])
                res[name].append(t[0])
                rows.append(dict(kernel=kind, M=M, N=N, K=K, variant=name, round=r,
                                 median_us=t[0], min_us=t[1], max_us=t[2], copies=copies))
        print(f"{kind} M={M} {N}x{K}: " + " | ".join(
            f"{k} {sorted(v)[len(v) // 2]:.2f} ({min(v):.2f}-{max(v):.2f})"
            for k, v in res.items()), flush=True)
    save_rows("gemv-load-hints-run" + os.environ.get("HINTS_RUN", "1"), rows)


if __name__ == "__main__":
    main()
