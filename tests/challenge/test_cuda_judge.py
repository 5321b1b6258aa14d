"""The judge on CUDA solutions. On any machine with nvcc: the shipped .cu files compile, a broken
one is reported as a compile error, and without a GPU the judge compiles only (exit status 3).
On a CUDA GPU: the example solutions pass, the starters fail, and an out-of-bounds write is that
case's crash while the other cases still get verdicts."""

import ctypes
from pathlib import Path

import pytest
import torch

from fp4mm.challenge import CHALLENGES, cuda, judge

SOLUTIONS = Path(__file__).parent / "solutions"
PACKAGE = Path(judge.__file__).parent
SHIPPED = [PACKAGE / folder / f"{rev}.cu" for folder in ("examples", "starters")
           for rev in ("nvfp4", "w4a16")]

needs_nvcc = pytest.mark.skipif(cuda.find_nvcc() is None, reason="nvcc not found")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh compile cache for this module, so the compiles really happen."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("nvcc-cache")
        mp.setenv("FP4MM_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def compiled(cache):
    """The shipped .cu files, compiled for the GPU present (sm_90a without one)."""
    return {(p.parent.name, p.stem): cuda.compile_solution(p) for p in SHIPPED}


def test_arch_selection():
    assert cuda.arch_for(None) == "sm_90a"
    assert cuda.arch_for((9, 0)) == "sm_90a"
    assert cuda.arch_for((10, 0)) == "sm_100a"
    assert cuda.arch_for((8, 9)) == "sm_89"
    assert cuda.gencode("sm_90a") == "-gencode=arch=compute_90a,code=sm_90a"
    with pytest.raises(ValueError, match="arch"):
        cuda.gencode("hopper")


@needs_nvcc
def test_shipped_cu_files_compile_and_are_cached(compiled, cache):
    for solution in compiled.values():
        assert solution.library.is_file() and not solution.cached
        assert solution.library.is_relative_to(cache)
        assert cuda.gencode(solution.arch) in solution.command
    again = cuda.compile_solution(PACKAGE / "examples" / "nvfp4.cu")
    assert again.cached and again.library == compiled["examples", "nvfp4"].library


@needs_nvcc
def test_library_exposes_solve_with_the_signature(compiled):
    for (_, rev), solution in compiled.items():
        signature = CHALLENGES[rev](device="cpu").get_solve_signature()
        wrapped = cuda.load_solution(solution.library, signature)
        expected = [ctypes.c_void_p if name not in ("alpha", "M", "N", "K", "group_size")
                    else ctype for name, (ctype, _) in signature.items()]
        assert wrapped.solve.argtypes == expected


@needs_nvcc
def test_compile_error_is_reported_with_its_own_status(cache, capsys):
    code = judge.main([str(SOLUTIONS / "broken.cu"), "--challenge", "nvfp4"])
    out = capsys.readouterr().out
    assert code == judge.EXIT_ERROR == 2
    assert "Compilation failed" in out and "broken.cu" in out
    assert 'identifier "launch_my_kernel" is undefined' in out
    assert "Traceback" not in out


@needs_nvcc
def test_missing_extern_c_is_a_compile_error(cache, tmp_path):
    source = tmp_path / "mangled.cu"
    source.write_text("void solve(const unsigned char* x_q, int M) {}\n")
    with pytest.raises(cuda.CompileError, match='declare it extern "C"'):
        cuda.compile_solution(source)


@needs_nvcc
def test_compile_only_without_a_gpu(cache, capsys):
    argv = [str(PACKAGE / "examples" / "w4a16.cu"), "--challenge", "w4a16", "--verbose"]
    if torch.cuda.is_available():
        argv += ["--device", "cpu"]
    assert judge.main(argv) == judge.EXIT_COMPILED_ONLY == 3
    out = " ".join(capsys.readouterr().out.split())
    assert "needs a CUDA GPU" in out and "no case was run" in out
    assert "-gencode=arch=compute_" in out  # --verbose shows nvcc's command


# On the GPU


def judge_cu(path: Path, challenge: str, **kwargs) -> judge.Report:
    library = cuda.compile_solution(path).library
    return judge.check(judge.cuda_solution(library), challenge=challenge, device="cuda",
                       label=path.name, **kwargs)


@needs_gpu
@needs_nvcc
@pytest.mark.parametrize("challenge", ["nvfp4", "w4a16"])
def test_example_cu_passes(cache, challenge):
    report = judge_cu(PACKAGE / "examples" / f"{challenge}.cu", challenge)
    assert report.exit_code == judge.EXIT_PASS, [r.verdict for r in report.results]
    assert len(report.results) == 11


@needs_gpu
@needs_nvcc
@pytest.mark.parametrize("challenge", ["nvfp4", "w4a16"])
def test_starter_cu_fails(cache, challenge):
    report = judge_cu(PACKAGE / "starters" / f"{challenge}.cu", challenge)
    assert report.exit_code == judge.EXIT_FAIL
    assert all(r.status == "fail" and "not written" in r.message for r in report.results)


@needs_gpu
@needs_nvcc
def test_out_of_bounds_write_is_that_case_only(cache):
    report = judge_cu(SOLUTIONS / "out_of_bounds.cu", "nvfp4")
    statuses = {r.name: r.status for r in report.results}
    assert statuses.pop("functional #2") == "crashed"
    assert set(statuses.values()) == {"pass"}, [r.verdict for r in report.results]
    assert report.results[3].verdict == "crashed: illegal memory access"
    assert report.exit_code == judge.EXIT_FAIL
