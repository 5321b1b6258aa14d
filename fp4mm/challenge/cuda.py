"""CUDA solutions for the judge: compile a ``.cu`` file with ``nvcc`` into a shared library (cached
by content hash) and call its ``extern "C" void solve(...)`` through ``ctypes``.

The argument order and C types come from the challenge's ``get_solve_signature()``: pointer types
are passed as device pointers (``tensor.data_ptr()``), ``c_float``/``c_int`` by value.

Next to the contestant's file the library holds a small helper translation unit
(``_JUDGE_HELPER``) that synchronises the device and returns the CUDA error, if any: with nvcc's
default static CUDA runtime the library has its own runtime state, so a launch error (for example
an invalid grid) is only visible to ``cudaGetLastError`` called from inside the library.

Compiling needs ``nvcc`` only, no GPU; running needs a CUDA GPU. Only this module knows about
nvcc, ctypes and CUDA error codes; the worker process (``fp4mm.challenge._worker``) calls it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NVCC_FLAGS = ("-O3", "-shared", "-Xcompiler", "-fPIC")
DEFAULT_ARCH = "sm_90a"  # the Hopper target; used when no GPU is visible (compile-only)

_JUDGE_HELPER = r"""
#include <cuda_runtime.h>
extern "C" int fp4mm_judge_sync(void) {
    cudaError_t sync_err = cudaDeviceSynchronize();
    cudaError_t last_err = cudaGetLastError();
    return (int)(sync_err != cudaSuccess ? sync_err : last_err);
}
extern "C" const char* fp4mm_judge_error_name(int err) {
    return cudaGetErrorName((cudaError_t)err);
}
extern "C" const char* fp4mm_judge_error_string(int err) {
    return cudaGetErrorString((cudaError_t)err);
}
"""

# Errors after which the CUDA context is unusable (the process must go): cudaError_t values.
STICKY_ERRORS = {
    700: "illegal memory access",
    702: "launch timed out",
    710: "device-side assert triggered",
    714: "hardware stack error",
    715: "illegal instruction",
    716: "misaligned address",
    717: "invalid address space",
    718: "invalid program counter",
    719: "unspecified launch failure",
}


class CompileError(Exception):
    """nvcc failed (or is missing, or the library has no ``solve``); the message is for humans."""


class CudaError(RuntimeError):
    """A CUDA error reported after a call of the solution."""

    def __init__(self, code: int, name: str, text: str):
        super().__init__(f"{name} ({code}): {text}")
        self.code = code
        self.name = name
        self.text = text

    @property
    def sticky(self) -> bool:
        return self.code in STICKY_ERRORS


@dataclass(frozen=True)
class CompiledSolution:
    """A compiled ``.cu`` solution: the shared library and how it was built."""

    source: Path
    library: Path
    arch: str
    command: tuple[str, ...]
    cached: bool


def find_nvcc() -> str | None:
    """``nvcc`` from ``$CUDA_HOME/bin``, ``$PATH`` or ``/usr/local/cuda/bin``, or None."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    found = shutil.which("nvcc")
    if found:
        candidates.append(found)
    candidates.append("/usr/local/cuda/bin/nvcc")
    return next((c for c in candidates if os.path.isfile(c) and os.access(c, os.X_OK)), None)


def arch_for(capability: tuple[int, int] | None) -> str:
    """nvcc's ``sm_XY`` for a compute capability; the arch-specific ``a`` variant (wgmma, TMA...)
    for 9.0 and 10.x; ``DEFAULT_ARCH`` when there is no GPU."""
    if capability is None:
        return DEFAULT_ARCH
    major, minor = capability
    suffix = "a" if major in (9, 10) else ""
    return f"sm_{major}{minor}{suffix}"


def present_arch() -> str:
    """The arch of the current CUDA GPU, or ``DEFAULT_ARCH`` without one."""
    import torch

    if not torch.cuda.is_available():
        return DEFAULT_ARCH
    return arch_for(torch.cuda.get_device_capability())


def gencode(arch: str) -> str:
    """``-gencode=arch=compute_90a,code=sm_90a`` for ``sm_90a``: real machine code, no PTX JIT."""
    if not re.fullmatch(r"sm_\d+[af]?", arch):
        raise ValueError(f"arch: expected something like 'sm_90a' or 'sm_80', got {arch!r}")
    return f"-gencode=arch=compute_{arch[3:]},code={arch}"


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$FP4MM_CACHE_DIR`` or ``<tmp>/fp4mm-judge-<uid>``."""
    root = os.environ.get("FP4MM_CACHE_DIR")
    if root:
        return Path(root)
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"fp4mm-judge-{uid}"


def compile_solution(source: str | os.PathLike, arch: str | None = None,
                     extra_flags: Sequence[str] = ()) -> CompiledSolution:
    """Compile ``source`` (a ``.cu`` file) into a shared library, or reuse the cached one.

    The cache key is the SHA-256 of the source, the judge's helper, the flags and the nvcc
    binary's path and size. Raises ``CompileError`` with nvcc's message on failure, or if the
    library has no C symbol ``solve``.
    """
    source = Path(source)
    if not source.is_file():
        raise CompileError(f"{source}: no such file")
    nvcc = find_nvcc()
    if nvcc is None:
        raise CompileError(
            f"{source}: cannot compile a CUDA solution: nvcc was not found "
            "(looked in $CUDA_HOME/bin, $PATH and /usr/local/cuda/bin)"
        )
    arch = arch or present_arch()
    flags = (*NVCC_FLAGS, gencode(arch), *extra_flags)
    text = source.read_bytes()
    key = hashlib.sha256()
    for part in (text, _JUDGE_HELPER.encode(), repr(flags).encode(), nvcc.encode(),
                 str(os.path.getsize(nvcc)).encode()):
        key.update(part)
        key.update(b"\0")
    folder = cache_dir() / key.hexdigest()[:24]
    library = folder / "solution.so"
    command = (nvcc, *flags, "-o", str(library), str(source.resolve()), str(folder / "helper.cu"))
    if library.is_file():
        return CompiledSolution(source, library, arch, command, cached=True)

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "helper.cu").write_text(_JUDGE_HELPER)
    partial = folder / f"solution.{os.getpid()}.so"
    build = (*command[:-3], str(partial), *command[-2:])
    proc = subprocess.run(build, capture_output=True, text=True)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        message = (proc.stderr + proc.stdout).strip()
        raise CompileError(f"{source}: nvcc failed (exit status {proc.returncode}):\n{message}")
    _check_solve_symbol(source, partial)
    os.replace(partial, library)
    return CompiledSolution(source, library, arch, command, cached=False)


def _check_solve_symbol(source: Path, library: Path) -> None:
    """Fail early, with a hint, if ``solve`` is missing or has C++ linkage (mangled)."""
    nm = shutil.which("nm")
    if nm is None:
        return
    proc = subprocess.run([nm, "-D", "--defined-only", str(library)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return
    names = {line.split()[-1] for line in proc.stdout.splitlines() if line.strip()}
    if "solve" in names:
        return
    library.unlink(missing_ok=True)
    mangled = sorted(n for n in names if re.match(r"_Z\d+solve", n))
    hint = (f' (found the C++ symbol {mangled[0]}: declare it extern "C")' if mangled
            else ' (define extern "C" void solve(...))')
    raise CompileError(f"{source}: the compiled library has no C function named solve{hint}")


def load_solution(library: str | os.PathLike, signature: dict[str, tuple]) -> CudaSolve:
    """Load a compiled library; returns a callable taking the case dict."""
    return CudaSolve(ctypes.CDLL(str(library)), signature)


class CudaSolve:
    """``launch(case)`` calls ``solve`` with the signature's C arguments; ``sync()`` waits for the
    device and raises ``CudaError`` if the call left a CUDA error."""

    def __init__(self, lib: ctypes.CDLL, signature: dict[str, tuple]):
        self.lib = lib
        self.signature = signature
        self.solve = lib.solve
        self.solve.restype = None
        self.solve.argtypes = [ctypes.c_void_p if _is_pointer(t) else t
                               for t, _ in signature.values()]
        lib.fp4mm_judge_sync.restype = ctypes.c_int
        lib.fp4mm_judge_error_name.restype = ctypes.c_char_p
        lib.fp4mm_judge_error_name.argtypes = [ctypes.c_int]
        lib.fp4mm_judge_error_string.restype = ctypes.c_char_p
        lib.fp4mm_judge_error_string.argtypes = [ctypes.c_int]

    def arguments(self, case: dict[str, Any]) -> list:
        """The C arguments in signature order: device pointers for tensors, scalars by value."""
        args = []
        for name, (ctype, _) in self.signature.items():
            value = case[name]
            if _is_pointer(ctype):
                if not hasattr(value, "data_ptr"):
                    raise TypeError(f"{name}: expected a tensor for a pointer argument")
                if value.device.type != "cuda":
                    raise ValueError(f"{name}: a CUDA solution needs CUDA tensors, "
                                     f"got one on {value.device}")
                args.append(value.data_ptr())
            else:
                args.append(ctype(value))
        return args

    def launch(self, args: Sequence) -> None:
        self.solve(*args)

    def sync(self) -> None:
        code = int(self.lib.fp4mm_judge_sync())
        if code != 0:
            name = self.lib.fp4mm_judge_error_name(code).decode(errors="replace")
            text = self.lib.fp4mm_judge_error_string(code).decode(errors="replace")
            raise CudaError(code, name, text)


def _is_pointer(ctype) -> bool:
    return isinstance(ctype, type) and issubclass(ctype, (ctypes._Pointer, ctypes.c_void_p))


def describe_command(command: Sequence[str]) -> str:
    """The nvcc command line as one shell-quoted string (for ``--verbose``)."""
    import shlex

    return " ".join(shlex.quote(c) for c in command)


__all__ = [
    "CompileError",
    "CompiledSolution",
    "CudaError",
    "CudaSolve",
    "STICKY_ERRORS",
    "arch_for",
    "compile_solution",
    "describe_command",
    "find_nvcc",
    "gencode",
    "load_solution",
    "present_arch",
]
