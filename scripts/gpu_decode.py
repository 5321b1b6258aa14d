"""GPU check-then-time script for the decode GEMV (fp4mm/kernels/fp4_gemv.py) and dispatch.

Usage on an sm_90 machine: ``python scripts/gpu_decode.py [--out DIR] [--quick]``.

1. Correctness against the FP32 oracle (fresh random bytes, scales uniform in [0.5, 2) rounded to
   E4M3; fp32 output so the check is tight) for every config family, odd N, K not a multiple of
   the K step, both nibble orders, NaN scale propagation; a failing config is never timed.
2. Timing, each call replayed from a CUDA graph that cycles through enough weight copies to
   defeat the 50 MB L2 (the GPU time; ``do_bench`` without a graph is recorded too, it includes
   the Python launch cost): gemv configs, the GEMM helper's kernel, cuBLAS bf16 on pre-dequantised
   weights, a device copy of the weight bytes (the floor). Every timed output is checked first.
   Writes JSON (benchmarking.md schema) under --out and prints a table last.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import importlib.util
import io
import json
import os
import pstats
import sys
import tempfile
import time
import traceback

import torch
import triton
import triton.language as tl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fp4mm import reference  # noqa: E402
from fp4mm.formats import dequantize_fp4_groupwise, dequantize_nvfp4_blocks, float_to_e4m3  # noqa: E402
from fp4mm.kernels import fp4_gemv as V  # noqa: E402

DEV = "cuda"
L2_BYTES = 50 * 2**20
C = V.GemvConfig


def gemm_module():
    try:
        from fp4mm.kernels import fp4_gemm
        return fp4_gemm
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return None


def e4m3(r, c):
    return float_to_e4m3(torch.rand(r, c, device=DEV) * 1.5 + 0.5)


def rbytes(r, c):
    return torch.randint(0, 256, (r, c), dtype=torch.uint8, device=DEV)


class Problem:
    """One (op, M, N, K, group, dtype) problem with `copies` weight copies."""

    def __init__(self, op, M, N, K, group=16, dtype=torch.float16, copies=1, order="low_first"):
        self.op, self.M, self.N, self.K, self.group, self.dtype = op, M, N, K, group, dtype
        self.order = order
        if op == "nvfp4_mm":
            self.x = (rbytes(M, K // 2), e4m3(M, K // 16))
        else:
            self.x = ((torch.randn(M, K, device=DEV) * 0.5).to(dtype),)
        self.w = []
        for _ in range(copies):
            wq = rbytes(N, K // 2)
            if op == "w4a16_mm":
                ws = (torch.rand(N, K // group, device=DEV) * 0.1 + 0.01).to(dtype)
            else:
                ws = e4m3(N, K // 16)
            self.w.append((wq, ws))
        self.alpha = 1.0 / 64 if op == "nvfp4_mm" else (0.37 if op == "nvfp4_w4a16_mm" else 1.0)

    def weight_bytes(self):
        wq, ws = self.w[0]
        return wq.numel() + ws.numel() * ws.element_size()

    def bytes_moved(self, out_dtype):
        xb = sum(t.numel() * t.element_size() for t in self.x)
        ob = torch.empty((), dtype=out_dtype).element_size()
        return self.weight_bytes() + xb + self.M * self.N * ob

    def reference(self, i=0):
        wq, ws = self.w[i]
        if self.op == "nvfp4_mm":
            return reference.nvfp4_mm(*self.x, wq, ws, self.alpha, order=self.order)
        if self.op == "w4a16_mm":
            return reference.w4a16_mm(self.x[0], wq, ws, self.group, order=self.order)
        w = dequantize_nvfp4_blocks(wq, ws, self.order)
        return (self.x[0].float() @ w.T) * self.alpha

    def gemv(self, i, out, cfg, mod=V):
        """Weight copy ``i`` through ``mod``'s GEMV (``fp4_gemv``, or a patched copy of it)."""
        wq, ws = self.w[i]
        if self.op == "nvfp4_mm":
            mod.nvfp4_mm_gemv(*self.x, wq, ws, self.alpha, self.order, out, config=cfg)
        elif self.op == "w4a16_mm":
            mod.w4a16_mm_gemv(self.x[0], wq, ws, self.group, self.order, out, config=cfg)
        else:
            mod.nvfp4_w4a16_mm_gemv(self.x[0], wq, ws, self.alpha, self.order, out, config=cfg)

    def gemm(self, i, out, G):
        wq, ws = self.w[i]
        if self.op == "nvfp4_mm":
            G.nvfp4_mm_gemm(*self.x, wq, ws, self.alpha, self.order, out)
        elif self.op == "w4a16_mm":
            G.w4a16_mm_gemm(self.x[0], wq, ws, self.group, self.order, out)
        else:
            G.nvfp4_w4a16_mm_gemm(self.x[0], wq, ws, self.alpha, self.order, out)

    def dequant_bf16(self, i):
        wq, ws = self.w[i]
        if self.op == "w4a16_mm":
            return dequantize_fp4_groupwise(wq, ws, self.group, self.order).to(torch.bfloat16)
        return dequantize_nvfp4_blocks(wq, ws, self.order).to(torch.bfloat16)


def result_path(prefix, out_dir=None):
    """``<prefix>_<time>.json`` in ``out_dir`` (default: $OUT or .): a probe's result file."""
    out_dir = out_dir or os.environ.get("OUT", ".")
    return os.path.join(out_dir, f"{prefix}_{datetime.datetime.now():%Y%m%d-%H%M%S}.json")


def save_rows(prefix, rows, out_dir=None, path=None, quiet=False):
    """Write ``rows`` with the card, the torch version and the commit (``FP4MM_GIT_COMMIT``: the
    device copy's git metadata can be stale) to ``path``, or to a new :func:`result_path`; the
    probe scripts' result file. Probes that save after every point pass one ``path`` and
    ``quiet``. Prints (unless quiet) and returns the path."""
    path = path or result_path(prefix, out_dir)
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                       git_commit=os.environ.get("FP4MM_GIT_COMMIT"), rows=rows), f, indent=1)
    if not quiet:
        print("wrote", path)
    return path


# Source of a Gluon ``_now()`` (``%globaltimer``, ns) that the timeline probes patch into a kernel
# module ahead of an anchor.
NOW_SRC = ("@gluon.jit\ndef _now():\n    return gl.inline_asm_elementwise(\"mov.u64 $0, "
           "%globaltimer;\", \"=l\", [], dtype=gl.int64, is_pure=False, pack=1)\n\n\n")


def patched_module(name, src, patches=()):
    """Import the Python source ``src`` as module ``name`` after the exact-text replacements
    ``patches`` [(old, new)], each of which must occur exactly once (the AssertionError names
    an anchor that moved): the probe scripts' way to time a variant of a kernel module. The
    source goes to a temporary file (Triton reads kernels' source from their file) and the
    module into ``sys.modules`` (dataclasses look their module up there)."""
    for old, new in patches:
        assert src.count(old) == 1, f"anchor not found exactly once: {old[:60]!r}"
        src = src.replace(old, new)
    path = os.path.join(tempfile.mkdtemp(), name + ".py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def close(out, ref):
    """fp32 output: exact up to summation order. 16-bit output: one rounding of the result."""
    fin = ~torch.isnan(ref)
    amax = float(ref[fin].abs().max()) if fin.any() else 0.0  # NaN-aware (NaN-scale checks)
    if out.dtype == torch.float32:
        tol = 2e-5 * amax + 1e-30
    else:
        tol = (2.0**-7 if out.dtype == torch.bfloat16 else 2.0**-10) * amax * 1.01
    nan_ok = bool((torch.isnan(out) == torch.isnan(ref)).all())
    err = float((out[fin].float() - ref[fin]).abs().max()) if fin.any() else 0.0
    return nan_ok and err <= tol, err / (amax + 1e-30)


def seeded_linear(K, N, seed, dtype=torch.bfloat16):
    """The layer probes' weights: ``nn.Linear(K, N)`` without bias on the GPU, its weight drawn
    N(0, 0.02) from ``seed`` (copy ``seed`` of a layer)."""
    lin = torch.nn.Linear(K, N, bias=False, dtype=dtype, device=DEV)
    torch.nn.init.normal_(lin.weight, std=0.02, generator=torch.Generator(
        device=DEV).manual_seed(seed))
    return lin


def host_profile(fn, calls, title, keys=("tottime",), lines=30):
    """cProfile of ``calls`` calls of ``fn`` enqueued behind a ``torch.cuda._sleep`` (so only
    the host counts): the top ``lines`` functions by each of ``keys``, each block headed
    ``==== <title>, <calls> calls, by <key>``."""
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    torch.cuda._sleep(1_000_000_000)
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    for key in keys:
        text.write(f"==== {title}, {calls} calls, by {key}\n")
        pstats.Stats(prof, stream=text).sort_stats(key).print_stats(lines)
    return text.getvalue()


def enqueue_us(fn, calls=50, rounds=9, sleep_cycles=300_000_000):
    """Median/min/max microseconds to enqueue one call of ``fn``, over ``rounds`` rounds of
    ``calls`` calls, each round behind a ``torch.cuda._sleep`` that keeps the GPU busy: only
    Python and the launches count (an eager call's host cost)."""
    ts = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        torch.cuda._sleep(sleep_cycles)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        ts.append((time.perf_counter() - t0) * 1e6 / calls)
        torch.cuda.synchronize()
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


def time_graph(fns, reps=20):
    """Median/min/max microseconds per call, from a CUDA graph of len(fns) * k calls."""
    per = max(len(fns), 8)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for j in range(per):
            fns[j % len(fns)]()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1000.0 / per)
    ts.sort()
    return ts[len(ts) // 2], ts[0], ts[-1]


@contextlib.contextmanager
def module_constants(mod, values, cached=()):
    """``mod``'s attributes set to ``values`` inside the block and restored after it, the
    ``functools`` caches ``cached`` cleared on the way in and out: the old/new probes' switch
    between a rule's constants."""
    keep = {k: getattr(mod, k) for k in values}
    try:
        for k, v in values.items():
            setattr(mod, k, v)
        for f in cached:
            f.cache_clear()
        yield
    finally:
        for k, v in keep.items():
            setattr(mod, k, v)
        for f in cached:
            f.cache_clear()


def rounds(fns, n=3):
    """{name: [us per round]}: each of ``fns`` (name -> a function returning microseconds)
    called once a round for ``n`` rounds, rotating which goes first (the probes' rotating
    rounds; the median of a name's rounds is its time)."""
    names = list(fns)
    got = {k: [] for k in names}
    for r in range(n):
        for k in names[r % len(names):] + names[:r % len(names)]:
            got[k].append(fns[k]())
    return got


def checked_rounds(cfgs, run, out, ref, label, copies=4):
    """The old/new probes' measurement: each of ``cfgs`` (name -> config) run once into a
    NaN-poisoned copy of ``out`` and checked against ``ref`` (SystemExit naming ``label`` and
    the config on a mismatch), then timed in 3 rotating rounds of CUDA-graph medians over
    ``copies`` weight copies; ``run(config, copy, out)`` launches. Returns ``({name: [us per
    round]}, {name: median us})``."""
    for name, c in cfgs.items():
        o = torch.full_like(out, float("nan"))
        run(c, 0, o)
        if not close(o, ref)[0]:
            raise SystemExit(f"FAIL {label} {name}")
    times = rounds({k: lambda k=k: time_graph([lambda i=i: run(cfgs[k], i, out)
                                                for i in range(copies)])[0] for k in cfgs})
    return times, {k: sorted(v)[len(v) // 2] for k, v in times.items()}


PLAIN = [True]  # do_bench without a graph too (costs ~0.1 s per row)


def time_plain(fns):
    if not PLAIN[0]:
        return float("nan")
    it = [0]

    def f():
        fns[it[0] % len(fns)]()
        it[0] += 1
    return triton.testing.do_bench(f, warmup=10, rep=40, return_mode="median") * 1000.0


ROWS = []
META = {}


def dump():
    """Write what we have so far (a run cut short still leaves its numbers)."""
    if "path" in META:
        with open(META["path"], "w") as f:
            json.dump(dict(META["head"], rows=ROWS), f, indent=1)


def xdt(p):
    return "nvfp4" if p.op == "nvfp4_mm" else str(p.dtype).replace("torch.", "")


def record(p, impl, cfg, out_dtype, t, t_plain, correct, err):
    med, lo, hi = t
    gb = p.bytes_moved(out_dtype) / (med * 1e-6) / 1e9
    row = dict(op=p.op, impl=impl, config=str(cfg) if cfg else None, M=p.M, N=p.N, K=p.K,
               group_size=p.group, x_dtype=xdt(p),
               prepacked=False, median_us=med, min_us=lo, max_us=hi, plain_us=t_plain,
               tflops=2 * p.M * p.N * p.K / (med * 1e-6) / 1e12, gbps=gb, correct=correct,
               rel_err=err, bytes=p.bytes_moved(out_dtype))
    ROWS.append(row)
    dump()
    print(f"  {p.op:15s} M={p.M:4d} N={p.N:5d} K={p.K:5d} {impl:12s} {med:8.2f} us "
          f"(plain {t_plain:8.2f}) {gb:7.0f} GB/s ok={correct} {cfg or ''}", flush=True)


def bench_gemv(p, cfg, out_dtype=torch.float16):
    out = torch.full((p.M, p.N), float("nan"), dtype=out_dtype, device=DEV)
    try:
        p.gemv(0, out, cfg)
        ok, err = close(out, p.reference(0))
        if not ok:
            print(f"  WRONG {p.op} M={p.M} {cfg} rel err {err:.3g}")
            record(p, "gemv", cfg, out_dtype, (float("nan"),) * 3, float("nan"), False, err)
            return None
        fns = [(lambda i=i: p.gemv(i, out, cfg)) for i in range(len(p.w))]
        t = time_graph(fns)
        record(p, "gemv", cfg, out_dtype, t, time_plain(fns), True, err)
        return t[0]
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return None


def bench_gemm(p, G, out_dtype=torch.float16):
    if G is None:
        return None
    out = torch.full((p.M, p.N), float("nan"), dtype=out_dtype, device=DEV)
    try:
        p.gemm(0, out, G)
        ok, err = close(out, p.reference(0))
        if not ok:
            print(f"  WRONG gemm {p.op} M={p.M} rel err {err:.3g}")
            return None
        fns = [(lambda i=i: p.gemm(i, out, G)) for i in range(len(p.w))]
        t = time_graph(fns)
        record(p, "gemm", None, out_dtype, t, time_plain(fns), True, err)
        return t[0]
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return None


def bench_cublas(p):
    wd = [p.dequant_bf16(i) for i in range(2)]
    x = (torch.randn(p.M, p.K, device=DEV) * 0.5).to(torch.bfloat16)
    out = torch.empty((p.M, p.N), dtype=torch.bfloat16, device=DEV)
    fns = [(lambda i=i: torch.matmul(x, wd[i].T, out=out)) for i in range(2)]
    t = time_graph(fns)
    med = t[0]
    gb = (wd[0].numel() * 2 + x.numel() * 2 + out.numel() * 2) / (med * 1e-6) / 1e9
    ROWS.append(dict(op=p.op, impl="cublas_bf16", M=p.M, N=p.N, K=p.K, group_size=p.group,
                     x_dtype=xdt(p),
                     prepacked=False, median_us=med, min_us=t[1], max_us=t[2],
                     tflops=2 * p.M * p.N * p.K / (med * 1e-6) / 1e12, gbps=gb, correct=True))
    print(f"  cublas_bf16 M={p.M:4d} N={p.N} K={p.K} {med:8.2f} us {gb:7.0f} GB/s (of bf16 bytes)")

    return med


def bench_copy(nbytes):
    a = torch.empty(nbytes, dtype=torch.uint8, device=DEV)
    b = [torch.empty_like(a) for _ in range(4)]
    fns = [(lambda i=i: b[i].copy_(a)) for i in range(4)]
    t = time_graph(fns)
    ROWS.append(dict(op="copy", impl="torch_copy", M=0, N=0, K=0, median_us=t[0], min_us=t[1],
                     max_us=t[2], gbps=2 * nbytes / (t[0] * 1e-6) / 1e9, bytes=2 * nbytes,
                     correct=True))
    print(f"  copy {nbytes/1e6:.1f} MB read+write: {t[0]:.2f} us, {2*nbytes/t[0]/1e3:.0f} GB/s")


@triton.jit
def _read_probe_kernel(w_ptr, out_ptr, K_SPLIT, stride_wn, ROWS: tl.constexpr,
                       WORDS: tl.constexpr):
    """Read-only probe of an access pattern: each program streams [ROWS, WORDS] int32 tiles of
    its row block along its K range (one step prefetched), XOR-reduces them, writes one word."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k_begin = tl.program_id(1) * K_SPLIT
    cols = tl.arange(0, WORDS)
    base = w_ptr + rows[:, None] * stride_wn + cols[None, :]
    acc = tl.zeros((ROWS, WORDS), dtype=tl.int32)
    cur = tl.load(base + k_begin)
    for k in range(k_begin, k_begin + K_SPLIT, WORDS):
        nxt = tl.load(base + k + WORDS, mask=k + WORDS < k_begin + K_SPLIT, other=0)
        acc ^= cur
        cur = nxt
    tl.store(out_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1),
             tl.sum(acc & 0xFF))


def bench_probe(N, K):
    """Device-memory efficiency of the GEMV's access patterns alone (no decode, no MMA)."""
    words = K // 8
    ws = [torch.randint(-2**31, 2**31 - 1, (N, words), dtype=torch.int32, device=DEV)
          for _ in range(4)]
    for rows, wds, split in ((64, 16, 4), (64, 16, 1), (16, 32, 1), (16, 128, 1), (64, 32, 1),
                             (8, 128, 1), (64, 64, 2)):
        out = torch.empty(N // rows * split, dtype=torch.int32, device=DEV)
        ks = words // split
        fns = [(lambda w=w, o=out, r=rows, s=split, k=ks, c=wds: _read_probe_kernel[(N // r, s)](
            w, o, k, words, ROWS=r, WORDS=c, num_warps=4)) for w in ws]
        t = time_graph(fns)
        nb = N * words * 4
        ROWS.append(dict(op="read_probe", impl=f"rows{rows}_bytes{wds * 4}_split{split}", M=0,
                         N=N, K=K, median_us=t[0], min_us=t[1], max_us=t[2],
                         gbps=nb / (t[0] * 1e-6) / 1e9, correct=True))
        print(f"  read probe rows={rows:3d} bytes/row/step={wds * 4:5d} split={split}: "
              f"{t[0]:6.2f} us {nb / t[0] / 1e3:6.0f} GB/s", flush=True)


def correctness(quick=False):
    """Every config family on ragged shapes (odd N, K not a multiple of the K step), both nibble
    orders, fp32 out; then NaN scales with the default configs and fp16 out."""
    print("== correctness (fp32 out unless noted)")
    ok_all = True
    cases = []
    fam = [C(block_m=1, block_n=16, block_k=256, split_k=2, prefetch=3),
           C(block_m=4, block_n=16, block_k=256),
           C(block_m=16, block_n=64, block_k=128, use_dot=True, split_k=3, prefetch=3),
           C(block_m=16, block_n=64, block_k=256, use_dot=True, split_k=2, prefetch=1),
           C(block_m=16, block_n=128, block_k=128, use_dot=True, num_warps=8, split_k=4)]
    # (one compile per distinct constexpr set: keep the list short, the CPU tests cover more)
    for M in (1, 3) if quick else (1, 3, 16):
        for cfg in fam:
            if cfg.block_m < M:
                continue
            cases.append(("nvfp4_mm", M, 999, 1040, 16, torch.float16, "low_first", cfg))
            cases.append(("nvfp4_w4a16_mm", M, 999, 1040, 16, torch.float16, "low_first", cfg))
            cases.append(("nvfp4_w4a16_mm", M, 999, 1040, 16, torch.bfloat16, "low_first", cfg))
            cases.append(("w4a16_mm", M, 999, 1056, 32, torch.float16, "high_first", cfg))
            if cfg.use_dot:  # the exact group-scale (ROW_SCALE) path
                cases.append(("w4a16_mm", M, 999, 1152, 128, torch.float16, "low_first",
                              V.dataclasses.replace(cfg, block_k=128)))
            else:
                cases.append(("w4a16_mm", M, 999, 1056, 2, torch.float16, "low_first", cfg))
        cases.append(("nvfp4_mm", M, 999, 1040, 16, torch.float16, "high_first", fam[2]))
    for op, M, N, K, G, dt, order, cfg in cases:
        p = Problem(op, M, N, K, G, dt, 1, order)
        out = torch.full((M, N), float("nan"), dtype=torch.float32, device=DEV)
        try:
            p.gemv(0, out, cfg)
            ok, err = close(out, p.reference(0))
        except Exception as e:  # noqa: BLE001
            ok, err = False, repr(e)[:200]
        if not ok:
            ok_all = False
            print(f"  FAIL {op} M={M} K={K} G={G} {dt} {order} {cfg}: {err}")
    for op in ("nvfp4_mm", "nvfp4_w4a16_mm", "w4a16_mm"):  # NaN scale bytes propagate
        for M in (1, 16):
            p = Problem(op, M, 300, 512, 32, torch.float16, 1)
            wq, ws = p.w[0]
            if op == "w4a16_mm":
                ws[5, 3] = float("nan")
            else:
                ws[5, 3] = 0x7F
                ws[7, 0] = 0xFF
            out = torch.full((M, 300), float("nan"), dtype=torch.float16, device=DEV)
            p.gemv(0, out, None)
            ok, err = close(out, p.reference(0))
            nan_rows = torch.isnan(out).any(0).nonzero().flatten().tolist()
            ok_all &= ok
            print(f"  NaN {op} M={M}: ok={ok} NaN columns {nan_rows}")
    print(f"  {len(cases)} cases, all ok = {ok_all}", flush=True)
    return ok_all


def D(bn, bk, sp, pf, nw=4, bm=16):
    return C(block_m=bm, block_n=bn, block_k=bk, split_k=sp, prefetch=pf, num_warps=nw,
             use_dot=True)


def F(bn, bk, sp, pf, bm=1):
    return C(block_m=bm, block_n=bn, block_k=bk, split_k=sp, prefetch=pf)


# v2 sweep (DOT: block_n, block_k, split, prefetch[, warps]); v3's shipped config is D(64,128,4,0).
NV_DOT = [D(64, 128, 4, 0), D(64, 128, 4, 1), D(64, 128, 4, 2), D(64, 128, 4, 3),
          D(64, 128, 2, 3), D(64, 128, 3, 3), D(64, 128, 8, 2), D(64, 256, 4, 1),
          D(128, 128, 4, 2, 8), D(128, 128, 2, 3, 8)]
NV_FMA = [F(16, 256, 1, 0), F(16, 256, 1, 2), F(16, 256, 2, 3), F(16, 128, 2, 3)]
GW_DOT = {128: [D(64, 128, 4, 0), D(64, 128, 4, 2), D(64, 128, 4, 3), D(64, 128, 2, 3)],
          32: [D(64, 32, 4, 0), D(128, 32, 4, 3), D(256, 32, 4, 3, 8), D(64, 64, 4, 3),
               D(64, 128, 4, 2)]}


def bench_reduce(M, N, split):
    """The split-K second pass alone (its share of a split call)."""
    part = torch.randn(split, M, N, device=DEV)
    out = torch.empty(M, N, dtype=torch.float16, device=DEV)

    def f():
        V._splitk_reduce_kernel[(triton.cdiv(M * N, 1024),)](
            part, out, M, N, 1.0, out.stride(0), SPLIT_K=split, BLOCK=1024, num_warps=4)
    t = time_graph([f])
    ROWS.append(dict(op="splitk_reduce", impl="fp4mm", M=M, N=N, K=split, median_us=t[0],
                     min_us=t[1], max_us=t[2], correct=True))
    print(f"  splitk_reduce M={M} N={N} split={split}: {t[0]:.2f} us", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--quick", action="store_true", help="fewer correctness cases")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--plain", action="store_true", help="also time without a CUDA graph")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds; stop timing after")
    ap.add_argument("--phase", default="2", help="1: the first v2 sweep; 2: access-pattern probe "
                    "and long-row tiles")
    args = ap.parse_args()
    PLAIN[0] = args.plain
    t_start = time.time()
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    META["path"] = os.path.join(args.out, "decode.json")
    META["head"] = dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                        triton=triton.__version__, date=datetime.datetime.now().isoformat(),
                        script="scripts/gpu_decode.py (v2 sweep)")
    ok = True if args.skip_check else correctness(args.quick)
    META["head"]["correctness_ok"] = ok
    print(f"[{time.time() - t_start:.0f} s] correctness done", flush=True)
    N, K = 18432, 3072
    bench_copy(N * K // 2 + N * K // 16)

    def left():
        return args.budget - (time.time() - t_start)

    if args.phase == "2":
        phase2(N, K, left)
        META["head"]["wall_s"] = time.time() - t_start
        dump()
        summary()
        return

    for M in (1, 4, 16):
        for op in ("nvfp4_w4a16_mm", "nvfp4_mm"):
            if left() < 0:
                break
            print(f"== {op} M={M} N={N} K={K} [{time.time() - t_start:.0f} s]", flush=True)
            p = Problem(op, M, N, K, copies=4)
            for cfg in NV_DOT + (NV_FMA if M == 1 else []):
                bench_gemv(p, cfg)
            bench_gemv(p, None)
            if op == "nvfp4_mm":
                bench_cublas(p)
            del p
    for M in (1, 16):
        bench_reduce(M, N, 4)
    for G_ in (128, 32):
        for M in (1, 4, 16):
            if left() < 0:
                break
            print(f"== w4a16_mm G={G_} M={M} [{time.time() - t_start:.0f} s]", flush=True)
            p = Problem("w4a16_mm", M, N, K, G_, torch.float16, copies=4)
            for cfg in GW_DOT[G_] + ([F(16, 256, 1, 2), F(16, 256, 2, 3)] if M == 1 else []):
                bench_gemv(p, cfg)
            bench_gemv(p, None)
            del p
    for M in (1, 16):  # bf16 activations, default config
        if left() < 0:
            break
        for op, G_ in (("nvfp4_w4a16_mm", 16), ("w4a16_mm", 32)):
            p = Problem(op, M, N, K, G_, torch.bfloat16, copies=4)
            bench_gemv(p, None, torch.bfloat16)
            del p
    for M in (32, 64):  # above the bar's range: v3-style (no prefetch) vs the default
        if left() < 0:
            break
        p = Problem("nvfp4_mm", M, N, K, copies=4)
        bm = min(64, max(16, 1 << (M - 1).bit_length()))
        for cfg in (D(64, 128, 2, 0, bm=bm), D(64, 128, 2, 2, bm=bm), None):
            bench_gemv(p, cfg)
        del p
    print("== N=K=8192 M=1", flush=True)
    for op, G_ in (("nvfp4_mm", 16), ("nvfp4_w4a16_mm", 16), ("w4a16_mm", 32)):
        if left() < 0:
            break
        p = Problem(op, 1, 8192, 8192, G_, torch.float16, copies=4)
        for cfg in (D(64, 128, 4, 2), D(64, 128, 8, 3), F(16, 256, 4, 3), None):
            if op == "w4a16_mm" and cfg is not None and cfg.use_dot:
                cfg = V.dataclasses.replace(cfg, block_k=32, block_n=128)
            bench_gemv(p, cfg)
        if op == "nvfp4_mm":
            bench_cublas(p)
        del p
    META["head"]["wall_s"] = time.time() - t_start
    dump()
    print("wrote", META["path"])
    summary()


PHASE2_DOT = [D(64, 128, 4, 1), D(64, 128, 1, 1), D(64, 256, 1, 1), D(64, 256, 2, 1),
              D(16, 512, 1, 1), D(16, 1024, 1, 0), D(32, 512, 1, 1), D(32, 256, 2, 1)]
PHASE2_FMA = [F(16, 256, 1, 2), F(16, 256, 1, 1), F(8, 1024, 1, 1), F(8, 512, 1, 1),
              F(16, 512, 1, 1), C(block_m=1, block_n=8, block_k=512, prefetch=2, num_warps=2)]


def phase2(N, K, left):
    """Is the access pattern the limit? A read-only probe of each pattern, then GEMV tiles that
    read longer runs of each row per step (and whole rows per program)."""
    bench_probe(N, K)
    for M in (1, 4, 16):
        for op in ("nvfp4_w4a16_mm", "nvfp4_mm"):
            if left() < 0:
                return
            print(f"== {op} M={M}", flush=True)
            p = Problem(op, M, N, K, copies=4)
            for cfg in (PHASE2_DOT if M != 4 else PHASE2_DOT[:2]) + (PHASE2_FMA if M == 1 else []):
                bench_gemv(p, cfg)
            bench_gemv(p, None)
            if op == "nvfp4_mm":
                bench_cublas(p)
            del p
    for G_, cfgs in ((32, [D(64, 32, 4, 0), D(64, 32, 1, 0), D(64, 32, 2, 1)]),
                     (128, [D(64, 128, 4, 1), D(64, 128, 1, 1), D(64, 128, 2, 1)])):
        for M in (1, 4, 16):
            if left() < 0:
                return
            p = Problem("w4a16_mm", M, N, K, G_, torch.float16, copies=4)
            for cfg in cfgs + ([F(16, 256, 1, 2), F(8, 1024, 1, 1)] if M == 1 else []):
                bench_gemv(p, cfg)
            bench_gemv(p, None)
            del p
    for M in (1, 16):  # bf16 activations, default config
        for op, G_ in (("nvfp4_w4a16_mm", 16), ("w4a16_mm", 32)):
            p = Problem(op, M, N, K, G_, torch.bfloat16, copies=4)
            bench_gemv(p, None, torch.bfloat16)
            del p
    for op, G_ in (("nvfp4_mm", 16), ("nvfp4_w4a16_mm", 16), ("w4a16_mm", 32)):
        p = Problem(op, 1, 8192, 8192, G_, torch.float16, copies=4)
        bench_gemv(p, None)
        if op == "nvfp4_mm":
            bench_cublas(p)
        del p


def summary():
    """Best gemv vs cuBLAS bf16 per (op, M, N, K, group, dtype), and the v3-style row."""
    print("\n== summary (CUDA-graph median us; GB/s of the bytes that must move)")
    copy = [r for r in ROWS if r["op"] == "copy"]
    keys = {}
    for r in ROWS:
        if r["op"] in ("copy", "splitk_reduce", "read_probe") or not r.get("correct"):
            continue
        k = (r["op"], r["M"], r["N"], r["K"], r.get("group_size"), r.get("x_dtype"))
        keys.setdefault(k, []).append(r)
    for k, rs in keys.items():
        g = [r for r in rs if r["impl"] == "gemv"]
        cb = [r for r in rs if r["impl"] == "cublas_bf16"]
        line = f"{k[0]:15s} M={k[1]:3d} N={k[2]:5d} K={k[3]:5d} g={k[4]} {k[5]:8s}"
        if g:
            b = min(g, key=lambda r: r["median_us"])
            d = [r for r in g if r["config"] is None]
            line += f" best {b['median_us']:6.2f} us {b['gbps']:5.0f} GB/s"
            if d:
                line += f" | default {d[0]['median_us']:6.2f}"
            if copy:
                line += f" | copy-floor {copy[0]['median_us'] / 2:5.2f}"
            if cb:
                ratio = cb[0]["median_us"] / b["median_us"]
                line += f" | cuBLAS {cb[0]['median_us']:6.2f} ({ratio:.2f}x)"
            line += f"  {b['config']}"
        print(line)


if __name__ == "__main__":
    main()
