"""The judge's child process: loads a solution, generates cases, runs, compares and times them.

Started by ``fp4mm.challenge.judge`` as ``python -m fp4mm.challenge._worker``; never by hand.
Everything that executes contestant code happens here, so a segfault, an illegal memory access
(which leaves the CUDA context unusable) or a hang takes down only this process; the judge
reports it as that case's result and starts a fresh worker for the next case.

Protocol (one JSON object per line): the judge writes a config, then case requests, on our
stdin; we answer on a private duplicate of the original stdout. File descriptors 0 and 1 are
then pointed at /dev/null and stderr, so whatever the solution reads or prints (Python or C
``printf``) cannot disturb the protocol.

- config: ``{"challenge": "module:Class", "device": "cpu"|"cuda", "solution": SPEC,
  "describe": bool, "perf": bool}`` where SPEC is ``{"kind": "python", "path": FILE}``,
  ``{"kind": "object", "target": "module:attr"}`` or ``{"kind": "cuda", "library": FILE.so}``;
  answer ``{"op": "ready", "cases": [...] or null}`` or ``{"op": "load_error", ...}``.
- ``{"op": "case", "id": "example" | "functional:I" | "performance"}``; answer: the result
  (see ``run_case``). A result with ``"restart": true`` is our last: we exit after sending it.
- ``{"op": "quit"}``.

Case data is generated here from the challenge's seeded generators (the whole functional list,
then item I), so only small JSON results cross the process boundary.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.util
import inspect
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

# Timing budget of the performance case: seconds of timed calls after the judged one.
PERF_BUDGET_S = {"cuda": 2.0, "cpu": 5.0}
PERF_REPS = {"cuda": (5, 100), "cpu": (2, 10)}
L2_FLUSH_BYTES = 256 << 20


class LoadError(Exception):
    """The solution or the challenge cannot be loaded; the message is for humans."""


# ---------------------------------------------------------------------------------------------
# Loading


def load_object(spec: str) -> Any:
    """``"package.module:attr"`` or ``"path/to/file.py:attr"`` to the object."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise LoadError(f"expected 'module:attr' or 'file.py:attr', got {spec!r}")
    module = load_file(where) if where.endswith(".py") else importlib.import_module(where)
    if not hasattr(module, attr):
        raise LoadError(f"{where} defines no {attr!r}")
    return getattr(module, attr)


def load_file(path: str) -> Any:
    """Import a ``.py`` file as a module; its folder goes on ``sys.path`` for its own imports."""
    file = Path(path).resolve()
    if not file.is_file():
        raise LoadError(f"{path}: no such file")
    sys.path.insert(0, str(file.parent))
    name = f"_fp4mm_judged_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_parameters(fn, names: list[str], other: dict[str, list[str]]) -> None:
    """``fn`` must accept every signature name by keyword (the judge calls ``solve(**case)``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    keyword = {n for n, p in params.items()
               if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [n for n in names if n not in keyword]
    extra = [n for n, p in params.items() if n not in names and p.default is p.empty
             and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if not missing and not extra:
        return
    got = ", ".join(params)
    message = (f"solve({got}) does not take the challenge's arguments "
               f"solve({', '.join(names)}), which the judge passes by name")
    for revision, their in other.items():
        if set(their) <= keyword:
            message += f"; it matches the {revision} revision: pass --challenge {revision}"
    raise LoadError(message)


class PythonSolve:
    """A Python ``solve``, called with the case's arguments by name."""

    def __init__(self, fn, names: list[str], device: torch.device):
        self.fn = fn
        self.names = names
        self.cuda = device.type == "cuda"

    def arguments(self, case: dict[str, Any]) -> dict[str, Any]:
        return {n: case[n] for n in self.names}

    def launch(self, args: dict[str, Any]) -> None:
        self.fn(**args)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def load_solution(spec: dict[str, str], challenge, device: torch.device):
    signature = challenge.get_solve_signature()
    names = list(signature)
    kind = spec["kind"]
    if kind == "cuda":
        from fp4mm.challenge import cuda

        return cuda.load_solution(spec["library"], signature)
    if kind == "python":
        module = load_file(spec["path"])
        fn = getattr(module, "solve", None)
        if not callable(fn):
            raise LoadError("the file defines no function named solve")
    elif kind == "object":
        fn = load_object(spec["target"])
    else:
        raise LoadError(f"unknown solution kind {kind!r}")
    check_parameters(fn, names, _other_signatures(challenge))
    return PythonSolve(fn, names, device)


def _other_signatures(challenge) -> dict[str, list[str]]:
    from fp4mm.challenge import CHALLENGES

    return {name: list(cls(device="cpu").get_solve_signature()) for name, cls in CHALLENGES.items()
            if not isinstance(challenge, cls)}


# ---------------------------------------------------------------------------------------------
# Cases


def generate(challenge, case_id: str) -> dict[str, Any]:
    if case_id == "example":
        return challenge.generate_example_test()
    if case_id == "performance":
        return challenge.generate_performance_test()
    kind, _, index = case_id.partition(":")
    if kind != "functional" or not index.isdigit():
        raise ValueError(f"unknown case id {case_id!r}")
    return challenge.generate_functional_test()[int(index)]


def describe_case(challenge, case: dict[str, Any]) -> str:
    """The scalar arguments in signature order, e.g. ``M=3 N=5 K=32`` (alpha when it is not 1)."""
    parts = []
    for name in challenge.get_solve_signature():
        value = case.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if name == "alpha" and value == 1.0:
            continue
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def case_name(case_id: str) -> str:
    kind, _, index = case_id.partition(":")
    return f"functional #{index}" if index else kind


def describe_all(challenge, perf: bool) -> list[dict[str, str]]:
    cases = [("example", challenge.generate_example_test())]
    cases += [(f"functional:{i}", c) for i, c in enumerate(challenge.generate_functional_test())]
    if perf:
        cases.append(("performance", challenge.generate_performance_test()))
    return [{"id": cid, "name": case_name(cid), "desc": describe_case(challenge, c)}
            for cid, c in cases]


# ---------------------------------------------------------------------------------------------
# Comparison


def compare(got: torch.Tensor, ref: torch.Tensor, atol: float, rtol: float) -> dict[str, Any]:
    """Judge one output: ``torch.allclose(got, ref, atol, rtol)`` in float32, and no NaN/inf where
    the reference is finite. Returns the verdict and error statistics; ``worst`` is the element
    with the largest ``|got - ref| / (atol + rtol * |ref|)`` (above 1 fails)."""
    g = got.detach().float()
    r = ref.detach().float()
    finite_r = torch.isfinite(r)
    bad = finite_r & ~torch.isfinite(g)
    both = finite_r & torch.isfinite(g)
    diff = torch.where(both, (g - r).abs(), torch.zeros_like(g))
    diff = torch.where(bad, torch.full_like(g, math.inf), diff)
    tol = (atol + rtol * r.abs()).clamp_min(1e-30)
    ratio = torch.where(finite_r, diff / tol, torch.zeros_like(g))
    rel = torch.where(both & (r != 0), diff / r.abs().clamp_min(1e-30), torch.zeros_like(g))
    rel = torch.where(bad, torch.full_like(g, math.inf), rel)
    passed = bool(torch.allclose(g, r, rtol=rtol, atol=atol, equal_nan=True)) and not bool(
        bad.any())
    n = g.numel()
    out: dict[str, Any] = {"passed": passed, "numel": n, "max_abs": 0.0, "max_rel": 0.0,
                           "worst": None, "got": None, "expected": None}
    if n == 0:
        return out
    flat = int(torch.argmax(ratio.reshape(-1)))
    index = [int(i) for i in torch.unravel_index(torch.tensor(flat), g.shape)]
    out.update(max_abs=float(diff.max()), max_rel=float(rel.max()), worst=index,
               got=float(g.reshape(-1)[flat]), expected=float(r.reshape(-1)[flat]))
    n_nan = int(torch.isnan(g).sum())
    n_bad = int(bad.sum())
    n_far = int(((diff > tol) & both).sum())
    if n_nan == n and n_bad:
        out["message"] = "not written (still NaN after the call)"
    elif n_bad:
        out["message"] = f"{n_bad} of {n} elements NaN/inf where the reference is finite"
    elif not passed:
        out["message"] = f"{n_far} of {n} elements outside atol={atol:g}, rtol={rtol:g}"
    return out


def _clone_case(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in case.items()}


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.is_floating_point():
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8)) if a.is_contiguous() \
            else torch.equal(a, b)
    return torch.equal(a, b)


def _poison(t: torch.Tensor) -> None:
    if t.is_floating_point():
        t.fill_(math.nan)
    else:
        t.fill_(-1 if t.dtype.is_signed else torch.iinfo(t.dtype).max)


# ---------------------------------------------------------------------------------------------
# Running and timing


def _run_once(solution, args, cuda: bool) -> float:
    """Wall-clock seconds of one call, device work included."""
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    solution.launch(args)
    solution.sync()
    return time.perf_counter() - start


def median_time(solution, args, device: torch.device, first_s: float) -> dict[str, Any]:
    """Median seconds per call after the judged call: CUDA events with the L2 cache flushed
    before each call on cuda, wall clock on cpu; as many calls as fit the budget, within bounds."""
    dev = device.type
    lo, hi = PERF_REPS[dev]
    reps = int(min(hi, max(lo, PERF_BUDGET_S[dev] / max(first_s, 1e-6))))
    times = []
    if dev == "cuda":
        flush = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device)
        solution.launch(args)  # one more warm-up
        solution.sync()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(reps)]
        for start, end in events:
            flush.zero_()
            start.record()
            solution.launch(args)
            end.record()
        solution.sync()
        times = [start.elapsed_time(end) / 1e3 for start, end in events]
    else:
        times = [_run_once(solution, args, cuda=False) for _ in range(reps)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "reps": reps}


def _classify(exc: BaseException) -> dict[str, Any]:
    """An exception from the solution: an ``error`` result, or ``crashed`` for errors that leave
    the CUDA context unusable. Any CUDA error ends this worker (``restart``)."""
    from fp4mm.challenge.cuda import STICKY_ERRORS, CudaError

    text = f"{type(exc).__name__}: {exc}".strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, CudaError):
        if exc.sticky:
            return {"status": "crashed", "message": STICKY_ERRORS[exc.code], "restart": True}
        return {"status": "error", "message": f"CUDA error {exc}", "restart": True}
    lowered = text.lower()
    if "cuda error" in lowered or type(exc).__name__ == "AcceleratorError":
        for reason in STICKY_ERRORS.values():
            if reason in lowered:
                return {"status": "crashed", "message": reason, "restart": True}
        return {"status": "error", "message": first_line, "restart": True}
    return {"status": "error", "message": first_line}


def _detail(exc: BaseException) -> str:
    """What to show under the table: the CUDA error itself for a CUDA solution (our frames would
    only add noise), else the traceback's last frames."""
    from fp4mm.challenge.cuda import CudaError

    if isinstance(exc, CudaError):
        return f"CUDA error after solve returned: {exc}"
    return traceback.format_exc(limit=-8)


class Runner:
    def __init__(self, config: dict[str, Any]):
        self.device = torch.device(config["device"])
        self.perf = bool(config.get("perf"))
        cls = load_object(config["challenge"])
        self.challenge = cls(device=self.device.type)
        self.signature = self.challenge.get_solve_signature()
        self.solution = load_solution(config["solution"], self.challenge, self.device)

    def run_case(self, case_id: str) -> dict[str, Any]:
        """Generate, run the reference on a copy, poison the outputs with NaN, run the solution,
        compare, check the inputs are unchanged and (performance case) time it."""
        ch = self.challenge
        case = generate(ch, case_id)
        result: dict[str, Any] = {"op": "result", "id": case_id, "name": case_name(case_id),
                                  "desc": describe_case(ch, case)}
        outputs = [n for n, (_, io) in self.signature.items() if io == "out"]
        inputs = [n for n, (_, io) in self.signature.items()
                  if io == "in" and isinstance(case[n], torch.Tensor)]
        pristine = {n: case[n].clone() for n in inputs}
        reference = _clone_case(case)
        ch.reference_impl(**{n: reference[n] for n in self.signature})
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        for n in outputs:
            _poison(case[n])
        cuda = self.device.type == "cuda"
        try:
            args = self.solution.arguments(case)
            result["time_s"] = _run_once(self.solution, args, cuda)
        except BaseException as exc:  # noqa: BLE001 - a contestant's code may raise anything
            result.update(_classify(exc), detail=_detail(exc))
            return result

        verdicts = {n: compare(case[n], reference[n], ch.atol, ch.rtol) for n in outputs}
        worst_name = max(verdicts,
                         key=lambda n: (not verdicts[n]["passed"], verdicts[n]["max_abs"]))
        worst = verdicts[worst_name]
        result.update({k: worst[k] for k in ("max_abs", "max_rel", "got", "expected")})
        result["worst"] = worst["worst"]
        if len(outputs) > 1 and worst["worst"] is not None:
            result["worst_output"] = worst_name
        failures = [f"{n} {v['message']}" for n, v in verdicts.items() if not v["passed"]]
        modified = [n for n in inputs if not _same_bits(case[n], pristine[n])]
        if modified:
            failures.append(f"modified its input{'s' if len(modified) > 1 else ''} "
                            + ", ".join(modified))
        result["status"] = "fail" if failures else "pass"
        if failures:
            result["message"] = "; ".join(failures)
        if case_id == "performance" and not failures:
            try:
                result.update(median_time(self.solution, args, self.device, result["time_s"]))
            except BaseException as exc:  # noqa: BLE001
                result.update(_classify(exc), detail=_detail(exc))
                return result
            result["tflops"] = ch.flops(case) / result["median_s"] / 1e12
        return result


def main() -> int:
    proto_in = os.fdopen(os.dup(0), "r")
    proto_out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # the solution's prints (Python and C) go to stderr, not into the protocol
    sys.stdout = sys.stderr
    faulthandler.enable()

    def send(message: dict[str, Any]) -> None:
        proto_out.write(json.dumps(message) + "\n")
        proto_out.flush()

    config = json.loads(proto_in.readline())
    try:
        runner = Runner(config)
        cases = describe_all(runner.challenge, runner.perf) if config.get("describe") else None
    except BaseException as exc:  # noqa: BLE001
        send({"op": "load_error", "message": f"{type(exc).__name__}: {exc}" if not isinstance(
            exc, LoadError) else str(exc), "detail": traceback.format_exc(limit=-8)})
        return 0
    send({"op": "ready", "cases": cases})
    for line in proto_in:
        request = json.loads(line)
        if request.get("op") != "case":
            break
        try:
            result = runner.run_case(request["id"])
        except BaseException as exc:  # noqa: BLE001 - the case's generator or reference
            result = {"op": "result", "id": request["id"], "status": "error",
                      "message": f"judge error: {type(exc).__name__}: {exc}",
                      "detail": traceback.format_exc(), "restart": True}
        send(result)
        if result.get("restart"):
            break
    return 0


if __name__ == "__main__":
    code = main()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: after a CUDA error it can hang or print noise
