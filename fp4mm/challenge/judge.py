"""The local judge: ``fp4mm check SOLUTION.py|SOLUTION.cu`` and ``fp4mm check --builtin``.

Each case (the example, the functional cases and, with ``--perf``, the performance case) runs in
a child process (``fp4mm.challenge._worker``), which generates the case from the challenge's
seeded generators, runs ``reference_impl`` on a copy of the inputs, fills every output with NaN,
calls the solution, compares with ``torch.allclose`` at the challenge's tolerances (NaN/inf where
the reference is finite fails), checks the inputs were left unchanged and times the call. A
crash (segfault, CUDA illegal memory access, ``os._exit``) or a hang (``--timeout`` seconds per
case) becomes that case's result; the judge starts a fresh worker and goes on. One worker serves
cases until it dies or hits a CUDA error (after which its CUDA context is unusable).

Exit status: ``EXIT_PASS`` (0) every case passed; ``EXIT_FAIL`` (1) some case failed, raised,
crashed or timed out; ``EXIT_ERROR`` (2) usage error, or the solution could not be loaded or
compiled; ``EXIT_COMPILED_ONLY`` (3) a ``.cu`` file compiled but no CUDA GPU is here to run it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_ERROR = 2
EXIT_COMPILED_ONLY = 3

DEFAULT_TIMEOUT_S = 300.0
STARTUP_TIMEOUT_S = 120.0  # python + torch import, loading the solution, describing the cases
BUILTIN = {"nvfp4": "fp4mm.solve:solve", "w4a16": "fp4mm.solve:solve_w4a16"}
STATUS_STYLE = {"pass": "green", "fail": "red", "error": "red", "crashed": "bold red",
                "timeout": "yellow"}


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class CaseResult:
    """One case's verdict. ``status`` is pass | fail | error | crashed | timeout; ``worst`` is the
    index of the element furthest outside the tolerance; times are seconds."""

    id: str
    name: str
    desc: str = ""
    status: str = "error"
    message: str = ""
    max_abs: float | None = None
    max_rel: float | None = None
    worst: list[int] | None = None
    got: float | None = None
    expected: float | None = None
    time_s: float | None = None
    median_s: float | None = None
    reps: int | None = None
    tflops: float | None = None
    detail: str = ""
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL: ...``, ``error: ...``, ``crashed: ...`` or ``timed out after N s``."""
        if self.status == "pass":
            return "pass"
        if self.status == "timeout":
            return self.message
        label = "FAIL" if self.status == "fail" else self.status
        return f"{label}: {self.message}" if self.message else label

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Report:
    """All verdicts of one solution on one challenge revision."""

    challenge: str
    title: str
    solution: str
    device: str
    results: list[CaseResult] = field(default_factory=list)
    load_error: str | None = None
    detail: str = ""

    @property
    def exit_code(self) -> int:
        if self.load_error is not None:
            return EXIT_ERROR
        return EXIT_PASS if self.results and all(r.passed for r in self.results) else EXIT_FAIL

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data


# ---------------------------------------------------------------------------------------------
# The worker process, seen from the judge


class WorkerDied(Exception):
    def __init__(self, returncode: int | None):
        super().__init__(exit_reason(returncode))
        self.returncode = returncode


class WorkerTimeout(Exception):
    pass


def exit_reason(returncode: int | None) -> str:
    """``signal 11 (SIGSEGV)``, ``exited with status 3``..."""
    if returncode is None:
        return "the worker stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"signal {-returncode} ({name})"
    return f"exited with status {returncode}"


class Worker:
    """A ``python -m fp4mm.challenge._worker`` child in its own process group; stderr (and the
    solution's prints) go to ``log``. JSON lines in and out; reads time out."""

    def __init__(self, config: dict[str, Any], log: Path):
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fp4mm.challenge._worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        self.buffer = b""
        self.config = config

    def start(self, timeout: float) -> dict[str, Any]:
        return self.request(self.config, timeout)

    def request(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._wait()) from None
        return self._readline(timeout)

    def _readline(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout()
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerDied(self._wait())
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def _wait(self) -> int | None:
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the worker's process group (the worker and anything it started)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Judging


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def challenge_spec(challenge: str) -> str:
    """A revision name (``nvfp4``, ``w4a16``) to ``module:Class``; other specs pass through
    (``module:Class`` or ``file.py:Class``, e.g. a test's smaller challenge)."""
    from fp4mm.challenge import CHALLENGES

    if challenge in CHALLENGES:
        cls = CHALLENGES[challenge]
        return f"{cls.__module__}:{cls.__qualname__}"
    if ":" not in challenge:
        raise ValueError(f"challenge: expected one of {sorted(CHALLENGES)} or 'module:Class', "
                         f"got {challenge!r}")
    return challenge


def python_solution(path: str | os.PathLike) -> dict[str, str]:
    return {"kind": "python", "path": str(Path(path).resolve())}


def builtin_solution(challenge: str) -> dict[str, str]:
    return {"kind": "object", "target": BUILTIN[challenge]}


def cuda_solution(library: str | os.PathLike) -> dict[str, str]:
    return {"kind": "cuda", "library": str(library)}


def check(solution: dict[str, str], challenge: str = "nvfp4", device: str | None = None,
          perf: bool = False, timeout: float = DEFAULT_TIMEOUT_S, label: str | None = None,
          on_case: Callable[[dict[str, str]], None] | None = None,
          on_result: Callable[[CaseResult], None] | None = None) -> Report:
    """Judge ``solution`` (a spec from ``python_solution``, ``builtin_solution`` or
    ``cuda_solution``) on every case of ``challenge``, each in a worker process, ``timeout``
    seconds per case. Returns the report; never raises for anything the solution does."""
    device = device or default_device()
    spec = challenge_spec(challenge)
    label = label or solution.get("path") or solution.get("target") or solution.get("library")
    report = Report(challenge=challenge, title=challenge, solution=str(label), device=device)
    config = {"challenge": spec, "device": device, "solution": solution, "perf": perf}
    cases: list[dict[str, str]] | None = None
    worker: Worker | None = None
    with tempfile.TemporaryDirectory(prefix="fp4mm-judge-") as tmp:
        log = Path(tmp) / "worker.log"
        log.touch()
        try:
            while cases is None or len(report.results) < len(cases):
                if worker is None:
                    worker = Worker({**config, "describe": cases is None}, log)
                    try:
                        hello = worker.start(max(STARTUP_TIMEOUT_S, timeout))
                    except (WorkerDied, WorkerTimeout) as exc:
                        worker.kill()
                        worker = None
                        reason = (str(exc) if isinstance(exc, WorkerDied)
                                  else f"timed out after {max(STARTUP_TIMEOUT_S, timeout):g} s")
                        if cases is None:
                            report.load_error = f"the worker failed while loading it: {reason}"
                            report.detail = _tail(log.read_text(errors="replace"))
                            return report
                        for case in cases[len(report.results):]:
                            report.results.append(CaseResult(
                                id=case["id"], name=case["name"], desc=case["desc"],
                                status="crashed", message=f"worker failed to start: {reason}"))
                        break
                    if hello.get("op") == "load_error":
                        worker.close()
                        report.load_error = hello.get("message", "could not load the solution")
                        report.detail = hello.get("detail", "")
                        return report
                    if cases is None:
                        cases = hello["cases"]
                        report.title = _title(spec)
                case = cases[len(report.results)]
                if on_case:
                    on_case(case)
                offset = log.stat().st_size
                try:
                    raw = worker.request({"op": "case", "id": case["id"]}, timeout)
                except WorkerTimeout:
                    worker.kill()
                    worker = None
                    raw = {"status": "timeout", "message": f"timed out after {timeout:g} s"}
                except WorkerDied as died:
                    worker = None
                    raw = {"status": "crashed", "message": str(died)}
                else:
                    if raw.get("restart"):
                        worker.close()
                        worker = None
                result = CaseResult.from_dict({**case, **raw})
                with open(log, "rb") as f:
                    f.seek(offset)
                    result.output = f.read().decode(errors="replace")
                if result.status in ("crashed", "timeout") and not result.detail:
                    result.detail = _tail(result.output)
                report.results.append(result)
                if on_result:
                    on_result(result)
        finally:
            if worker is not None:
                worker.close()
    return report


def _title(spec: str) -> str:
    from fp4mm.challenge import CHALLENGES

    for name, cls in CHALLENGES.items():
        if spec == f"{cls.__module__}:{cls.__qualname__}":
            return f"{cls(device='cpu').name} ({name})"
    return spec


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Printing


def _seconds(s: float | None) -> str:
    if s is None:
        return ""
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.3g}"


def _worst(r: CaseResult) -> str:
    if r.worst is None or not r.max_abs:
        return ""
    return f"({', '.join(map(str, r.worst))}): {r.got:.4g} vs {r.expected:.4g}"


def print_report(report: Report, console: Console, verbose: bool = False) -> None:
    """The per-case table, the details of failed cases and a one-line summary."""
    if report.load_error is not None:
        console.print(f"[bold red]Could not load[/] {escape(report.solution)}: "
                      f"{escape(report.load_error)}")
        if verbose and report.detail:
            console.print(Text(report.detail, style="dim"))
        return
    table = Table(title=f"{report.title}: {report.solution} on {report.device}",
                  title_justify="left")
    for name, justify in (("case", "left"), ("args", "left"), ("result", "left"),
                          ("max abs err", "right"), ("max rel err", "right"),
                          ("worst at: got vs ref", "left"), ("time", "right"),
                          ("TF/s", "right")):
        table.add_column(name, justify=justify)
    for r in report.results:
        time_cell = _seconds(r.time_s)
        if r.median_s is not None:
            time_cell = f"{_seconds(r.median_s)} (median of {r.reps})"
        table.add_row(r.name, r.desc, Text(r.verdict, style=STATUS_STYLE.get(r.status, "")),
                      _num(r.max_abs), _num(r.max_rel), _worst(r), time_cell, _num(r.tflops))
    console.print(table)
    for r in report.results:
        if not r.passed and r.detail and (verbose or r.status in ("crashed", "timeout")):
            console.print(f"[bold]{escape(r.name)}[/] ({escape(r.verdict)}):")
            console.print(Text(r.detail.rstrip(), style="dim"))
    passed = sum(r.passed for r in report.results)
    style = "green" if report.exit_code == EXIT_PASS else "red"
    console.print(f"[{style}]{passed}/{len(report.results)} cases passed[/]")


def _make_console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160, highlight=False)


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fp4mm check``; sets ``run``."""
    from fp4mm.challenge import CHALLENGES

    parser.description = ("Judge a solution of the FP4 matmul challenge. Exit status: 0 every case "
                          "passed, 1 some case failed, crashed or timed out, 2 usage, load or "
                          "compile error, 3 a .cu file compiled but no CUDA GPU is here to run it.")
    parser.add_argument("solution", nargs="?",
                        help='a .py file defining solve(...), or a .cu file defining '
                             'extern "C" void solve(...)')
    parser.add_argument("--builtin", action="store_true",
                        help="judge fp4mm's own solve (both revisions unless --challenge)")
    parser.add_argument("--challenge", choices=sorted(CHALLENGES), default=None,
                        help="challenge revision: nvfp4 (revision 2, default) or w4a16")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="where the cases run (default: cuda if available, else cpu)")
    parser.add_argument("--perf", action="store_true",
                        help="also run and time the performance case (median time, TF/s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds allowed per case (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--arch", default=None,
                        help="nvcc target for .cu files, e.g. sm_90a (default: the GPU's; "
                             "sm_90a without a GPU)")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write the results to FILE as JSON")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="show nvcc's command, each case as it finishes, the solution's "
                             "output and tracebacks")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``fp4mm check``; returns the exit status."""
    console = _make_console()

    def usage(message: str) -> int:
        console.print(f"[bold red]fp4mm check:[/] {escape(message)}")
        return EXIT_ERROR

    if args.builtin == bool(args.solution):
        return usage("give either a SOLUTION file (.py or .cu) or --builtin")
    if not args.timeout > 0:
        return usage(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    import torch

    has_gpu = torch.cuda.is_available()
    device = args.device or ("cuda" if has_gpu else "cpu")
    is_cuda_file = bool(args.solution) and Path(args.solution).suffix == ".cu"
    if device == "cuda" and not has_gpu and not is_cuda_file:
        return usage("--device cuda: no CUDA GPU is visible to PyTorch here")

    jobs: list[tuple[dict[str, str], str, str]] = []
    if args.builtin:
        for name in [args.challenge] if args.challenge else list(BUILTIN):
            jobs.append((builtin_solution(name), name, f"fp4mm.{BUILTIN[name].split(':')[1]}"))
    else:
        path = Path(args.solution)
        challenge = args.challenge or "nvfp4"
        if not path.is_file():
            return usage(f"{path}: no such file")
        if path.suffix == ".py":
            jobs.append((python_solution(path), challenge, str(path)))
        elif is_cuda_file:
            from fp4mm.challenge import cuda

            try:
                compiled = cuda.compile_solution(path, arch=args.arch)
            except (cuda.CompileError, ValueError) as exc:
                console.print(f"[bold red]Compilation failed:[/] {escape(str(path))}")
                console.print(Text(str(exc)))
                return EXIT_ERROR
            if args.verbose:
                state = "cached" if compiled.cached else "compiled"
                console.print(f"nvcc ({state}): {escape(cuda.describe_command(compiled.command))}")
            if device != "cuda" or not has_gpu:
                why = ("no CUDA GPU is visible here" if not has_gpu
                       else "CUDA solutions run only with --device cuda")
                console.print(f"[green]Compiled[/] {escape(str(path))} "
                              f"for {compiled.arch}: OK. "
                              f"[yellow]Running a CUDA solution needs a CUDA GPU; {why}, "
                              "so no case was run.[/]")
                return EXIT_COMPILED_ONLY
            jobs.append((cuda_solution(compiled.library), challenge, str(path)))
        else:
            return usage(f"{path}: expected a .py or .cu file")

    reports = []
    for solution, challenge, label in jobs:
        reports.append(_judge_with_progress(console, solution, challenge, device, args, label))
        print_report(reports[-1], console, verbose=args.verbose)
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in reports], indent=2))
    codes = [r.exit_code for r in reports]
    return EXIT_ERROR if EXIT_ERROR in codes else max(codes)


def _judge_with_progress(console: Console, solution: dict[str, str], challenge: str, device: str,
                         args: argparse.Namespace, label: str) -> Report:
    with console.status(f"judging {label} ({challenge}) on {device}...") as status:
        def on_case(case: dict[str, str]) -> None:
            status.update(f"judging {label} ({challenge}) on {device}: {case['name']} "
                          f"{case['desc']}")

        def on_result(result: CaseResult) -> None:
            if args.verbose:
                style = STATUS_STYLE.get(result.status, "")
                console.print(f"  {escape(result.name)} {escape(result.desc)}: "
                              f"[{style}]{escape(result.verdict)}[/] {_seconds(result.time_s)}")
                if result.output.strip():
                    console.print(Text(result.output.rstrip(), style="dim"))

        return check(solution, challenge=challenge, device=device, perf=args.perf,
                     timeout=args.timeout, label=label, on_case=on_case, on_result=on_result)


def main(argv: list[str] | None = None) -> int:
    """``python -m fp4mm.challenge.judge``: the same as ``fp4mm check``."""
    parser = argparse.ArgumentParser(prog="fp4mm check")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
