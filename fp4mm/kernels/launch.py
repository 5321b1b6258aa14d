"""Kernel launches that skip Triton's per-call dispatch once a specialisation has been seen.

Triton's ``kernel[grid](*args)`` runs its binder, builds a cache key string and looks the kernel up
on every call: about 25 us of host time per launch on the H100 VM, twice the launch itself
(``scripts/gpu_launch_direct.py``). An eager decode call is host-bound (docs/nn.md), so
:func:`launch` keeps its own dictionary from a cheap key to the kernel Triton compiled, and sends
later calls with the same key straight to that kernel's launcher.

The key must separate everything Triton specialises on, or a kernel compiled for one case would run
another silently. It is built from the same facts Triton reads (3.6): a tensor's dtype and whether
its address is 16-byte aligned; an int's width class (i32 / i64 / u64) and whether it equals 1 or is
divisible by 16; a host TMA descriptor's dtype, block shape, layout and padding; the type of a
float, bool or None; and the value of every constexpr and launch option. Anything else (an unknown
argument type, a launch hook installed by a profiler, a kernel pre-run hook, Triton's debug or
instrumentation setting, the interpreter) takes Triton's own path. Tests run with
``FP4MM_CHECK_LAUNCH=1``, which asks Triton for its kernel on every hit and raises unless it is the
cached one. On the CPU (tests/kernels/test_launch.py) the key is held against Triton's binder on
every argument kind, and every launcher is run with a stand-in driver to show that a cached launch
hands the compiled kernel exactly what Triton's dispatch does.

On by default since session 36, when the whole GPU test suite ran with it on and checked (an
H200, 2026-11-28): every cached launch matched Triton's choice, and the decode ops' outputs were
bit-identical with the cache on and off. ``FP4MM_DIRECT_LAUNCH=0`` turns it off.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
from triton import knobs
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

# The shortcut reads Triton internals (the binder's rules above, CompiledKernel.run's argument
# order, knobs' hook chains) as they are in 3.6; any other Triton takes its own path.
TRITON_SUPPORTED = triton.__version__.split(".")[:2] == ["3", "6"]
ENABLED = (os.environ.get("FP4MM_DIRECT_LAUNCH", "1").strip() not in ("0", "")
           and TRITON_SUPPORTED)
CHECK = os.environ.get("FP4MM_CHECK_LAUNCH", "0").strip() not in ("0", "")
MAX_ENTRIES = 4096  # a bound, not a working-set size: a model sees a few dozen specialisations

_I32, _I64 = 2**31, 2**63
_UNCACHEABLE = object()
_cache: dict = {}
_kernel_info: dict = {}
_runtime = knobs.runtime
_compilation = knobs.compilation


@functools.lru_cache(maxsize=4096)  # shapes and strides repeat from call to call
def _int_class(v: int) -> int:
    """Triton's view of an int argument: width (i32, i64, u64) and its 1 / divisible-by-16 flags."""
    width = 0 if -_I32 <= v < _I32 else (1 if -_I64 <= v < _I64 else 2)
    return width << 2 | (v % 16 == 0) << 1 | (v == 1)


def _desc_class(d: TensorDescriptor):
    return (TensorDescriptor, d.base.dtype, tuple(d.block_shape), d.layout, d.padding)


def _tensor_class(t: torch.Tensor):
    return (t.dtype, t.data_ptr() % 16 == 0)


_CLASSES = {int: _int_class, torch.Tensor: _tensor_class, torch.nn.Parameter: _tensor_class,
            TensorDescriptor: _desc_class, float: type, type(None): type,
            bool: lambda v: (bool, v)}


def arg_class(v):
    """What Triton can specialise a non-constexpr argument on (:data:`_UNCACHEABLE` if unknown)."""
    classify = _CLASSES.get(type(v))
    if classify is not None:
        return classify(v)
    if isinstance(v, torch.Tensor):  # other tensor subclasses
        return _tensor_class(v)
    return _UNCACHEABLE


class _KernelInfo:
    """A kernel's parameters, read once: constexpr positions, names and defaults."""

    def __init__(self, kernel: JITFunction):
        params = kernel.params
        self.names = [p.name for p in params]
        self.constexpr = {p.name for p in params if p.is_constexpr}
        self.const_positions = tuple(i for i, p in enumerate(params) if p.is_constexpr)
        self.defaults = {p.name: p.default for p in params if p.has_default}

    def tail(self, n_args: int, kwargs: dict) -> tuple:
        """The values of the parameters after the positional ones, in signature order; raises if
        one is not a constexpr (its value would be cached with the kernel)."""
        names = self.names[n_args:]
        for name in names:
            if name in kwargs and name not in self.constexpr:
                raise TypeError(f"launch: pass {name!r} positionally: it is not a constexpr")
        return tuple(kwargs[n] if n in kwargs else self.defaults[n] for n in names)


def _info(kernel) -> _KernelInfo | None:
    # by id (hashing a JITFunction hashes its source); the entry keeps the kernel alive
    entry = _kernel_info.get(id(kernel))
    if entry is None:
        entry = _kernel_info[id(kernel)] = (
            kernel, _KernelInfo(kernel) if isinstance(kernel, JITFunction) else None)
    return entry[1]


def launch_key(kernel, info: _KernelInfo, device: int, args: tuple, kwargs: dict):
    """The cache key of one launch, or None where it cannot be cached."""
    classes = tuple(map(arg_class, args))
    if _UNCACHEABLE in classes:
        return None
    consts = (tuple(args[i] for i in info.const_positions if i < len(args))
              if info.const_positions and info.const_positions[0] < len(args) else ())
    return (id(kernel), device, classes, consts, tuple(kwargs.items()))


def _hooked() -> bool:
    """A launch hook is installed (Triton 3.6 keeps hook chains; a plain function or None may
    have been assigned instead)."""
    for hook in (_runtime.launch_enter_hook, _runtime.launch_exit_hook):
        if hook is not None and getattr(hook, "calls", True):
            return True
    return False


def _tritons_turn(kernel) -> bool:
    """Triton must dispatch this launch itself: a launch hook, a pre-run hook on the kernel, or
    a setting Triton reads at every launch and compiles into the kernel (``knobs.runtime.debug``,
    ``knobs.compilation.instrumentation_mode``), which may have changed since a kernel was
    cached."""
    return (_hooked() or bool(kernel.pre_run_hooks) or bool(_runtime.debug)
            or bool(_compilation.instrumentation_mode))


def launch(kernel, grid: tuple, *args, **kwargs) -> None:
    """``kernel[grid](*args, **kwargs)``, sent straight to the compiled kernel when this key has
    been launched before (module docstring). Constexprs may be positional or keywords; other
    parameters must be positional."""
    info = _info(kernel) if ENABLED else None
    if info is None or _tritons_turn(kernel):
        kernel[grid](*args, **kwargs)
        return
    backend = driver.active  # Triton's own source of the device and stream (current ones)
    device = backend.get_current_device()
    key = launch_key(kernel, info, device, args, kwargs)
    if key is None:
        kernel[grid](*args, **kwargs)
        return
    try:
        hit = _cache.get(key)
    except TypeError:  # an unhashable constexpr value
        kernel[grid](*args, **kwargs)
        return
    if hit is None:
        compiled = kernel[grid](*args, **kwargs)
        if compiled is not None:
            if len(_cache) >= MAX_ENTRIES:
                _cache.clear()
            _cache[key] = (compiled, info.tail(len(args), kwargs))
        return
    compiled, tail = hit
    if CHECK:
        chosen = kernel.run(*args, grid=grid, warmup=True, **kwargs)
        if chosen is not compiled:
            raise RuntimeError(f"launch: the cached kernel for {kernel.fn.__name__} is not the "
                               f"one Triton chose for these arguments (key {key[2:]})")
    n = len(grid)
    compiled.run(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1,
                 backend.get_current_stream(device), compiled.function,
                 compiled.packed_metadata, None, None, None, *args, *tail)


def clear_cache() -> None:
    _cache.clear()
