"""The measured dispatch table (fp4mm/ops/dispatch.py): every op and M range returns a valid
kernel, the override works, and the kernel it picks gives the oracle's answer."""

from __future__ import annotations

import pytest
import torch

from fp4mm import reference
from fp4mm.formats import dequantize_nvfp4_blocks, float_to_e4m3
from fp4mm.ops import dispatch

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("op", dispatch.OPS)
def test_every_op_and_m_gets_a_kernel(op):
    for M in (1, 2, 3, 4, 8, 16, 17, 32, 63, 64, 65, 128, 256, 2048, 32768):
        assert dispatch.select_kernel(op, M, 18432, 3072, DEV) in dispatch.KERNELS


@pytest.mark.parametrize("op", dispatch.OPS)
def test_small_m_is_gemv_and_large_m_is_gemm(op):
    """Decode sizes stream weights through the GEMV; prefill sizes use the GEMM; the switch is
    monotone in M (one threshold per op)."""
    assert dispatch.select_kernel(op, 1, 18432, 3072, DEV) == "gemv"
    assert dispatch.select_kernel(op, 2048, 18432, 3072, DEV) == "gemm"
    picks = [dispatch.select_kernel(op, M, 18432, 3072, DEV) for M in range(1, 300)]
    first_gemm = picks.index("gemm")
    assert all(p == "gemm" for p in picks[first_gemm:])


@pytest.mark.parametrize("op", ["nvfp4_mm", "nvfp4_w4a16_mm"])
def test_nvfp4_weights_cross_over_at_64_raw_or_prepacked(op):
    """GPU time (graph-timed): the Hopper GEMM, even with its per-call re-layout of raw weights,
    beats the GEMV from M = 96 (measured 66.5 vs 84.2 us at N = 18432), the GEMV wins at 64.
    The same for prepacked weights below PREPACKED_GEMM_MIN_WEIGHT elements on any device (and
    for every prepacked weight off Hopper): see the test below for larger ones on Hopper."""
    for prepacked, N in ((False, 18432), (True, 3072)):
        assert dispatch.select_kernel(op, 64, N, 3072, DEV, prepacked=prepacked) == "gemv"
        assert dispatch.select_kernel(op, 65, N, 3072, DEV, prepacked=prepacked) == "gemm"
        assert dispatch.select_kernel(op, 128, N, 3072, DEV, prepacked=prepacked) == "gemm"


@pytest.mark.parametrize("group,kernel", [(32, "gemm_sm90"), (64, "gemm_sm90"),
                                          (128, "gemm_sm90"), (192, "gemm_sm90"),
                                          (16, "gemm"), (48, "gemm"), (2, "gemm")])
def test_hopper_prefill_of_group_scales_takes_the_gluon_gemm(monkeypatch, group, kernel):
    """On Hopper, w4a16_mm above the GEMV range runs the Gluon GEMM for groups of 32 and
    multiples of 64 (fp4_gemm_sm90.group_k), the plain-Triton GEMM for the rest; off Hopper
    always the plain-Triton GEMM."""
    import importlib

    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")
    M = 1024
    for hopper in (True, False):
        monkeypatch.setattr(ops, "is_hopper", lambda device, h=hopper: h)
        monkeypatch.setattr(dispatch, "is_hopper", lambda device, h=hopper: h)
        got = ops.choose_kernel("w4a16_mm", M, 8192, 3072, torch.device("cpu"), group)
        assert got == (kernel if hopper else "gemm")


@pytest.mark.parametrize("group", [32, 64, 128])
def test_hopper_group_scale_crossover_depends_on_the_layout(monkeypatch, group):
    """Measured (W4A16_SM90_GEMV_MAX_M): a prepacked weight crosses over to the Gluon GEMM at
    a lower M than a raw one, which pays the re-layout on every call; off Hopper, GEMV_MAX_M."""
    cpu = torch.device("cpu")
    gk = 32 if group == 32 else 64
    monkeypatch.setattr(dispatch, "is_hopper", lambda device: True)
    for prepacked in (False, True):
        top = dispatch.W4A16_SM90_GEMV_MAX_M[(gk, prepacked)]
        assert dispatch.select_kernel("w4a16_mm", top, 18432, 3072, cpu, group_size=group,
                                      prepacked=prepacked) == "gemv"
        assert dispatch.select_kernel("w4a16_mm", top + 1, 18432, 3072, cpu, group_size=group,
                                      prepacked=prepacked) == "gemm"
    assert (dispatch.W4A16_SM90_GEMV_MAX_M[(gk, True)]
            < dispatch.W4A16_SM90_GEMV_MAX_M[(gk, False)])
    # prepacked tokens above 8 stay on the GEMV only where the TMA GEMV serves them (K % 256)
    ring = dispatch.SM90_RING_PREPACKED_MAX_M
    assert ring < dispatch.W4A16_SM90_GEMV_MAX_M[(gk, True)]
    for M, K, want in ((ring, 3072 + 128, "gemv"), (ring + 1, 3072 + 128, "gemm"),
                       (ring + 1, 3072, "gemv")):
        assert dispatch.select_kernel("w4a16_mm", M, 18432, K, cpu, group_size=group,
                                      prepacked=True) == want, (M, K)
    assert dispatch.select_kernel("w4a16_mm", ring + 1, 18432, 3072 + 128, cpu,
                                  group_size=group) == "gemv"  # raw weights: unchanged
    assert dispatch.gemv_max_m("w4a16_mm", cpu, 16) == dispatch.GEMV_MAX_M["w4a16_mm"]
    monkeypatch.setattr(dispatch, "is_hopper", lambda device: False)
    assert dispatch.gemv_max_m("w4a16_mm", cpu, group, True) == dispatch.GEMV_MAX_M["w4a16_mm"]


@pytest.mark.parametrize("op", ["nvfp4_mm", "nvfp4_w4a16_mm"])
def test_hopper_prepacked_nvfp4_crossover_depends_on_the_weight_size(monkeypatch, op):
    """Measured (PREPACKED_GEMM_MIN_WEIGHT): a prepacked NVFP4 weight of 18432 x 3072 leaves the
    GEMV above PREPACKED_SM90_GEMV_MAX_M (the Gluon GEMM's decode-size tiles beat the GEMVs'
    multi-token tiles); a 3072 x 3072 one, a raw one, or any off Hopper keeps GEMV_MAX_M."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(dispatch, "is_hopper", lambda device: True)
    top = dispatch.PREPACKED_SM90_GEMV_MAX_M[op]
    assert top <= dispatch.GEMV_SM90_MAX_M[op]
    assert dispatch.select_kernel(op, top, 18432, 3072, cpu, prepacked=True) == "gemv"
    assert dispatch.select_kernel(op, top + 1, 18432, 3072, cpu, prepacked=True) == "gemm"
    assert dispatch.select_kernel(op, 64, 3072, 3072, cpu, prepacked=True) == "gemv"
    assert dispatch.select_kernel(op, 64, 18432, 3072, cpu, prepacked=False) == "gemv"
    assert dispatch.select_kernel(op, 65, 18432, 3072, cpu, prepacked=False) == "gemm"
    # both limits stand on the TMA GEMV (K % 256 == 0); without it nvfp4_w4a16_mm keeps the
    # ring's 8 tokens and W4A4 its ring's 16 (session 39)
    ring = (dispatch.SM90_RING_PREPACKED_MAX_M if op == "nvfp4_w4a16_mm"
            else dispatch.PREPACKED_SM90_W4A4_RING_MAX_M)
    assert ring < top
    for M, want in ((ring, "gemv"), (ring + 1, "gemm")):
        assert dispatch.select_kernel(op, M, 18432, 3072 + 128, cpu, prepacked=True) == want
    assert dispatch.select_kernel(op, top, 18432, 3072 + 128, cpu) == "gemv"  # raw: unchanged
    # W4A4 above its ring's limit only on the x pre-pass + TMA GEMV route (2^25 elements):
    # 4096 x 4096 prepacked is big enough for the GEMM, too small for that route
    small = dispatch.GEMV_W4A4_TMA_MIN_WEIGHT // 2
    assert small >= dispatch.PREPACKED_GEMM_MIN_WEIGHT
    limit = ring if op == "nvfp4_mm" else top
    assert dispatch.select_kernel(op, limit, 4096, small // 4096, cpu, prepacked=True) == "gemv"
    assert dispatch.select_kernel(op, limit + 1, 4096, small // 4096, cpu, prepacked=True) == "gemm"
    monkeypatch.setattr(dispatch, "is_hopper", lambda device: False)
    assert dispatch.select_kernel(op, 64, 18432, 3072, cpu, prepacked=True) == "gemv"


def test_quantiser_lets_the_matmul_launch_late_only_at_the_register_rings_tokens():
    """Late (after its stores) where W4A4 decode runs the register ring, whose one-wave grid
    piles onto the SMs an early-launched quantiser leaves free (session 32); early elsewhere."""
    late = [M for M in range(0, 80) if dispatch.quantiser_pdl_late(M)]
    assert late == list(range(dispatch.GEMV_FP8_SM90_MAX_M + 1, dispatch.GEMV_W4A4_TMA_MIN_M))
    assert late[0] == 5 and late[-1] == 16


def test_w4a4_layer_takes_the_16bit_x_route_at_9_to_32_tokens(monkeypatch):
    """NVFP4Linear W4A4 on 16-bit x: 9-32 tokens where K % 256 == 0, at any K (session 41 lifted
    session 40's K <= 8192 at 9-16 tokens), never with a forced kernel or fp32 x."""
    route = dispatch.w4a4_linear_via_16bit_x
    assert [M for M in range(0, 80) if route(M, 4096, torch.bfloat16)] == list(range(9, 33))
    for K in (8192, 8448, 14336, 28672):
        assert [M for M in range(0, 80) if route(M, K, torch.float16)] == list(range(9, 33))
    assert not route(16, 4224, torch.float16)  # K % 256 != 0: no TMA GEMV
    assert not route(16, 4096, torch.float32)
    monkeypatch.setenv(dispatch.ENV_VAR, "gemv")
    assert not route(16, 4096, torch.float16)


def test_override_argument_and_environment(monkeypatch):
    assert dispatch.select_kernel("nvfp4_mm", 1, 64, 64, override="gemm") == "gemm"
    assert dispatch.select_kernel("nvfp4_mm", 4096, 64, 64, override="gemv") == "gemv"
    monkeypatch.setenv(dispatch.ENV_VAR, "gemm")
    assert dispatch.select_kernel("w4a16_mm", 1, 64, 64) == "gemm"
    assert dispatch.select_kernel("w4a16_mm", 1, 64, 64, override="auto") == "gemv"
    monkeypatch.setenv(dispatch.ENV_VAR, "fastest")
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        dispatch.select_kernel("w4a16_mm", 1, 64, 64)


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="op"):
        dispatch.select_kernel("mm", 1, 8, 16)
    with pytest.raises(ValueError, match="M"):
        dispatch.select_kernel("nvfp4_mm", 0, 8, 16)
    with pytest.raises(ValueError, match="override"):
        dispatch.select_kernel("nvfp4_mm", 1, 8, 16, override="cublas")


def _problem(op, M, N, K, g):
    if op == "nvfp4_mm":
        x = (torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, generator=g),
             float_to_e4m3(torch.rand(M, K // 16, generator=g) * 1.5 + 0.5))
    else:
        x = ((torch.randn(M, K, generator=g) * 0.5).half(),)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g)
    if op == "w4a16_mm":
        ws = (torch.rand(N, K // 32, generator=g) * 0.1 + 0.01).half()
    else:
        ws = float_to_e4m3(torch.rand(N, K // 16, generator=g) * 1.5 + 0.5)
    return [t.to(DEV) for t in x], wq.to(DEV), ws.to(DEV)


def _run(kernel, op, x, wq, ws, out):
    """The launcher the table names, called with the shared launcher convention."""
    if kernel == "gemv":
        from fp4mm.kernels import fp4_gemv as K
    else:
        K = pytest.importorskip("fp4mm.kernels.fp4_gemm")
    fn = getattr(K, f"{op}_{kernel}")
    if op == "nvfp4_mm":
        fn(*x, wq, ws, 0.5, "high_first", out)
    elif op == "w4a16_mm":
        fn(x[0], wq, ws, 32, "high_first", out)
    else:
        fn(x[0], wq, ws, 0.5, "high_first", out)


@pytest.mark.parametrize("M", [1, 3, 16, 80])
@pytest.mark.parametrize("op", dispatch.OPS)
def test_chosen_kernel_matches_oracle(op, M):
    g = torch.Generator().manual_seed(M)
    N, K = 33, 64
    x, wq, ws = _problem(op, M, N, K, g)
    kernel = dispatch.select_kernel(op, M, N, K, DEV)
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device=DEV)
    _run(kernel, op, x, wq, ws, out)
    if op == "nvfp4_mm":
        ref = reference.nvfp4_mm(*x, wq, ws, 0.5, order="high_first")
    elif op == "w4a16_mm":
        ref = reference.w4a16_mm(x[0], wq, ws, 32, order="high_first")
    else:
        ref = (x[0].float() @ dequantize_nvfp4_blocks(wq, ws, "high_first").T) * 0.5
    tol = 2e-5 * float(ref.abs().max())  # every kernel's products are exact
    assert not torch.isnan(out).any()
    assert float((out - ref).abs().max()) <= tol
