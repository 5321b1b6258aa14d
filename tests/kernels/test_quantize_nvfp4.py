"""The Triton NVFP4 quantiser against its torch twin, fp4mm.formats.quantize_nvfp4, bit for bit.

On a CPU machine the kernels run in Triton's interpreter (tests/conftest.py); bf16 input is then
upcast to fp32 by the launcher (exact), so bf16 loads are only exercised on CUDA. The reference is
always the codec on the CPU (the definition; see test_codec_division_on_cuda for why).
"""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from fp4mm.formats import (
    E2M1_VALUES,
    dequantize_nvfp4_blocks,
    e4m3_table,
    float_to_e4m3,
    nvfp4_global_scale,
    quantize_nvfp4,
)
from fp4mm.kernels.quantize_nvfp4 import (
    AmaxConfig,
    QuantizeConfig,
    _e4m3_rne,
    _e4m3_value,
    _threshold_table_kernel,
    nvfp4_amax_triton,
    nvfp4_global_scale_triton,
    pick_amax_config,
    pick_config,
    quantize_dequantize_nvfp4_triton,
    quantize_nvfp4_triton,
)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA (bf16 is wrong in the interpreter)")
THRESHOLDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


@triton.jit
def _e4m3_probe_kernel(v_ptr, code_ptr, value_ptr, n, VIA_CAST: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(v_ptr + offs, mask=offs < n, other=0.0)
    code = _e4m3_rne(v, VIA_CAST)
    tl.store(code_ptr + offs, code.to(tl.uint8), mask=offs < n)
    tl.store(value_ptr + offs, _e4m3_value(code, VIA_CAST), mask=offs < n)


def _e4m3_probe(v: torch.Tensor, via_cast: bool):
    v = v.to(DEVICE)
    code = torch.empty(v.shape, dtype=torch.uint8, device=DEVICE)
    value = torch.empty(v.shape, dtype=torch.float32, device=DEVICE)
    block = 1024 if CUDA else 1 << 16  # the interpreter is fastest with few, large programs
    _e4m3_probe_kernel[(triton.cdiv(v.numel(), block),)](v, code, value, v.numel(),
                                                         VIA_CAST=via_cast, BLOCK=block)
    return code.cpu(), value.cpu()


def _next(v: torch.Tensor, direction: float) -> torch.Tensor:
    return torch.nextafter(v, torch.full_like(v, direction))


def _e4m3_probe_values() -> torch.Tensor:
    """Every E4M3 value, every midpoint between neighbours (the ties), one and two float32 ulps
    either side of each, the saturation edge, and a dense sweep of float32 bit patterns."""
    vals = e4m3_table()[:0x7F]  # 0 .. 448, finite positives
    mids = (vals[1:] + vals[:-1]) / 2  # exact in float32
    edges = torch.tensor([448.0, 464.0, 480.0, 1e30, float("inf"), 2.0**-10, 2.0**-9, 2.0**-6,
                          2.0**-126, 2.0**-149, 0.0])
    base = torch.cat([vals, mids, edges])
    near = [base, _next(base, 0.0), _next(base, float("inf"))]
    near += [_next(near[1], 0.0), _next(near[2], float("inf"))]
    sweep = torch.arange(0x30000000, 0x44000000, 97, dtype=torch.int64).to(torch.int32)
    return torch.cat([*near, sweep.view(torch.float32)])


@pytest.mark.parametrize("via_cast", [False, pytest.param(True, marks=needs_cuda)],
                         ids=["bitwise", "cast"])
def test_e4m3_rounding_matches_codec_exhaustively(via_cast):
    v = _e4m3_probe_values()
    code, value = _e4m3_probe(v, via_cast)
    expected = float_to_e4m3(v)
    bad = (code != expected).nonzero().flatten()
    assert bad.numel() == 0, f"{bad.numel()} mismatches, first inputs {v[bad[:5]].tolist()}"
    assert torch.equal(value, e4m3_table()[expected.long()])


@pytest.mark.parametrize("via_cast", [False, pytest.param(True, marks=needs_cuda)],
                         ids=["bitwise", "cast"])
def test_e4m3_decode_every_code(via_cast):
    codes = torch.arange(0, 0x7F, dtype=torch.int32)
    vals = e4m3_table()[codes.long()]
    code, value = _e4m3_probe(vals, via_cast)
    assert torch.equal(code.long(), codes.long())
    assert torch.equal(value, vals)


def _threshold_blocks() -> torch.Tensor:
    """fp32 blocks (gs = 1) that give every nonzero scale byte and put elements on, and one and
    two ulps either side of, every E2M1 rounding threshold times that scale, with both signs."""
    scales = e4m3_table()[1:0x7F]
    t = torch.tensor(THRESHOLDS)
    targets = (scales[:, None] * t[None, :])  # exact
    near = [targets, _next(targets, 0.0), _next(targets, float("inf"))]
    near += [_next(near[1], 0.0), _next(near[2], float("inf"))]
    elems = torch.stack(near, dim=-1).reshape(len(scales), -1)  # (S, 35)
    elems = torch.cat([elems, -elems, elems[:, :5] * 0.3], dim=1)  # (S, 75)
    per_block = 15
    n_blocks = -(-elems.shape[1] // per_block)
    elems = torch.nn.functional.pad(elems, (0, n_blocks * per_block - elems.shape[1]))
    elems = elems.reshape(len(scales), n_blocks, per_block)
    amax = (6.0 * scales)[:, None, None].expand(-1, n_blocks, 1)  # (6 s) / 6 == s exactly
    return torch.cat([amax, elems], dim=-1).reshape(len(scales), n_blocks * 16)


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_every_scale_and_rounding_threshold(order):
    x = _threshold_blocks()
    got = quantize_nvfp4_triton(x.to(DEVICE), 1.0, order)
    want = quantize_nvfp4(x, 1.0, order)
    assert torch.equal(got.scales.cpu(), want.scales)
    assert torch.equal(got.data.cpu(), want.data)


def _activations(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = shape[-1]
    # Column magnitudes over 12 decades, so blocks get normal, subnormal and zero scales.
    x = torch.randn(shape, generator=g) * torch.logspace(-9, 3, K)[torch.randperm(K, generator=g)]
    x = x.to(dtype)
    flat = x.view(-1, K)
    flat[0, :16] = 0.0  # a zero block
    if flat.shape[0] > 1:
        flat[1, 16:] = -0.0
        flat[1, 3] = -1e-30  # underflows: the block scale is 0 -> +0 codes
    flat[-1, -1] = -flat.abs().max() * 1.5  # the amax element is negative
    return x


CASES = [  # (shape, dtype)
    ((1, 16), torch.float16),
    ((37, 48), torch.float16),
    ((3, 5, 272), torch.float16),
    ((64, 1040), torch.float16),
    ((9, 80), torch.float32),
    ((4, 96), torch.bfloat16),
]


def _case_id(case):
    shape, dtype = case
    return "x".join(map(str, shape)) + "-" + str(dtype).removeprefix("torch.")


def _check(x, global_scale, order, **kw):
    got = quantize_nvfp4_triton(x.to(DEVICE), global_scale, order, **kw)
    gs_ref = global_scale.cpu() if isinstance(global_scale, torch.Tensor) else global_scale
    want = quantize_nvfp4(x.cpu(), gs_ref, order)
    assert got.data.shape == want.data.shape and got.scales.shape == want.scales.shape
    assert got.global_scale.dtype == torch.float32 and got.global_scale.dim() == 0
    assert torch.equal(got.global_scale.cpu(), want.global_scale)
    assert torch.equal(got.scales.cpu(), want.scales)
    assert torch.equal(got.data.cpu(), want.data)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
@pytest.mark.parametrize("gs", ["dynamic", "float", "tensor", "saturating"])
def test_matches_codec(case, order, gs):
    shape, dtype = case
    x = _activations(shape, dtype)
    global_scale = {
        "dynamic": None,
        "float": 0.731,
        "tensor": torch.tensor(13.7, device=DEVICE),
        "saturating": 3e7,  # most blocks clamp to 448 and most elements saturate at 6
    }[gs]
    _check(x, global_scale, order)


@pytest.mark.parametrize("config,shape", [(QuantizeConfig(1, 16, 1), (5, 80)),
                                          (QuantizeConfig(4, 64, 2, k_programs=2), (13, 208)),
                                          (QuantizeConfig(4, 32, 1, k_programs=1), (6, 208)),
                                          (QuantizeConfig(32, 512, 4), (45, 592))],
                         ids=["1x16", "4x64-loop2", "4x32-loop1", "32x512"])
def test_forced_configs(config, shape):
    x = _activations(shape, torch.float16, seed=3)
    _check(x, None, "low_first", config=config, e4m3_via_cast=False)
    if CUDA:
        _check(x, None, "high_first", config=config, e4m3_via_cast=True)


@pytest.mark.parametrize("config", [AmaxConfig(4, 32, 64, 4), AmaxConfig(1, 16, 16, 1)],
                         ids=["4x32-split64", "1x16-split16"])
def test_amax_forced_configs(config):
    x = _activations((13, 208), torch.float16, seed=4)  # K splits end mid-program
    x[7, 200] = -1e4  # the amax sits in the last, partial split
    assert torch.equal(nvfp4_amax_triton(x.to(DEVICE), config=config).cpu(),
                       x.abs().amax().float())
    _check(x, None, "low_first", amax_config=config)


def test_dynamic_scale_from_more_than_1024_partial_maxima():
    """16-bit input: each amax program stores its own maximum and the threshold-table kernel
    reduces them, 1024 at a time (here 80 x 16 = 1280 programs, the amax in the last chunk)."""
    x = _activations((80, 256), torch.float16, seed=11)
    x[79, 250] = -3e4
    _check(x, None, "low_first", amax_config=AmaxConfig(1, 16, 16, 1))


def test_non_contiguous_rows():
    x = _activations((20, 128), torch.float16, seed=1)[::3, 32:96]
    assert not x.is_contiguous()
    _check(x, None, "low_first")


def test_amax_and_global_scale():
    x = _activations((33, 272), torch.float16, seed=2).to(DEVICE)
    assert torch.equal(nvfp4_amax_triton(x).cpu(), x.abs().amax().float().cpu())
    for t in (x, torch.zeros(3, 32, device=DEVICE), torch.full((2, 16), 1e-37, device=DEVICE)):
        assert torch.equal(nvfp4_global_scale_triton(t).cpu(), nvfp4_global_scale(t.cpu()))


def test_all_zero_input_and_empty_rows():
    _check(torch.zeros(3, 32, dtype=torch.float16), None, "low_first")
    got = quantize_nvfp4_triton(torch.zeros(0, 32, dtype=torch.float16, device=DEVICE))
    assert got.data.shape == (0, 16) and got.scales.shape == (0, 2)


def test_errors_name_the_argument():
    x = torch.zeros(2, 32, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match="x: expected a last dimension"):
        quantize_nvfp4_triton(torch.zeros(2, 24, dtype=torch.float16, device=DEVICE))
    with pytest.raises(TypeError, match="x: expected dtype"):
        quantize_nvfp4_triton(x.to(torch.int32))
    with pytest.raises(ValueError, match="order"):
        quantize_nvfp4_triton(x, order="middle")
    with pytest.raises(ValueError, match="global_scale: expected a finite positive"):
        quantize_nvfp4_triton(x, -1.0)
    with pytest.raises(ValueError, match="global_scale: expected a scalar"):
        quantize_nvfp4_triton(x, torch.ones(2, device=DEVICE))
    with pytest.raises(TypeError, match="global_scale: expected a float"):
        quantize_nvfp4_triton(x, True)
    np = pytest.importorskip("numpy")  # NumPy scalars are real numbers too
    assert quantize_nvfp4_triton(x, np.float32(3.0)).global_scale.item() == 3.0
    with pytest.raises(ValueError, match="QuantizeConfig.block_k"):
        QuantizeConfig(4, 8)
    with pytest.raises(ValueError, match="QuantizeConfig.k_programs"):
        QuantizeConfig(4, 64, k_programs=0)
    with pytest.raises(ValueError, match="AmaxConfig.k_per_program"):
        AmaxConfig(4, 64, 96)


def test_pick_config_is_valid():
    for M, K in [(1, 16), (7, 48), (8192, 8192), (2048, 3072)]:
        for path in ("f32", "ptx"):
            cfg = pick_config(M, K, path)
            assert cfg.block_k >= 16 and cfg.block_m * cfg.block_k <= 4096
            assert cfg.grid(M, K)[0] * cfg.block_m >= M
        cfg = pick_config(M, K)
        m_programs, k_programs = cfg.grid(M, K)
        assert 1 <= k_programs <= -(-K // cfg.block_k) and m_programs * cfg.block_m >= M
        acfg = pick_amax_config(M, K)
        assert acfg.k_per_program % acfg.block_k == 0 and acfg.k_per_program >= acfg.block_k


def test_e2m1_table_is_the_codecs():
    # The kernel hard-codes the thresholds; they are the midpoints of the E2M1 magnitudes.
    mags = sorted(set(abs(v) for v in E2M1_VALUES))
    assert tuple((a + b) / 2 for a, b in zip(mags, mags[1:])) == THRESHOLDS


@needs_cuda
@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_bf16_on_cuda(order):
    x = _activations((257, 4096), torch.bfloat16, seed=5)
    for gs in (None, 0.5, 3e7):
        _check(x, gs, order)
        _check(x, gs, order, e4m3_via_cast=True)


def test_block_scale_uses_a_true_division_by_6():
    # Pins: s_b = e4m3((amax_b / 6) * gs) with IEEE division; amax_b * fl(1/6) rounds some of
    # these block amaxes (6 x an E4M3 midpoint, up to 3 ulps either side) to another scale byte.
    vals = e4m3_table()[:0x7F]
    centre = ((vals[1:] + vals[:-1]) / 2) * 6.0
    amax = [centre]
    for direction in (float("inf"), 0.0):
        c = centre
        for _ in range(3):
            c = _next(c, direction)
            amax.append(c)
    amax = torch.cat(amax)
    x = amax[:, None] * torch.linspace(1.0, -1.0, 16)  # element 0 is the amax
    assert int((float_to_e4m3(amax / 6.0) != float_to_e4m3(amax * (1.0 / 6.0))).sum()) > 0
    _check(x, 1.0, "low_first")


# ---- the 16-bit paths: threshold table, integer and packed-PTX compares ---------------------

PATHS16 = ["int16", pytest.param("ptx", marks=needs_cuda)]
# Encode scales from ordinary to extreme (2^-64 takes the table's rescaled 1/gs branch).
GS16 = [1.0, 0.731, 13.7, 3e7, 1e-3, 2.0**-70, 1e30]


def _bits16_to_float(bits: torch.Tensor, dtype) -> torch.Tensor:
    return bits.to(torch.int16).view(dtype).float()


def _step16(x: torch.Tensor, n: int) -> torch.Tensor:
    """x (16-bit, >= 0) moved n bit patterns up (or down), clamped to [0, max finite]."""
    top = torch.finfo(x.dtype).max
    top_bits = int(torch.tensor(top, dtype=x.dtype).view(torch.int16))
    bits = (x.view(torch.int16).to(torch.int32) + n).clamp(0, top_bits)
    return bits.to(torch.int16).view(x.dtype)


def _adversarial16(dtype, gs: float) -> torch.Tensor:
    """16-bit blocks, one group per E4M3 scale code: an amax element that gives (about) that scale
    and elements at, and one and two 16-bit steps either side of, every E2M1 threshold times the
    scale over gs, both signs; rows whose amax overflows the type are dropped."""
    s = e4m3_table()[1:0x7F].double()
    amax = (6.0 * s / gs).to(dtype)
    targets = (s[:, None] * torch.tensor(THRESHOLDS, dtype=torch.float64) / gs).to(dtype)
    elems = torch.cat([_step16(targets, n) for n in (-2, -1, 0, 1, 2)], dim=1)  # (S, 35)
    elems = torch.cat([elems, -elems, _step16(elems[:, :5], -300)], dim=1)  # (S, 75), some tiny
    per_block = 15
    n_blocks = -(-elems.shape[1] // per_block)
    elems = torch.nn.functional.pad(elems, (0, n_blocks * per_block - elems.shape[1]))
    elems = elems.reshape(len(s), n_blocks, per_block)
    x = torch.cat([amax[:, None, None].expand(-1, n_blocks, 1), elems], dim=-1)
    x = x.reshape(len(s), n_blocks * 16)
    return x[torch.isfinite(x.float()).all(dim=1)]


@pytest.mark.parametrize("path", PATHS16)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("gs", GS16, ids=[f"gs{g:g}" for g in GS16])
def test_16bit_paths_at_every_threshold(path, dtype, gs):
    x = _adversarial16(dtype, gs)
    if x.shape[0] == 0:
        pytest.skip("every amax overflows fp16 at this gs")
    for order in ("low_first", "high_first"):
        got = quantize_nvfp4_triton(x.to(DEVICE), gs, order, path=path)
        want = quantize_nvfp4(x, gs, order)
        bad_s = int((got.scales.cpu() != want.scales).sum())
        bad_d = int((got.data.cpu() != want.data).sum())
        assert bad_s == 0 and bad_d == 0, f"{order}: {bad_s} scale, {bad_d} data mismatches"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("gs", GS16, ids=[f"gs{g:g}" for g in GS16])
def test_threshold_table_is_the_smallest_reaching_value(dtype, gs):
    # Pins the table: X is the smallest 16-bit |x| with fl(|x| * gs) >= T for every scale code.
    table = torch.empty((128, 8), dtype=torch.int32, device=DEVICE)
    gs_out = torch.empty((), dtype=torch.float32, device=DEVICE)
    _threshold_table_kernel[(1,)](torch.tensor(gs, device=DEVICE), gs_out, table, gs_out, gs_out,
                                  0, FROM_AMAX=False, IS_BF16=dtype == torch.bfloat16,
                                  HIGH_FIRST=False)
    table = table.cpu()
    s = e4m3_table()[:0x7F]
    t = torch.tensor(THRESHOLDS)
    T = s[:, None] * t[None, :]
    T = torch.where(torch.arange(7) % 2 == 0, _next(T, float("inf")), T)  # strict ones
    X = table[:0x7F, :7]
    assert torch.equal(X & 0xFFFF, X >> 16)  # both halves
    assert torch.equal(X[0], torch.full((7,), 0x7FFF7FFF, dtype=torch.int32))
    assert torch.equal(table[:0x7F, 7], torch.where(s == 0, 0, 0x00800008).to(torch.int32))
    X = X[1:] & 0xFFFF
    gs32 = torch.tensor(gs, dtype=torch.float32)
    finite = X < int(torch.tensor(float("inf"), dtype=dtype).view(torch.int16))
    reach = _bits16_to_float(X, dtype) * gs32 >= T[1:]
    below = _bits16_to_float(X - 1, dtype) * gs32 >= T[1:]
    assert bool((reach | ~finite).all()) and not bool((below & (X > 0)).any())
    # inf means no finite 16-bit value reaches T
    top = torch.tensor(torch.finfo(dtype).max, dtype=torch.float32)
    assert bool(((top * gs32 < T[1:]) | finite).all())


@pytest.mark.parametrize("path", ["f32", *PATHS16])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_paths_match_codec_on_activations(path, dtype):
    x = _activations((37, 272), dtype, seed=6)
    for gs in (None, 0.731, 3e7):
        for order in ("low_first", "high_first"):
            _check(x, gs, order, path=path)


@pytest.mark.parametrize("path", ["f32", *PATHS16])
def test_amax_paths(path):
    for dtype in (torch.float16, torch.bfloat16):
        x = _activations((13, 208), dtype, seed=7)
        x[5, 100] = -torch.finfo(dtype).max  # the largest finite magnitude, negative
        for cfg in (None, AmaxConfig(4, 32, 64, 4)):
            got = nvfp4_amax_triton(x.to(DEVICE), config=cfg, path=path)
            assert torch.equal(got.cpu(), x.abs().amax().float())


def test_odd_row_stride_is_copied_for_the_16bit_path():
    x = _activations((9, 130), torch.float16, seed=8)[:, 1:129]  # rows start at odd offsets
    assert x.stride(0) % 2 == 0 and x.storage_offset() % 2 == 1
    _check(x, 0.5, "low_first", path="int16")


def test_path_errors():
    x = torch.zeros(2, 32, dtype=torch.float32, device=DEVICE)
    with pytest.raises(ValueError, match="path: 'int16' needs fp16/bf16"):
        quantize_nvfp4_triton(x, path="int16")
    with pytest.raises(ValueError, match="path: expected one of"):
        quantize_nvfp4_triton(x.half(), path="fast")
    if not CUDA:
        with pytest.raises(ValueError, match="path: 'ptx'"):
            quantize_nvfp4_triton(x.half(), path="ptx")


@pytest.mark.parametrize("path", ["f32", *PATHS16])
@pytest.mark.parametrize("gs", [None, 0.731], ids=["dynamic", "static"])
def test_alpha_out_is_torchs_division(path, gs):
    """The kernel that writes gs also writes alpha_numerator / gs, bit for bit torch's division
    (what NVFP4Linear's dynamic scale used to launch as a kernel of its own); nothing else
    changes."""
    x = _activations((7, 96), torch.float16, seed=9).to(DEVICE)
    num = torch.tensor([0.0123], dtype=torch.float32, device=DEVICE)
    alpha = torch.full((1,), float("nan"), dtype=torch.float32, device=DEVICE)
    q = quantize_nvfp4_triton(x, gs, path=path, alpha_numerator=num, alpha_out=alpha)
    plain = quantize_nvfp4_triton(x, gs, path=path)
    assert torch.equal(alpha, num / q.global_scale)
    assert torch.equal(q.data, plain.data) and torch.equal(q.scales, plain.scales)
    assert torch.equal(q.global_scale, plain.global_scale)


def test_alpha_arguments_are_checked():
    x = torch.zeros(2, 32, dtype=torch.float16, device=DEVICE)
    one = torch.ones(1, dtype=torch.float32, device=DEVICE)
    with pytest.raises(ValueError, match="alpha_numerator, alpha_out: expected both"):
        quantize_nvfp4_triton(x, alpha_numerator=one)
    with pytest.raises(ValueError, match=r"alpha_out: expected a one-element float32 tensor on "
                                         r".*, got a torch.float16 tensor of shape \(1,\) on"):
        quantize_nvfp4_triton(x, alpha_numerator=one, alpha_out=one.half())
    with pytest.raises(ValueError, match="alpha_numerator: .* got float"):
        quantize_nvfp4_triton(x, alpha_numerator=0.5, alpha_out=one)


@pytest.mark.parametrize("path", PATHS16)
@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=needs_cuda)])
@pytest.mark.parametrize("gs", [None, 0.731, 1e30], ids=["dynamic", "static", "huge"])
def test_quantize_dequantize_is_the_codes_values(path, dtype, gs):
    """The one-pass fp16 values are e2m1 * e4m3 of the quantiser's own codes and scales, bit for
    bit (negative-zero codes, zero and subnormal scales, a ragged row block and tile included),
    with the same gs and alpha; nothing is written outside the (M, K) output."""
    x = _activations((11, 544), dtype, seed=4).to(DEVICE)
    x[2, 32:48] = 0  # a zero block: scale 0, +0 codes
    x[3, 7] = -1e-30  # rounds to a negative-zero code
    num = torch.tensor([0.0123], dtype=torch.float32, device=DEVICE)
    alpha = torch.full((1,), float("nan"), dtype=torch.float32, device=DEVICE)
    v, g = quantize_dequantize_nvfp4_triton(x, gs, path=path, alpha_numerator=num,
                                            alpha_out=alpha)
    q = quantize_nvfp4_triton(x, gs, path=path)
    ref = dequantize_nvfp4_blocks(q.data.cpu(), q.scales.cpu()).to(torch.float16)
    assert v.dtype == torch.float16 and v.shape == x.shape
    assert torch.equal(v.cpu().view(torch.int16), ref.view(torch.int16))
    assert torch.signbit(v[3, 7].float()) and torch.equal(g, q.global_scale)
    assert torch.equal(alpha, num / q.global_scale)
    # an interior view of a larger buffer: the rows beyond it stay as they were
    big = torch.full((13, 544), 7.0, dtype=dtype, device=DEVICE)
    big[1:12] = x
    v2, _ = quantize_dequantize_nvfp4_triton(big[1:12], gs, path=path)
    assert torch.equal(v2.view(torch.int16), v.view(torch.int16))


def test_quantize_dequantize_errors_name_the_argument():
    x = torch.zeros(2, 32, dtype=torch.float16, device=DEVICE)
    with pytest.raises(ValueError, match="x: expected fp16 or bf16"):
        quantize_dequantize_nvfp4_triton(x.float())
    with pytest.raises(ValueError, match="path: expected 'int16', 'ptx' or None"):
        quantize_dequantize_nvfp4_triton(x, path="f32")
    with pytest.raises(ValueError, match="x: expected a last dimension"):
        quantize_dequantize_nvfp4_triton(x[:, :24])
