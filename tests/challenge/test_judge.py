"""The judge on Python solutions, on the CPU: verdicts per case, isolation of crashes and hangs,
exit statuses. Each ``check`` starts worker processes, so the tests share results where they can.
"""

import json
import math
from pathlib import Path

import pytest
import torch

from fp4mm.challenge import judge
from fp4mm.challenge._worker import compare

SOLUTIONS = Path(__file__).parent / "solutions"
PACKAGE = Path(judge.__file__).parent
N_CASES = 11  # the example and ten functional cases, both revisions


def run_check(name: str, challenge: str = "nvfp4", **kwargs) -> judge.Report:
    return judge.check(judge.python_solution(SOLUTIONS / name), challenge=challenge,
                       device="cpu", **kwargs)


def statuses(report: judge.Report) -> dict[str, str]:
    return {r.name: r.status for r in report.results}


def test_builtin_passes_both_revisions():
    for challenge in ("nvfp4", "w4a16"):
        report = judge.check(judge.builtin_solution(challenge), challenge=challenge, device="cpu")
        assert report.load_error is None, report.load_error
        assert len(report.results) == N_CASES
        assert all(r.passed for r in report.results), [r.verdict for r in report.results]
        assert report.exit_code == judge.EXIT_PASS
        assert [r.name for r in report.results[:3]] == ["example", "functional #0",
                                                         "functional #1"]


@pytest.mark.parametrize("challenge", ["nvfp4", "w4a16"])
def test_example_python_solution_passes(challenge):
    report = judge.check(judge.python_solution(PACKAGE / "examples" / f"{challenge}.py"),
                         challenge=challenge, device="cpu")
    assert report.exit_code == judge.EXIT_PASS, [r.verdict for r in report.results]
    assert all(r.max_abs is not None and r.max_abs <= 0.1 for r in report.results)


@pytest.mark.parametrize("challenge", ["nvfp4", "w4a16"])
def test_starter_python_solution_fails(challenge):
    report = judge.check(judge.python_solution(PACKAGE / "starters" / f"{challenge}.py"),
                         challenge=challenge, device="cpu")
    assert report.exit_code == judge.EXIT_FAIL
    assert all(r.status == "fail" and "not written" in r.message for r in report.results)


def test_wrong_nibble_order_fails_where_it_matters():
    report = run_check("wrong_nibbles.py")
    st = statuses(report)
    # The example's bytes (0x22, 0x11, 0x44, 0xAA) read the same either way; case #0 has x = 0.
    assert st["example"] == "pass" and st["functional #0"] == "pass"
    failed = [r for r in report.results[2:]]
    assert all(r.status == "fail" and "outside atol" in r.message for r in failed)
    worst = failed[0]
    assert worst.worst is not None and len(worst.worst) == 2
    # the worst element is the one furthest outside the tolerance, not always the largest |diff|
    assert 0.1 + 0.05 * abs(worst.expected) < abs(worst.got - worst.expected) <= worst.max_abs
    assert report.exit_code == judge.EXIT_FAIL


def test_unwritten_output_fails_every_case():
    report = run_check("unwritten.py")
    assert all(r.status == "fail" and "y not written" in r.message for r in report.results)
    assert all(r.max_abs == math.inf for r in report.results)


def test_nan_and_inf_in_output_fail():
    report = run_check("returns_nan.py")
    for r in report.results:
        assert r.status == "fail"
        assert "NaN/inf where the reference is finite" in r.message
    assert report.results[3].message.startswith("y 2 of 15 elements")  # functional #2: 3 x 5


def test_input_modification_fails():
    report = run_check("modifies_input.py")
    assert all(r.status == "fail" and "modified its input w_scales" in r.message
               for r in report.results)


def test_exception_is_that_case_only():
    report = run_check("raises.py")
    st = statuses(report)
    assert st.pop("functional #2") == "error"
    assert set(st.values()) == {"pass"}
    error = report.results[3]
    assert error.message == "ValueError: boom: M == 3"
    assert "raise ValueError" in error.detail
    assert report.exit_code == judge.EXIT_FAIL


def test_hang_times_out_and_the_rest_run():
    report = run_check("hangs.py", timeout=4)
    st = statuses(report)
    assert st.pop("functional #2") == "timeout"
    assert set(st.values()) == {"pass"}
    assert report.results[3].verdict == "timed out after 4 s"


def test_crashes_are_that_case_only():
    report = run_check("crashes.py")
    st = statuses(report)
    assert st.pop("functional #2") == "crashed" and st.pop("functional #3") == "crashed"
    assert set(st.values()) == {"pass"}
    assert report.results[3].verdict == "crashed: exited with status 7"
    assert report.results[4].verdict == "crashed: signal 11 (SIGSEGV)"
    assert "Fatal Python error" in report.results[4].detail  # faulthandler's report
    assert report.exit_code == judge.EXIT_FAIL


def test_prints_do_not_break_the_protocol():
    report = run_check("prints.py")
    assert report.exit_code == judge.EXIT_PASS
    assert "hello from solve M=3" in report.results[3].output


def test_load_errors():
    report = run_check("no_solve.py")
    assert report.exit_code == judge.EXIT_ERROR and "no function named solve" in report.load_error
    report = judge.check(judge.python_solution(PACKAGE / "examples" / "nvfp4.py"),
                         challenge="w4a16", device="cpu")
    assert report.exit_code == judge.EXIT_ERROR
    assert "pass --challenge nvfp4" in report.load_error


def test_perf_case_is_timed():
    report = judge.check(judge.builtin_solution("nvfp4"), device="cpu", perf=True,
                         challenge=f"{SOLUTIONS / 'tiny_perf.py'}:TinyPerfNVFP4")
    perf = report.results[-1]
    assert perf.name == "performance" and perf.passed
    assert perf.desc == "alpha=0.015625 M=64 N=128 K=256"
    assert perf.reps >= 2 and perf.median_s > 0
    assert perf.tflops == pytest.approx(2 * 64 * 128 * 256 / perf.median_s / 1e12)


def test_cli_exit_statuses_and_table(capsys, tmp_path):
    out = tmp_path / "report.json"
    code = judge.main([str(SOLUTIONS / "raises.py"), "--device", "cpu", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == judge.EXIT_FAIL
    assert "error: ValueError: boom: M == 3" in text and "10/11 cases passed" in text
    assert "functional #9" in text and "M=512 N=1024 K=1024" in text
    (data,) = json.loads(out.read_text())
    assert data["exit_code"] == judge.EXIT_FAIL and len(data["results"]) == N_CASES

    assert judge.main(["--device", "cpu"]) == judge.EXIT_ERROR  # neither file nor --builtin
    assert judge.main([str(SOLUTIONS / "missing.py")]) == judge.EXIT_ERROR
    assert judge.main([str(SOLUTIONS / "README.md")]) == judge.EXIT_ERROR
    assert judge.main([str(SOLUTIONS / "no_solve.py"), "--device", "cpu"]) == judge.EXIT_ERROR
    assert "Could not load" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert judge.main(["--builtin", "--device", "cuda"]) == judge.EXIT_ERROR


def test_cli_is_wired_into_fp4mm_check():
    import argparse

    parser = argparse.ArgumentParser()
    judge.add_arguments(parser)
    args = parser.parse_args(["sol.py", "--challenge", "w4a16", "--perf", "--timeout", "7"])
    assert args.run is judge.run and args.challenge == "w4a16" and args.timeout == 7.0


# compare(): the verdict itself, without processes


def test_compare_exact_and_tolerance_edges():
    ref = torch.tensor([[1.0, -2.0], [0.0, 100.0]], dtype=torch.float16)
    assert compare(ref.clone(), ref, 0.1, 0.05)["passed"]
    got = ref.clone()
    got[1, 1] = 105.0  # |diff| = 5 <= 0.1 + 0.05 * 100
    assert compare(got, ref, 0.1, 0.05)["passed"]
    got[1, 1] = 106.0  # 6 > 5.1
    verdict = compare(got, ref, 0.1, 0.05)
    assert not verdict["passed"] and verdict["worst"] == [1, 1]
    assert verdict["max_abs"] == 6.0 and verdict["max_rel"] == pytest.approx(0.06)
    assert verdict["message"] == "1 of 4 elements outside atol=0.1, rtol=0.05"


def test_compare_nan_where_reference_is_finite_fails():
    ref = torch.zeros(2, 3, dtype=torch.float16)
    got = ref.clone()
    got[0, 2] = math.nan
    verdict = compare(got, ref, 0.1, 0.05)
    assert not verdict["passed"] and verdict["worst"] == [0, 2]
    assert verdict["max_abs"] == math.inf
    assert "1 of 6 elements NaN/inf" in verdict["message"]
    got[0, 2] = math.inf
    assert not compare(got, ref, 0.1, 0.05)["passed"]


def test_cuda_errors_are_classified():
    """Sticky CUDA errors are crashes; every CUDA error ends the worker (restart)."""
    from fp4mm.challenge._worker import _classify
    from fp4mm.challenge.cuda import CudaError

    illegal = CudaError(700, "cudaErrorIllegalAddress", "an illegal memory access was encountered")
    assert _classify(illegal) == {"status": "crashed", "message": "illegal memory access",
                                  "restart": True}
    config = CudaError(9, "cudaErrorInvalidConfiguration", "invalid configuration argument")
    verdict = _classify(config)
    assert verdict["status"] == "error" and verdict["restart"]
    assert "cudaErrorInvalidConfiguration (9)" in verdict["message"]
    torch_side = RuntimeError("CUDA error: an illegal memory access was encountered\nmore")
    assert _classify(torch_side)["message"] == "illegal memory access"
    assert _classify(ValueError("boom")) == {"status": "error", "message": "ValueError: boom"}
