"""``fp4mm bench``: check every implementation against the oracle, then time it beside the
baselines, in one run on one card; print a table, write one JSON per run and a PNG plot.

Measurement rules (``docs`` and the team's benchmarking notes): inputs from the challenge's
generators; a wrong output is never timed (its row says ``correct: false`` and has no time);
``triton.testing.do_bench`` after warm-up, which also flushes the L2 before each call, and on top
of that every implementation rotates through enough copies of its weights to exceed 3x the L2;
median, min and max; TF/s = 2 M N K / time; effective GB/s = bytes the problem must read and
write once / time (the same numerator for every implementation of a case); ratios are
``baseline time / time`` against cuBLAS bf16 (fp16 for ``w4a16_mm``) of the same case and run.

The machinery (``run_cases``, ``build_result``, ``write_outputs``) takes a device and a timer, so
tests run it on the CPU with a stub timer; the command itself needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import itertools
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fp4mm.bench.cases import (
    DEFAULT_L2_BYTES,
    DEFAULT_SUITES,
    RATIO_BASELINE,
    SUITES,
    TOLERANCE,
    Case,
    Impl,
    Runner,
    impl_label,
    make_problem,
    parse_shapes,
    select_cases,
)

SCHEMA_VERSION = 1
ALWAYS_RUN = ("cublas_bf16", "cublas_fp16")  # the ratios need them
# (warmup_ms, rep_ms) for do_bench.
REPS = {False: (25, 100), True: (5, 20)}

# A timer: (fn, quick) -> (median_ms, min_ms, max_ms).
Timer = Callable[[Callable[[], object], bool], tuple[float, float, float]]


def _summary(times: Sequence[float]) -> tuple[float, float, float]:
    times = sorted(times)
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    return median, times[0], times[-1]


def do_bench_timer(fn, quick: bool) -> tuple[float, float, float]:
    """``triton.testing.do_bench`` (events, L2 flushed before each call): median, min, max ms."""
    from triton.testing import do_bench

    warmup, rep = REPS[quick]
    return _summary(do_bench(fn, warmup=warmup, rep=rep, return_mode="all"))


FLUSH_BYTES = 256 * 2**20


def read_flush_timer(fn, quick: bool) -> tuple[float, float, float]:
    """do_bench's procedure (estimate, warm up, then events around each call), but the L2 is
    flushed by *reading* 256 MB instead of writing zeros. A write leaves up to an L2 of dirty
    lines behind, which the timed kernel then has to write back to memory: extra traffic that
    memory-bound kernels of a few tens of microseconds feel. Measured on an H100 80GB HBM3
    (2026-11-26, one run each, same machine, --quick): cuBLAS bf16 at 1x8192x8192 59.6 us with
    do_bench, 50.1 us with this; fp4mm's decode kernels 1.5-4x faster with this, and much less
    spread between runs (do_bench gave 40 and 77 us for the same kernel in two runs)."""
    warmup, rep = REPS[quick]
    flush = torch.ones(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    sink = torch.empty((), dtype=torch.int64, device="cuda")

    def clear():
        torch.sum(flush, dim=0, out=sink)

    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        clear()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(max(1, int(warmup / estimate))):
        fn()
    n = max(1, int(rep / estimate))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        clear()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return _summary([s.elapsed_time(e) for s, e in zip(starts, ends)])


GRAPH_CALLS = 20  # calls captured per graph


def graph_timer(fn, quick: bool) -> tuple[float, float, float]:
    """GPU time without the host: GRAPH_CALLS calls of ``fn`` captured in one CUDA graph, the graph
    replayed between two events, the time divided by GRAPH_CALLS (median, min, max over replays).
    No flush: the rotating weight copies (>= 3x L2) already keep the L2 cold, and a flush inside
    the graph would be timed too. Eager timers of microsecond kernels measure Python's launch
    cost instead (25-50 us per Triton launch on the H100 VM, docs/perf-log.md)."""
    fn()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch's graph docs ask
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(GRAPH_CALLS):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5 if quick else 20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / GRAPH_CALLS)
    return _summary(times)


TIMERS = {"do_bench": do_bench_timer, "read_flush": read_flush_timer, "graph": graph_timer}
TIMER_METHODS = {
    "do_bench": "triton.testing.do_bench (L2 flushed by writing 256 MB before each call)",
    "read_flush": "do_bench's procedure with the L2 flushed by reading 256 MB before each call",
    "graph": f"CUDA-graph replay of {GRAPH_CALLS} calls (GPU time, no host launch cost)",
}


@dataclass
class Context:
    """What a builder may use: ``time(fn)`` -> (median, min, max) ms with the run's timer."""

    timer: Timer
    quick: bool

    def time(self, fn):
        return self.timer(fn, self.quick)


# ----------------------------------------------------------------------------- correctness
def _compare(runner: Runner, got, expected, case: Case) -> dict:
    """``{"correct": bool, "max_abs_err": float, "rel_l2_err": float}`` for one output."""
    if runner.check == "exact":
        got, expected = tuple(got), tuple(expected)
        diffs = [_difference(f"output[{i}]", a, b) for i, (a, b) in enumerate(zip(got, expected))]
        if len(got) != len(expected):
            diffs.append(f"{len(got)} outputs, expected {len(expected)}")
        diffs = [d for d in diffs if d]
        return {"correct": not diffs, "max_abs_err": None, "rel_l2_err": None,
                "error": "; ".join(diffs) or None}
    out = runner.result(got) if runner.result is not None else got.float()
    ref = expected.float()
    if out.shape != ref.shape:
        return {"correct": False, "max_abs_err": None, "rel_l2_err": None,
                "error": f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}"}
    out, ref = out.double(), ref.double()
    bad_nan = bool((~torch.isfinite(out) & torch.isfinite(ref)).any())
    finite = torch.isfinite(out) & torch.isfinite(ref)
    diff = torch.where(finite, out - ref, torch.zeros_like(ref))
    max_abs = float(diff.abs().max()) if diff.numel() else 0.0
    rel_l2 = float(diff.norm() / ref.where(finite, 0).norm().clamp_min(1e-30))
    if runner.check == "rel_l2":
        ok = rel_l2 <= runner.rel_l2_tol and not bad_nan
    else:
        atol, rtol = TOLERANCE[case.op]
        ok = not bad_nan and bool(torch.allclose(out, ref, atol=atol, rtol=rtol, equal_nan=True))
    return {"correct": ok, "max_abs_err": max_abs, "rel_l2_err": rel_l2}


def _difference(name: str, a, b) -> str | None:
    """None if ``a`` and ``b`` are bit-for-bit equal, else what differs and where first."""
    a, b = torch.as_tensor(a).cpu(), torch.as_tensor(b).cpu()
    if a.shape != b.shape:
        return f"{name}: shape {tuple(a.shape)}, expected {tuple(b.shape)}"
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    ne = (a != b) & ~(a.isnan() & b.isnan()) if a.is_floating_point() else a != b
    count = int(ne.sum())
    if count == 0:
        return None
    first = tuple(int(i) for i in ne.nonzero()[0]) if a.dim() else ()
    return (f"{name}: {count} of {a.numel()} differ, first at {first}: {a[first].item()} != "
            f"{b[first].item()}")


def oracle(problem) -> torch.Tensor | tuple:
    """The case's expected result: the FP32 oracle (``fp4mm.reference``), or for the quantiser
    the codec's output computed on the CPU."""
    from fp4mm import reference

    d, op = problem.data, problem.case.op
    if op == "nvfp4_mm":
        return reference.nvfp4_mm(d["x_q"], d["x_scales"], d["w_q"], d["w_scales"], d["alpha"])
    if op == "w4a16_mm":
        return reference.w4a16_mm(d["x"], d["w_q"], d["scales"], d["group_size"])
    if op == "nvfp4_w4a16_mm":
        twin = getattr(reference, "nvfp4_w4a16_mm", None)
        if twin is not None:
            return twin(d["x"], d["w_q"], d["w_scales"], d["w_global_scale"])
        from fp4mm.formats import dequantize_nvfp4

        w = dequantize_nvfp4(d["w_q"], d["w_scales"], d["w_global_scale"])
        with reference._ieee_fp32():
            return d["x"].float() @ w.t()
    from fp4mm.formats.nvfp4 import quantize_nvfp4

    # On the CPU: the codec gives the same bytes on every device (IEEE divisions), and the CPU
    # copy keeps the oracle independent of the GPU being measured.
    return tuple(quantize_nvfp4(d["x"].cpu()))


# ----------------------------------------------------------------------------- the run
def _row(case: Case, impl: Impl, prepacked: bool) -> dict:
    return {"op": case.op, "impl": impl.name, "kind": impl.kind, "suite": case.suites[0],
            "suites": list(case.suites), "M": case.M, "N": case.N, "K": case.K,
            "group_size": case.group_size, "alpha": case.alpha, "prepacked": prepacked,
            "memory_bound": case.memory_bound, "flops": case.flops, "bytes": case.bytes,
            "median_us": None, "min_us": None, "max_us": None, "tflops": None, "gbps": None,
            "correct": False, "max_abs_err": None, "rel_l2_err": None, "copies": None,
            "error": None, "note": ""}


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_impl(case: Case, problem, impl: Impl, expected,
               ctx: Context) -> tuple[dict, Runner | None] | None:
    """Build and check one implementation: (its row, the runner to time, or None where it is
    wrong or broken); None if it does not apply."""
    try:
        runner = impl.build(case, problem, ctx)
    except Exception as exc:  # noqa: BLE001 - a broken implementation is a row, not a crash
        row = _row(case, impl, False)
        row["error"] = f"build: {type(exc).__name__}: {exc}"
        return row, None
    if runner is None:
        return None
    row = _row(case, impl, runner.prepacked)
    row.update(copies=runner.copies, note=runner.note, **runner.extra)
    try:
        got = runner.run(0)
        _sync(problem.device)
        want = runner.expected() if runner.expected is not None else expected
        row.update(_compare(runner, got, want, case))
        del got
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"run: {type(exc).__name__}: {exc}"
        return row, None
    return row, (runner if row["correct"] else None)


def time_round(row: dict, runner: Runner, ctx: Context) -> bool:
    """One timing round of a checked implementation, appended to ``row["round_medians_us"]``
    (min and max kept over rounds); False (and the row marked wrong) if timing raised."""
    counter = itertools.count()
    try:
        med, lo, hi = ctx.time(lambda: runner.run(next(counter) % runner.copies))
    except Exception as exc:  # noqa: BLE001
        row.update(correct=False, error=f"timing: {type(exc).__name__}: {exc}")
        return False
    row.setdefault("round_medians_us", []).append(med * 1e3)
    row["min_us"] = lo * 1e3 if row["min_us"] is None else min(row["min_us"], lo * 1e3)
    row["max_us"] = hi * 1e3 if row["max_us"] is None else max(row["max_us"], hi * 1e3)
    return True


def finish_row(row: dict, case: Case) -> None:
    """The row's median (over its rounds' medians), TF/s and GB/s."""
    seconds = _summary(row["round_medians_us"])[0] * 1e-6
    row["median_us"] = seconds * 1e6
    if case.flops:
        row["tflops"] = case.flops / seconds / 1e12
    row["gbps"] = case.bytes / seconds / 1e9


ROUNDS = 3  # timing rounds per case


def _rotated(items: list, r: int) -> list:
    """``items`` starting at index r (mod its length)."""
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def run_cases(cases: Sequence[Case], impls: Sequence[Impl], device, timer: Timer,
              quick: bool = False, l2_bytes: int = DEFAULT_L2_BYTES,
              on_step: Callable[[str, bool], None] | None = None,
              on_case: Callable[[list[dict]], None] | None = None,
              rounds: int = ROUNDS) -> list[dict]:
    """Check and time every applicable (case, implementation); returns the rows, ratios added.
    A case's implementations are all checked first, then timed in ``rounds`` rounds, round r
    starting at the r-th implementation, so that none is always timed first (on an H100 the
    first kernel timed after a pause measured up to 4% faster than the same kernel timed later in
    the same process: docs/perf-log.md, "Bench: timing rounds"). The reported median
    is the median of the rounds' medians. ``on_step(description, done)`` is called before each
    check and timing round (done False; the description ends with the implementation's name)
    and once an implementation is finished (done True); ``on_case(rows_so_far)`` after each
    case (to save partial results)."""
    device = torch.device(device)
    ctx = Context(timer, quick)
    step = on_step or (lambda what, done: None)
    rows = []
    for case in cases:
        todo = [i for i in impls if case.op in i.ops and case.allows(i.name)]
        if not todo:
            continue
        problem = make_problem(case, device, l2_bytes)
        expected = oracle(problem)
        timed = []  # (what, row, runner)
        for impl in todo:
            what = f"{case.op} {case.shape} {impl.name}"
            step(what, False)
            checked = check_impl(case, problem, impl, expected, ctx)
            if checked is not None:
                rows.append(checked[0])
            if checked is None or checked[1] is None:  # not applicable, or never timed
                step("", True)
            else:
                timed.append((what, *checked))
        for r in range(rounds):
            for what, row, runner in _rotated(timed, r):
                if not row["correct"]:  # its timing raised in an earlier round
                    continue
                step(what, False)
                if not time_round(row, runner, ctx) or r == rounds - 1:
                    step("", True)
        for _, row, _ in timed:
            if row["correct"]:
                finish_row(row, case)
        del problem, expected, timed
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if on_case is not None:
            add_ratios(rows)
            on_case(rows)
    add_ratios(rows)
    return rows


COPY_BYTES = 1 << 29  # 512 MiB, ten times the L2


COPY_METHOD = ("device-to-device copy of 512 MiB, bytes read + written, timed eagerly "
               "(read_flush) whatever the run's timer")


def measure_copy_gbps(device, timer: Timer, quick: bool = False, nbytes: int = COPY_BYTES):
    """The memory roofline of this run: a device-to-device copy of ``nbytes``, counting bytes
    read plus bytes written, in GB/s. ``fp4mm bench`` times it eagerly (read_flush) whatever the
    run's timer: captured in a CUDA graph (a memcpy node; why it is slower there is not
    established) the same copy ran about 20% slower (H100 80GB HBM3, bench/results: 2417-2437
    GB/s in the 43 graph-timed runs, 2963-3027 in the three eager ones; H200: 2701-2764, graph
    only), which put our own kernels above "100% of a copy". A 512 MiB copy takes hundreds of
    microseconds, so the eager launch cost does not show."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 256)
    dst = torch.empty_like(src)
    median_ms = timer(lambda: dst.copy_(src), quick)[0]
    return 2 * nbytes / (median_ms * 1e-3) / 1e9


def add_roofline(rows: list[dict], copy_gbps: float | None) -> None:
    """``pct_copy_roofline``: effective GB/s as a percentage of the run's copy bandwidth."""
    for r in rows:
        ok = copy_gbps and r.get("gbps")
        r["pct_copy_roofline"] = 100.0 * r["gbps"] / copy_gbps if ok else None


def add_ratios(rows: list[dict]) -> None:
    """``ratio_vs_cublas_bf16`` / ``_fp16`` (baseline median / median, > 1 is faster) and
    ``ratio`` against the op's own baseline (``ratio_baseline``), within each case."""
    base: dict[tuple, dict[str, float]] = {}
    for r in rows:
        if r["impl"] in ("cublas_bf16", "cublas_fp16") and r["median_us"]:
            base.setdefault(_case_key(r), {})[r["impl"]] = r["median_us"]
    for r in rows:
        b = base.get(_case_key(r), {})
        t = r["median_us"]
        for name in ("cublas_bf16", "cublas_fp16"):
            r[f"ratio_vs_{name}"] = b[name] / t if t and name in b else None
        r["ratio_baseline"] = RATIO_BASELINE.get(r["op"])
        r["ratio"] = r.get(f"ratio_vs_{r['ratio_baseline']}") if r["ratio_baseline"] else None


def _case_key(r: dict) -> tuple:
    return (r["op"], r["M"], r["N"], r["K"], r["group_size"], r["alpha"])


def select_impls(impls: Sequence[Impl], patterns: Sequence[str] | None) -> list[Impl]:
    """Implementations whose name matches one of ``patterns`` (fnmatch), plus the ratio
    baselines; all when ``patterns`` is None."""
    if not patterns:
        return list(impls)
    keep = [i for i in impls if i.name in ALWAYS_RUN
            or any(fnmatch.fnmatchcase(i.name, p) for p in patterns)]
    return keep


# ----------------------------------------------------------------------------- metadata, output
def git_commit(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout; ``FP4MM_GIT_COMMIT`` overrides (GPU machines get a copy
    of the tree without ``.git``)."""
    env = os.environ.get("FP4MM_GIT_COMMIT")
    if env:
        return env, os.environ.get("FP4MM_GIT_DIRTY", "0") not in ("", "0")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=cwd, check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, cwd=cwd,
                                    timeout=10).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": torch.cuda.get_device_name(device),
                "capability": list(torch.cuda.get_device_capability(device)),
                "sm_count": props.multi_processor_count,
                "l2_bytes": getattr(props, "L2_cache_size", None) or DEFAULT_L2_BYTES,
                "cuda": torch.version.cuda}
    return {"device": f"cpu ({platform.processor() or platform.machine()})", "capability": None,
            "sm_count": None, "l2_bytes": 0, "cuda": None}


def build_result(rows: list[dict], device: torch.device, suites: Sequence[str], quick: bool,
                 argv: Sequence[str] | None = None, date: _dt.datetime | None = None,
                 copy_gbps: float | None = None, complete: bool = True,
                 timer: str = "read_flush") -> dict:
    """The JSON document of one run (schema: the team's benchmarking notes, plus ratios)."""
    import triton

    from fp4mm.backend import resolve_backend

    date = date or _dt.datetime.now(_dt.timezone.utc)
    commit, dirty = git_commit()
    info = device_info(device)
    warmup, rep = REPS[quick]
    return {
        "schema": SCHEMA_VERSION, **info, "torch": torch.__version__,
        "triton": triton.__version__, "python": platform.python_version(),
        "date": date.isoformat(timespec="seconds"), "git_commit": commit, "git_dirty": dirty,
        "backend": resolve_backend(device), "suites": list(suites), "quick": quick,
        "complete": complete,
        "argv": list(argv or []),
        "timing": {"method": TIMER_METHODS[timer] + "; rotating weight copies >= 3x L2; "
                   f"{ROUNDS} rounds per case, each starting at the next implementation, the "
                   "median over the rounds' medians", "timer": timer, "warmup_ms": warmup,
                   "rep_ms": rep, "rounds": ROUNDS},
        "roofline": {"copy_gbps": copy_gbps,
                     "method": COPY_METHOD},
        "rows": rows,
    }


def result_stem(result: dict) -> str:
    date = _dt.datetime.fromisoformat(result["date"])
    return f"{date:%Y%m%d-%H%M%S}_{'-'.join(result['suites'])}"


def write_outputs(result: dict, out_dir, plot_dir=None) -> tuple[Path, Path | None]:
    """Write ``<out_dir>/<stem>.json`` and, unless ``plot_dir`` is None or matplotlib is
    missing, ``<plot_dir>/<stem>.png``. Returns both paths (the plot's may be None)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(result)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    png = None
    if plot_dir is not None:
        try:
            from fp4mm.bench.plot import plot_result
        except ImportError as exc:
            print(f"fp4mm bench: no plot ({exc}); `python -m fp4mm.bench.report` can make it "
                  "from the JSON later", file=sys.stderr)
        else:
            png = plot_result(result, Path(plot_dir) / f"{stem}.png")
    return json_path, png


# ----------------------------------------------------------------------------- printing
def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """(op, shape, impl, median us, TF/s or GB/s, ratio, correct) as strings."""
    out = []
    for r in rows:
        shape = f"{r['M']}x{r['K']}" if r["op"] == "quantize_nvfp4" else \
            f"{r['M']}x{r['N']}x{r['K']}"
        impl = impl_label(r)
        if r["memory_bound"] or not r["flops"]:
            metric = _fmt(r["gbps"], ".0f") + " GB/s" if r["gbps"] else "-"
            if r.get("pct_copy_roofline"):
                metric += f" ({r['pct_copy_roofline']:.0f}%)"
        else:
            metric = _fmt(r["tflops"], ".1f") + " TF/s" if r["tflops"] else "-"
        ratio = _fmt(r.get("ratio"), ".3f") + "x" if r.get("ratio") else "-"
        correct = "yes" if r["correct"] else ("ERROR" if r["error"] else "WRONG")
        out.append((r["op"], shape, impl, _fmt(r["median_us"], ".1f"), metric, ratio, correct))
    return out


HEADERS = ("op", "shape", "impl", "median us", "TF/s | GB/s", "x cuBLAS", "correct")


def print_table(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 150)
    copy = result.get("roofline", {}).get("copy_gbps")
    table = Table(title=f"fp4mm bench on {result['device']} ({result['date']}); x cuBLAS = "
                        "cuBLAS bf16 time / time (fp16 for w4a16_mm), same run; GB/s (% of the "
                        f"device copy, {copy or 0:.0f} GB/s)")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("op", "shape", "impl") else "right")
    for cells in table_rows(result["rows"]):
        style = None if cells[-1] == "yes" else "red"
        table.add_row(*cells, style=style)
    console.print(table)
    for r in result["rows"]:
        if r["error"]:
            console.print(f"[red]{r['op']} {r['M']}x{r['N']}x{r['K']} {r['impl']}: "
                          f"{r['error']}[/red]")


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", action="append", choices=SUITES + ("all",),
                        help="which cases (repeatable; default: challenge, table5, decode)")
    parser.add_argument("--shapes", type=parse_shapes, default=None,
                        help="replace the suites' shapes: MxNxK[,MxNxK...] (MxK for quant)")
    parser.add_argument("--impls", default=None,
                        help="comma-separated implementation names or globs (e.g. 'fp4mm,quack*');"
                             " cuBLAS bf16/fp16 always run, the ratios need them")
    parser.add_argument("--out", default="bench/results", help="folder for the JSON result")
    parser.add_argument("--plot-dir", default="bench/plots", help="folder for the PNG plot")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plot")
    parser.add_argument("--timer", choices=tuple(TIMERS), default="read_flush",
                        help="read_flush (default): do_bench's procedure with the L2 flushed by a "
                             "read, which leaves no dirty lines for the timed kernel to write "
                             "back; do_bench: triton.testing.do_bench as it is; graph: CUDA-graph "
                             "replay, the GPU time without Python's launch cost (decode shapes)")
    parser.add_argument("--quick", action="store_true",
                        help=f"shorter timing (do_bench warmup/rep {REPS[True]} ms "
                             f"instead of {REPS[False]})")
    parser.set_defaults(run=run)


def suites_from(arg: Sequence[str] | None) -> list[str]:
    if not arg:
        return list(DEFAULT_SUITES)
    if "all" in arg:
        return list(SUITES)
    return list(dict.fromkeys(arg))


def run(args: argparse.Namespace, device=None, timer: Timer | None = None) -> int:
    """The ``fp4mm bench`` command. Exit status 2 without a CUDA GPU (unless a test passes a
    device and a timer)."""
    if device is None:
        if not torch.cuda.is_available():
            print("fp4mm bench: needs a CUDA GPU (torch.cuda.is_available() is False). Without "
                  "one, `fp4mm check` judges solutions on the CPU.", file=sys.stderr)
            return 2
        device = torch.device("cuda")
    device = torch.device(device)
    timer_name = getattr(args, "timer", "read_flush")
    # The copy roofline is timed eagerly whatever the run's timer (measure_copy_gbps says why);
    # a test's stub timer stands in for both.
    copy_timer = timer or TIMERS["read_flush"]
    timer = timer or TIMERS[timer_name]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from fp4mm.bench.impls import all_impls, nvfp4_w4a16_op

    suites = suites_from(args.suite)
    cases = select_cases(suites, args.shapes, have_nvfp4_w4a16=nvfp4_w4a16_op() is not None)
    impls = select_impls(all_impls(), args.impls.split(",") if args.impls else None)
    l2 = device_info(device)["l2_bytes"]
    total = sum(1 for c in cases for i in impls if c.op in i.ops and c.allows(i.name))
    start = _dt.datetime.now(_dt.timezone.utc)
    copy_gbps = None

    def save_partial(rows_so_far):
        # A run cut short (a time limit) still leaves its finished cases on disk.
        add_roofline(rows_so_far, copy_gbps)
        partial = build_result(rows_so_far, device, suites, args.quick, argv=sys.argv[1:],
                               date=start, copy_gbps=copy_gbps, complete=False,
                               timer=timer_name)
        write_outputs(partial, args.out, None)
        if not sys.stderr.isatty():
            last = rows_so_far[-1] if rows_so_far else None
            where = f"{last['op']} {last['M']}x{last['N']}x{last['K']}" if last else "-"
            elapsed = (_dt.datetime.now(_dt.timezone.utc) - start).total_seconds()
            print(f"[{elapsed:6.1f} s] {len(rows_so_far)} rows, last case {where}",
                  file=sys.stderr, flush=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  transient=False) as progress:
        task = progress.add_task("checking and timing", total=total)

        def step(what: str, done: bool):
            if done:
                progress.advance(task)
            else:
                progress.update(task, description=what)

        progress.update(task, description="memory roofline (device copy)")
        copy_gbps = measure_copy_gbps(device, copy_timer, args.quick)
        rows = run_cases(cases, impls, device, timer, quick=args.quick, l2_bytes=l2,
                         on_step=step, on_case=save_partial)
    add_roofline(rows, copy_gbps)
    result = build_result(rows, device, suites, args.quick, argv=sys.argv[1:], date=start,
                          copy_gbps=copy_gbps, timer=timer_name)
    json_path, png = write_outputs(result, args.out, None if args.no_plot else args.plot_dir)
    print_table(result)
    print(f"wrote {json_path}" + (f" and {png}" if png else ""))
    wrong = [r for r in rows if not r["correct"] and r["kind"] == "ours"]
    return 1 if wrong else 0
