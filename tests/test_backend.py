"""fp4mm.backend: which implementation runs, and on which GPU the kernels launch."""

from __future__ import annotations

import contextlib
import importlib

import pytest
import torch

import fp4mm
from fp4mm import backend
from fp4mm.formats import quantize_nvfp4
from fp4mm.nn import NVFP4Linear

nvfp4_w4a16_module = importlib.import_module("fp4mm.ops.nvfp4_w4a16_mm")  # the package
# re-exports the function under the module's name


class _OnSecondGpu(torch.Tensor):
    """A CPU tensor that reports itself on cuda:1 (to see what the guard does without GPUs)."""

    @property
    def is_cuda(self):
        return True

    @property
    def device(self):
        return torch.device("cuda", 1)


def test_ops_run_on_the_device_of_their_tensors(monkeypatch):
    """Triton launches on the current CUDA device, so the ops switch to their tensors' one."""
    entered = []

    @contextlib.contextmanager
    def recorder(device):
        entered.append(torch.device(device))
        yield

    monkeypatch.setattr(torch.cuda, "device", recorder)
    seen = []
    wrapped = backend.on_device_of_first_argument(lambda x, y=0: seen.append((x, y)) or 7)
    assert wrapped(torch.zeros(2).as_subclass(_OnSecondGpu), y=3) == 7
    assert entered == [torch.device("cuda", 1)] and seen[0][1] == 3
    entered.clear()
    assert wrapped(torch.zeros(2)) == 7 and wrapped("not a tensor") == 7
    assert entered == []  # CPU tensors (and anything else) run as they are
    with backend.device_guard(torch.device("cpu")):
        pass
    assert entered == []
    with backend.device_guard(torch.device("cuda", 1)):
        pass
    assert entered == [torch.device("cuda", 1)]
    # every public entry point that launches kernels is wrapped (the W4A16 pair shares one body;
    # the quantise ops of fp4mm.library take the guard inside)
    for fn in (fp4mm.nvfp4_mm, fp4mm.w4a16_mm, nvfp4_w4a16_module._nvfp4_w4a16_mm,
               fp4mm.prepack_nvfp4_weight, fp4mm.prepack_w4a16_weight):
        assert fn.__wrapped__ is not None, fn


def test_device_properties_are_asked_once_per_device(monkeypatch):
    """The capability and the SM count come from one lookup per device index ("cuda" is the
    current device), since an eager decode call asks several times; distinct devices keep
    distinct answers."""
    from types import SimpleNamespace

    asked = []
    props = {0: SimpleNamespace(major=9, minor=0, multi_processor_count=132),
             1: SimpleNamespace(major=8, minor=0, multi_processor_count=108)}
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: asked.append(index) or props[index])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    backend._properties.cache_clear()
    try:
        assert backend.cuda_capability("cuda:0") == (9, 0)
        assert backend.cuda_capability(torch.device("cuda", 0)) == (9, 0)
        assert backend.sm_count("cuda:0") == 132
        assert backend.cuda_capability("cuda") == (8, 0)  # the current device, index 1
        assert backend.sm_count("cuda:1") == 108
        assert asked == [0, 1]
    finally:
        backend._properties.cache_clear()  # no faked answers left for other tests


def test_amd_gpus_get_the_oracle_not_nvidia_kernels(monkeypatch):
    """A ROCm build of torch calls its GPUs "cuda" and reports an MI300 (gfx942) as capability
    (9, 4): that is neither Hopper nor a GPU our kernels run on."""
    from types import SimpleNamespace

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(backend, "_properties",
                        lambda index: SimpleNamespace(major=9, minor=4, multi_processor_count=304))
    monkeypatch.setattr(backend, "_cuda_index", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.version, "hip", None)  # an NVIDIA build: the same numbers are Hopper
    assert backend.is_hopper(cuda) and backend.resolve_backend(cuda) == "triton"
    monkeypatch.setattr(torch.version, "hip", "6.4.0")
    assert not backend.is_hopper(cuda)
    assert backend.resolve_backend(cuda) == "reference"
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match="kernels are for NVIDIA GPUs.*ROCm"):
        backend.resolve_backend(cuda)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_every_op_on_the_second_gpu_while_the_first_is_current():
    dev = torch.device("cuda", 1)
    assert torch.cuda.current_device() == 0
    x, w = torch.randn(5, 256), torch.randn(300, 256)
    qx, qw = quantize_nvfp4(x.to(dev)), quantize_nvfp4(w.to(dev))
    ref = fp4mm.reference.nvfp4_mm(qx.data, qx.scales, qw.data, qw.scales, 0.5)
    for M in (1, 5):  # the decode GEMV, the GEMM
        y = fp4mm.nvfp4_mm(qx.data[:M], qx.scales[:M], qw.data, qw.scales, 0.5,
                           out_dtype=torch.float32)
        torch.testing.assert_close(y, ref[:M], rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    pk = fp4mm.prepack_nvfp4_weight(qw.data, qw.scales)
    y = fp4mm.nvfp4_mm(qx.data, qx.scales, pk, None, 0.5, out_dtype=torch.float32)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    layer = NVFP4Linear.from_linear(torch.nn.Linear(256, 300).to(dev))
    assert layer(x.to(dev)).device == dev
    assert torch.cuda.current_device() == 0
