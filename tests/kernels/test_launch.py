"""The direct-launch key (``fp4mm.kernels.launch``) separates every case Triton's binder does.

Triton's binder turns a call's arguments into a specialisation and a cache key; a launch key that
lumped two of its cases together would send one case to the other's kernel. Here both are
computed for many values of every argument kind (no GPU: the binder is Triton's own, built for an
sm_90 target), and each launch key must map to one Triton key. On a GPU the tests also run with
``FP4MM_CHECK_LAUNCH=1`` (tests/conftest.py), which checks every cached launch against Triton.
"""

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")
import torch  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import make_backend  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: E402
from triton.runtime.jit import JITFunction, compute_cache_key, create_function_from_signature  # noqa: E402

from fp4mm.kernels import launch as L  # noqa: E402


def _toy(t_ptr, i, f, b, d, n, C: gl.constexpr, D: gl.constexpr = 4):
    pass


KERNEL = JITFunction(_toy)
BINDER = create_function_from_signature(KERNEL.signature, KERNEL.params,
                                        make_backend(GPUTarget("cuda", 90, 32)))
INFO = L._KernelInfo(KERNEL)

_BUF = torch.zeros(4096, dtype=torch.uint8)
_LAYOUT = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2)
_LAYOUT16 = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


def _tensor(dtype, offset):
    size = torch.tensor([], dtype=dtype).element_size()
    return _BUF[offset:offset + 256].view(dtype) if offset % size == 0 else None


TENSORS = [t for dt in (torch.uint8, torch.float16, torch.bfloat16, torch.float32,
                        torch.float8_e4m3fn)
           for off in (0, 1, 2, 3, 4, 8, 12, 16, 24, 32, 48, 64, 128)
           if (t := _tensor(dt, off)) is not None]
INTS = [-2**63, -2**31 - 16, -2**31, -17, -16, -1, 0, 1, 2, 3, 15, 16, 17, 32, 48, 1024, 18432,
        2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16, 2**32, 2**63 - 16, 2**63 - 1, 2**63,
        2**64 - 16]
DESCS = [TensorDescriptor.from_tensor(base, block, layout)
         for base, layout in ((torch.zeros(64, 256, dtype=torch.uint8), _LAYOUT),
                              (torch.zeros(64, 128, dtype=torch.float16), _LAYOUT16),
                              (torch.zeros(64, 128, dtype=torch.bfloat16), _LAYOUT16))
         for block in ([16, 64], [32, 64], [64, 64])]
DESCS.append(TensorDescriptor.from_tensor(torch.zeros(64, 128, dtype=torch.float16), [16, 64],
                                          _LAYOUT16, padding="nan"))
BASE = dict(t_ptr=TENSORS[0], i=16, f=0.5, b=True, d=DESCS[0], n=None)
VALUES = dict(t_ptr=TENSORS, i=INTS, f=[0.0, 0.5, -3.0, 1e30], b=[True, False], d=DESCS,
              n=[None, 1, 16, 0.5])


def _triton_key(args, kwargs):
    _, specialization, options = BINDER(*args, **kwargs)
    return compute_cache_key({}, specialization, options)


def _calls():
    """Every argument varied over its values, one at a time, and a few constexpr settings."""
    names = list(BASE)
    for name, values in VALUES.items():
        for v in values:
            for kwargs in ({"C": 1}, {"C": 16}, {"C": 1, "D": 8}, {"C": gl.float16},
                           {"C": gl.bfloat16}, {"C": 1, "num_warps": 8}):
                yield tuple(v if n == name else BASE[n] for n in names), kwargs


def _collisions(key_fn):
    seen, bad = {}, []
    for args, kwargs in _calls():
        key = key_fn(args, kwargs)
        if key is None:
            continue
        tkey = _triton_key(args, kwargs)
        first = seen.setdefault(key, (tkey, args, kwargs))
        if first[0] != tkey:
            bad.append((first[1:], (args, kwargs)))
    return bad, len(seen)


def _launch_key(args, kwargs):
    return L.launch_key(KERNEL, INFO, 0, args, kwargs)


def test_each_launch_key_maps_to_one_triton_specialisation():
    bad, n_keys = _collisions(_launch_key)
    assert not bad, f"launch keys shared by different Triton specialisations: {bad[:3]}"
    assert n_keys > 100  # the cases really differ


def test_the_check_finds_a_key_that_ignores_alignment(monkeypatch):
    """The collision check has teeth: a key without the pointer alignment flag fails it."""
    real = L.arg_class
    monkeypatch.setattr(L, "arg_class", lambda v: v.dtype if isinstance(v, torch.Tensor)
                        else real(v))
    assert _collisions(_launch_key)[0]


def test_the_check_finds_a_key_that_ignores_int_divisibility(monkeypatch):
    monkeypatch.setitem(L._CLASSES, int, lambda v: int(-2**31 <= v < 2**31))
    assert _collisions(_launch_key)[0]


def test_unknown_argument_types_are_not_cached():
    import numpy as np

    args = list(BASE.values())
    args[1] = np.int32(16)
    assert L.launch_key(KERNEL, INFO, 0, tuple(args), {"C": 1}) is None


def test_positional_constexprs_are_keyed_by_value():
    args = tuple(BASE.values())
    k1 = L.launch_key(KERNEL, INFO, 0, args + (16,), {})
    k2 = L.launch_key(KERNEL, INFO, 0, args + (32,), {})
    assert k1 != k2  # both divisible by 16: as an int argument they would share a class


def test_non_constexpr_keywords_are_refused():
    with pytest.raises(TypeError, match="'n'.*not a constexpr"):
        INFO.tail(5, {"n": None, "C": 1})
    assert INFO.tail(6, {"C": 1}) == (1, 4)  # D's default filled in


def test_any_launch_hook_takes_tritons_path(monkeypatch):
    from triton.knobs import HookChain

    class Runtime:
        launch_enter_hook = HookChain()
        launch_exit_hook = HookChain(reversed=True)

    monkeypatch.setattr(L, "_runtime", Runtime)
    assert not L._hooked()
    Runtime.launch_exit_hook.add(print)
    assert L._hooked()
    Runtime.launch_exit_hook = None
    assert not L._hooked()
    Runtime.launch_enter_hook = print  # a plain function assigned
    assert L._hooked()


def test_debug_instrumentation_and_pre_run_hooks_take_tritons_path(monkeypatch):
    """Settings Triton reads at every launch and compiles into the kernel may change after a
    kernel was cached; a kernel's pre-run hooks run only in Triton's dispatch."""
    class Runtime:
        launch_enter_hook = launch_exit_hook = None
        debug = False

    class Compilation:
        instrumentation_mode = ""

    monkeypatch.setattr(L, "_runtime", Runtime)
    monkeypatch.setattr(L, "_compilation", Compilation)
    kernel = JITFunction(_toy)
    assert not L._tritons_turn(kernel)
    Runtime.debug = True
    assert L._tritons_turn(kernel)
    Runtime.debug = False
    Compilation.instrumentation_mode = "consan"
    assert L._tritons_turn(kernel)
    Compilation.instrumentation_mode = ""
    kernel.add_pre_run_hook(lambda *a, **k: None)
    assert L._tritons_turn(kernel)


def test_launch_asks_whether_it_is_tritons_turn(monkeypatch):
    """:func:`launch` hands a launch to Triton whenever :func:`_tritons_turn` says so, even for
    a key it has cached."""
    kernel = JITFunction(_toy)
    sent = []
    monkeypatch.setattr(type(kernel), "__getitem__", lambda self, grid: (
        lambda *a, **k: sent.append(grid)))
    monkeypatch.setattr(L, "ENABLED", True)
    monkeypatch.setattr(L, "_tritons_turn", lambda k: True)
    monkeypatch.setattr(L, "driver", None)  # the direct path would need it: must not be reached
    L.launch(kernel, (3,), *BASE.values(), C=1)
    assert sent == [(3,)]


def test_interpreted_kernels_take_tritons_path():
    class NotJIT:
        pass

    assert L._info(NotJIT()) is None


gpu = pytest.mark.skipif(not (torch.cuda.is_available()
                              and torch.cuda.get_device_capability() >= (9, 0)),
                         reason="the direct launch runs compiled kernels (sm_90)")


def _decode_calls():
    import fp4mm
    from fp4mm.nn import NVFP4Linear

    torch.manual_seed(0)
    N, K = 3072 + 40, 1024
    qw = fp4mm.quantize_nvfp4(torch.randn(N, K, device="cuda"))
    gs = float(qw.global_scale)
    lin = torch.nn.Linear(K, N, bias=False, dtype=torch.bfloat16, device="cuda")
    layer = NVFP4Linear.from_linear(lin, mode="w4a4")
    calls = {}
    for m in (1, 4, 13, 16, 24):
        x = torch.randn(m, K, device="cuda", dtype=torch.bfloat16)
        qx = fp4mm.quantize_nvfp4(x.float())
        calls[f"nvfp4_w4a16_mm M={m}"] = lambda x=x: fp4mm.nvfp4_w4a16_mm(x, qw.data, qw.scales,
                                                                          gs)
        calls[f"nvfp4_mm M={m}"] = lambda qx=qx: fp4mm.nvfp4_mm(qx.data, qx.scales, qw.data,
                                                               qw.scales, 1.0 / gs)
        calls[f"w4a16_mm M={m}"] = lambda x=x: fp4mm.w4a16_mm(
            x.half(), qw.data, qw.scales.float().half(), 16)
        calls[f"NVFP4Linear w4a4 M={m}"] = lambda x=x: layer(x)
    return calls


@gpu
def test_direct_launches_give_tritons_results_bit_for_bit(monkeypatch):
    """Each decode op, cold (Triton's path fills the cache) then warm (direct launches), equals
    the same op with the shortcut off."""
    calls = _decode_calls()
    monkeypatch.setattr(L, "ENABLED", False)
    ref = {name: fn() for name, fn in calls.items()}
    monkeypatch.setattr(L, "ENABLED", True)
    L.clear_cache()
    for name, fn in calls.items():
        cold, warm = fn(), fn()
        assert torch.equal(cold, ref[name]), name
        assert torch.equal(warm, ref[name]), name
    assert len(L._cache) > 0


@gpu
def test_launch_hooks_take_tritons_path():
    """A profiler's launch hook (Triton's knobs) sees every launch, cached keys included."""
    from triton import knobs

    calls = _decode_calls()
    fn = calls["nvfp4_w4a16_mm M=16"]
    fn()
    seen = []
    hook = lambda metadata: seen.append(metadata)
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        fn()
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert seen


@pytest.fixture(scope="module")
def equivalence():
    """The child run of ``_launch_equivalence.py`` (no TRITON_INTERPRET: it compiles for sm_90)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                     "_launch_equivalence.py")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_direct_launch_hands_each_kernel_what_tritons_dispatch_does(equivalence):
    """With a stand-in CUDA driver, every launcher runs through Triton's dispatch, then through
    the launch cache twice (a miss, then hits straight to the compiled kernels, checked against
    Triton's choice); each hit hands its kernel's launcher what Triton's dispatch did: grid,
    stream, function, metadata and arguments (Triton adds only its empty hook chains)."""
    bad = {case: r["mismatches"] for case, r in equivalence.items() if r["mismatches"]}
    assert not bad
    assert all(r["cached"] == len(r["kernels"]) for r in equivalence.values())


def test_every_launch_site_is_in_the_equivalence_run(equivalence):
    """A kernel launched through ``launch`` but absent from ``_launch_equivalence.py`` fails."""
    import re

    import fp4mm.kernels

    folder = os.path.dirname(fp4mm.kernels.__file__)
    sources = [open(os.path.join(folder, name)).read() for name in os.listdir(folder)
               if name.endswith(".py")]
    sites = {m for src in sources for m in re.findall(r"\blaunch\((_\w+_kernel),", src)}
    covered = {k for r in equivalence.values() for k in r["kernels"]}
    assert len(sites) >= 15 and sites <= covered, sites - covered
