"""The benchmark machinery on the CPU: tiny shapes, the reference backend, a stub timer."""

import argparse
import json

import pytest
import torch

from fp4mm.backend import triton_interpreting
from fp4mm.bench import harness
from fp4mm.bench.cases import Impl, Runner, make_problem, select_cases

ROW_KEYS = {"op", "impl", "M", "N", "K", "group_size", "prepacked", "median_us", "min_us",
            "max_us", "tflops", "gbps", "correct", "ratio", "ratio_baseline",
            "ratio_vs_cublas_bf16", "ratio_vs_cublas_fp16", "suite", "suites", "error"}
TOP_KEYS = {"device", "torch", "triton", "date", "git_commit", "suites", "quick", "rows",
            "roofline"}
SHAPES = [(3, 40, 64), (1, 24, 96)]


class StubTimer:
    """Calls fn once (so rotation runs) and returns a fixed time per implementation name."""

    def __init__(self, times_ms):
        self.times_ms = times_ms
        self.calls = []

    def __call__(self, fn, quick):
        fn()
        name = self.current
        self.calls.append(name)
        t = self.times_ms.get(name, 1.0)
        return t, 0.9 * t, 1.1 * t

needs_interpreter = pytest.mark.skipif(
    torch.cuda.is_available() and not triton_interpreting(),
    reason="runs the Triton kernels on CPU tensors: needs Triton's interpreter (the CPU session)",
)



def _run(cases, impls, timer):
    def step(what, done):
        if not done:
            timer.current = what.split()[-1]

    return harness.run_cases(cases, impls, "cpu", timer, quick=True, l2_bytes=0, on_step=step)


@pytest.fixture(scope="module")
def impls():
    from fp4mm.bench.impls import all_impls

    return harness.select_impls(all_impls(), ["fp4mm*", "cublas_*", "torch_dequant_mm"])


@pytest.fixture(scope="module")
def rows(impls):
    cases = select_cases(["challenge", "decode"], SHAPES)
    timer = StubTimer({"fp4mm": 0.5, "cublas_bf16": 1.0, "cublas_fp16": 2.0})
    return _run(cases, impls, timer)


def test_every_matmul_row_is_checked_timed_and_has_ratios(rows):
    ops = {r["op"] for r in rows}
    assert {"nvfp4_mm", "w4a16_mm"} <= ops
    for r in rows:
        assert ROW_KEYS <= set(r), r
        assert r["correct"] is True, r
        assert r["median_us"] > 0 and r["min_us"] <= r["median_us"] <= r["max_us"]
    fp4 = [r for r in rows if r["impl"] == "fp4mm" and not r["prepacked"]]
    for r in fp4:
        assert r["ratio_vs_cublas_bf16"] == pytest.approx(2.0)
        assert r["ratio_vs_cublas_fp16"] == pytest.approx(4.0)
        want = 4.0 if r["op"] == "w4a16_mm" else 2.0  # w4a16's baseline is cuBLAS fp16
        assert r["ratio"] == pytest.approx(want)


def test_tflops_and_gbps_follow_the_median(rows):
    r = next(r for r in rows if r["impl"] == "cublas_bf16" and r["op"] == "nvfp4_mm"
             and r["M"] == 3)
    M, N, K = 3, 40, 64
    assert r["tflops"] == pytest.approx(2 * M * N * K / 1e-3 / 1e12)
    nbytes = (M + N) * (K // 2 + K // 16) + M * N * 2
    assert r["bytes"] == nbytes
    assert r["gbps"] == pytest.approx(nbytes / 1e-3 / 1e9)


def test_challenge_rows_include_the_solve_entry_point(rows):
    solve = [r for r in rows if r["impl"] == "fp4mm_solve"]
    assert {r["op"] for r in solve} == {"nvfp4_mm", "w4a16_mm"}
    assert all(r["correct"] for r in solve)


def _wrong_impl(name="wrong"):
    def build(case, problem, ctx):
        d = problem.data
        out = torch.zeros(case.M, case.N)

        def run(i):
            out.copy_(harness.oracle(problem))
            out[0, 0] += 1000.0  # one wrong element
            return out
        assert d
        return Runner(run=run)
    return Impl(name, frozenset({"nvfp4_mm"}), build, kind="ours")


def test_a_wrong_implementation_is_refused_and_never_timed():
    timer = StubTimer({})
    cases = select_cases(["table5"], [(4, 16, 32)])
    (row,) = _run(cases, [_wrong_impl()], timer)
    assert row["correct"] is False
    assert row["median_us"] is None and row["tflops"] is None and row["ratio"] is None
    assert row["max_abs_err"] >= 999
    assert timer.calls == []


def test_nan_output_is_wrong():
    def build(case, problem, ctx):
        return Runner(run=lambda i: torch.full((case.M, case.N), float("nan")))

    (row,) = _run(select_cases(["table5"], [(2, 8, 32)]),
                  [Impl("nan", frozenset({"nvfp4_mm"}), build)], StubTimer({}))
    assert row["correct"] is False and row["median_us"] is None


def test_a_crashing_implementation_becomes_an_error_row():
    def build(case, problem, ctx):
        def run(i):
            raise RuntimeError("boom")
        return Runner(run=run)

    (row,) = _run(select_cases(["table5"], [(2, 8, 32)]),
                  [Impl("crash", frozenset({"nvfp4_mm"}), build)], StubTimer({}))
    assert row["correct"] is False and "boom" in row["error"]


def _oracle_impl(name):
    def build(case, problem, ctx):
        return Runner(run=lambda i: harness.oracle(problem))
    return Impl(name, frozenset({"nvfp4_mm"}), build, kind="ours")


def test_a_case_is_timed_in_rounds_that_rotate_which_implementation_goes_first():
    times = {"a": [1.0, 5.0, 2.0], "b": [3.0, 3.0, 3.0], "c": [4.0, 1.0, 9.0]}
    calls = []

    class RoundTimer:
        def __call__(self, fn, quick):
            fn()
            t = times[self.current][sum(1 for c in calls if c == self.current)]
            calls.append(self.current)
            return t, 0.5 * t, 2.0 * t

    timer = RoundTimer()
    rows = _run(select_cases(["table5"], [(4, 16, 32)]),
                [_oracle_impl("a"), _oracle_impl("b"), _oracle_impl("c")], timer)
    assert harness.ROUNDS == 3
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    by = {r["impl"]: r for r in rows}
    assert [by[n]["round_medians_us"] for n in "abc"] == [[1e3, 5e3, 2e3], [3e3] * 3,
                                                            [4e3, 1e3, 9e3]]  # round order
    # the median of the rounds' medians; min and max over every round
    assert [by[n]["median_us"] for n in "abc"] == [2e3, 3e3, 4e3]
    assert by["a"]["min_us"] == 0.5e3 and by["a"]["max_us"] == 10e3
    assert by["c"]["gbps"] == pytest.approx(by["c"]["bytes"] / 4e-3 / 1e9)


def test_a_wrong_implementation_does_not_shift_the_others_rounds():
    calls = []

    class Timer:
        def __call__(self, fn, quick):
            fn()
            calls.append(self.current)
            return 1.0, 1.0, 1.0

    rows = _run(select_cases(["table5"], [(4, 16, 32)]),
                [_oracle_impl("a"), _wrong_impl("w"), _oracle_impl("b")], Timer())
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert [r["impl"] for r in rows] == ["a", "w", "b"]  # rows keep the implementations' order
    assert rows[1]["median_us"] is None


def test_rotation_uses_enough_weight_copies():
    case = select_cases(["decode"], [(1, 18432, 3072)])[0]
    problem = make_problem(case, "cpu", l2_bytes=50 * 2**20)
    assert problem.copies(case.N * (case.K // 2 + case.K // 16)) == 5  # 31.9 MB each, >= 150 MB


def test_json_schema_and_plot(rows, tmp_path):
    result = harness.build_result(rows, torch.device("cpu"), ["challenge", "decode"], True)
    json_path, png = harness.write_outputs(result, tmp_path / "results", tmp_path / "plots")
    data = json.loads(json_path.read_text())
    assert TOP_KEYS <= set(data)
    assert data["rows"] and all(ROW_KEYS <= set(r) for r in data["rows"])
    assert isinstance(data["rows"][0]["median_us"], float)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stem == json_path.stem
    assert all(c.isalnum() or c in "._-" for c in png.name)  # the GPU tool returns only such names


def test_table_marks_wrong_rows():
    timer = StubTimer({})
    rows = _run(select_cases(["table5"], [(4, 16, 32)]), [_wrong_impl()], timer)
    (cells,) = harness.table_rows(rows)
    assert cells[2] == "wrong" and cells[3] == "-" and cells[-1] == "WRONG"


def test_cli_without_cuda_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    args = parser.parse_args(["--quick"])
    assert args.run(args) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@needs_interpreter
def test_cli_runs_end_to_end_with_a_stub_timer(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    args = parser.parse_args(["--suite", "table5", "--suite", "quant", "--shapes", "2x8x32",
                              "--out", str(tmp_path / "r"), "--plot-dir", str(tmp_path / "p"),
                              "--impls", "fp4mm*,torch_quantize_nvfp4", "--quick"])
    status = harness.run(args, device="cpu", timer=lambda fn, quick: (fn(), (1.0, 1.0, 1.0))[1])
    assert status == 0
    (json_path,) = (tmp_path / "r").glob("*.json")
    data = json.loads(json_path.read_text())
    impls = {(r["op"], r["impl"]) for r in data["rows"]}
    assert ("nvfp4_mm", "cublas_bf16") in impls  # always run: the ratio needs it
    assert ("nvfp4_mm", "torch_dequant_mm") not in impls  # filtered out
    assert ("quantize_nvfp4", "torch_quantize_nvfp4") in impls
    assert all(r["correct"] for r in data["rows"])
    assert list((tmp_path / "p").glob("*.png"))


def test_suite_selection():
    assert harness.suites_from(None) == ["challenge", "table5", "decode"]
    assert harness.suites_from(["all"]) == ["challenge", "table5", "decode", "sweep", "quant"]


def test_exact_check_says_what_differs():
    runner = Runner(run=None, check="exact")
    a = (torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor(2.0))
    b = (torch.tensor([1, 9, 3], dtype=torch.uint8), torch.tensor(2.0))
    out = harness._compare(runner, a, b, None)
    assert out["correct"] is False and "output[0]: 1 of 3 differ, first at (1,): 2 != 9" in \
        out["error"]
    assert harness._compare(runner, a, a, None)["correct"] is True


def test_prepacked_rows_where_the_prepack_takes_the_shape(rows):
    packed = [r for r in rows if r["impl"] == "fp4mm" and r["prepacked"]]
    if not packed:
        pytest.skip("no fp4mm.prepack_nvfp4_weight in this checkout")
    nvfp4 = [r for r in packed if r["op"] != "w4a16_mm"]
    assert {r["K"] for r in nvfp4} == {64}  # K = 96 is not a multiple of 64: no row, no error
    # prepack_w4a16_weight takes any K (off Hopper it keeps the raw tensors)
    assert {r["K"] for r in packed if r["op"] == "w4a16_mm"} <= {64, 96}
    assert all(r["correct"] and r["prepack_us"] is not None for r in packed)


@needs_interpreter
def test_sweep_times_the_forced_kernels_beside_the_dispatched_one():
    from fp4mm.bench.impls import all_impls

    cases = select_cases(["sweep"], [(2, 64, 64)])
    rows = _run(cases, all_impls(), StubTimer({}))
    names = {r["impl"] for r in rows}
    assert {"fp4mm", "cublas_bf16"} <= names and "torch_dequant_mm" not in names
    for r in rows:
        assert r["correct"], r


def test_roofline_percentages():
    timer = lambda fn, quick: (fn(), (0.5, 0.5, 0.5))[1]  # noqa: E731
    gbps = harness.measure_copy_gbps("cpu", timer, nbytes=1 << 20)
    assert gbps == pytest.approx(2 * (1 << 20) / 0.5e-3 / 1e9)
    rows = [{"gbps": 150.0}, {"gbps": None}]
    harness.add_roofline(rows, 3000.0)
    assert rows[0]["pct_copy_roofline"] == pytest.approx(5.0)
    assert rows[1]["pct_copy_roofline"] is None


def test_partial_results_are_saved_after_each_case(tmp_path):
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    args = parser.parse_args(["--suite", "table5", "--shapes", "2x8x32,3x8x32", "--no-plot",
                              "--out", str(tmp_path), "--impls", "cublas_bf16"])
    seen = []

    def timer(fn, quick):
        fn()
        seen.append(sorted(p.name for p in tmp_path.glob("*.json")))
        return 1.0, 1.0, 1.0

    assert harness.run(args, device="cpu", timer=timer) == 0
    (path,) = tmp_path.glob("*.json")
    assert json.loads(path.read_text())["complete"] is True
    assert seen[-1] == [path.name]  # the first case was on disk while the second was timed


def test_timer_choice_is_recorded(tmp_path):
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    args = parser.parse_args(["--suite", "table5", "--shapes", "2x8x32", "--no-plot", "--out",
                              str(tmp_path), "--impls", "cublas_bf16", "--timer", "read_flush"])
    assert harness.run(args, device="cpu", timer=lambda fn, q: (fn(), (1.0, 1.0, 1.0))[1]) == 0
    (path,) = tmp_path.glob("*.json")
    timing = json.loads(path.read_text())["timing"]
    assert timing["timer"] == "read_flush" and "reading 256 MB" in timing["method"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_graph_timer_times_the_gpu_work():
    a = torch.randn(2048, 2048, device="cuda")
    med, lo, hi = harness.graph_timer(lambda: a @ a, quick=True)
    assert 0 < lo <= med <= hi < 100  # ms per call


def test_the_copy_roofline_is_timed_eagerly_whatever_the_timer(tmp_path, monkeypatch):
    calls = {"graph": 0, "read_flush": 0}

    def stub(name):
        def timer(fn, quick):
            fn()
            calls[name] += 1
            return (1.0, 1.0, 1.0)
        return timer

    monkeypatch.setattr(harness, "TIMERS", {name: stub(name) for name in calls})
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    args = parser.parse_args(["--suite", "table5", "--shapes", "2x8x32", "--no-plot", "--out",
                              str(tmp_path), "--impls", "cublas_bf16", "--timer", "graph"])
    assert harness.run(args, device="cpu") == 0
    assert calls["read_flush"] == 1 and calls["graph"] >= 1  # the copy, then the cases
    (path,) = tmp_path.glob("*.json")
    data = json.loads(path.read_text())
    assert data["timing"]["timer"] == "graph" and "timed eagerly" in data["roofline"]["method"]
