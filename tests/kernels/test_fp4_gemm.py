"""The prefill GEMM (fp4mm/kernels/fp4_gemm.py) against the FP32 oracle.

On CPU these run in Triton's interpreter (fp16 dot only); on an sm_90 GPU the same tests run the
compiled kernel. Shapes are chosen to hit every tile boundary with small explicit configs.
"""

import pytest
import torch

from fp4mm import reference
from fp4mm.formats import float_to_e4m3
from fp4mm.kernels import fp4_gemm as G
from fp4mm.ops.prepack import prepack_nvfp4_weight

DEV = "cuda" if torch.cuda.is_available() else "cpu"
ORDERS = ("low_first", "high_first")
# Small configs: BLOCK_K 32 (K tail when K % 32 != 0), 64 (the prepacked/word paths), 128.
CFG32 = G.GemmConfig(block_n=16, block_m=16, block_k=32, num_stages=2, num_warps=4)
CFG64 = G.GemmConfig(block_n=32, block_m=16, block_k=64, num_stages=2, num_warps=4)
CFG128 = G.GemmConfig(block_n=16, block_m=32, block_k=128, num_stages=2, num_warps=4)


def scales_e4m3(rows, cols, gen=None):
    return float_to_e4m3(torch.rand(rows, cols, generator=gen) * 1.5 + 0.5).to(DEV)


def nvfp4_operands(M, N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    xq = torch.randint(0, 256, (M, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    return xq, scales_e4m3(M, K // 16, g), wq, scales_e4m3(N, K // 16, g)


def assert_close_exact_products(out, ref):
    """Products are exact; only fp32 summation order and the output rounding differ."""
    out = out.float()
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN outputs"
    tol = ref.abs().amax().item() * 2**-11 + 1e-6  # fp32 summation order (generous)
    err = (out - ref).abs() - ref.abs() * 2**-10  # minus the output's own fp16 rounding
    assert err.max().item() <= tol, f"max error {err.max().item()} > {tol}"


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("M,N,K,cfg", [
    (1, 17, 48, CFG32),      # M = 1, K % BLOCK_K != 0, N ragged
    (19, 33, 64, CFG64),     # both ragged, K one tile
    (37, 70, 192, CFG64),    # several K tiles, scale words
    (20, 40, 160, CFG128),   # K tail inside a 128 tile
], ids=["m1-ktail", "ragged", "ktiles", "k128tail"])
def test_nvfp4_mm_gemm_matches_oracle(M, N, K, cfg, order):
    xq, xs, wq, ws = nvfp4_operands(M, N, K)
    ref = reference.nvfp4_mm(xq, xs, wq, ws, 0.25, order=order)
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device=DEV)
    G.nvfp4_mm_gemm(xq, xs, wq, ws, 0.25, order, out, config=cfg)
    assert_close_exact_products(out, ref)


@pytest.mark.parametrize("order", ORDERS)
def test_prepacked_identical_to_raw(order):
    """Permuted bytes + int32 scale words give the same bits as the raw path."""
    M, N, K = 9, 40, 128
    xq, xs, wq, ws = nvfp4_operands(M, N, K, seed=1)
    pk = prepack_nvfp4_weight(wq, ws, order=order)
    raw = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
    packed = torch.full_like(raw, float("nan"))
    G.nvfp4_mm_gemm(xq, xs, wq, ws, 1.0, order, raw, config=CFG64)
    G.nvfp4_mm_gemm(xq, xs, wq, ws, 1.0, order, packed, config=CFG64, prepacked=pk)
    assert torch.equal(raw, packed)
    ref = reference.nvfp4_mm(xq, xs, wq, ws, 1.0, order=order)
    assert_close_exact_products(packed, ref)


@pytest.mark.parametrize("words", [False, True], ids=["byte-scales", "word-scales"])
@pytest.mark.parametrize("packed", [False, True], ids=["raw", "prepacked"])
def test_one_hot_probe_is_bit_exact(words, packed):
    """Identity activations: out[m, n] = dequant(w)[n, m] exactly (no summation at all)."""
    N, K = 24, 64
    _, _, wq, ws = nvfp4_operands(1, N, K, seed=2)
    x = torch.eye(K, dtype=torch.float16, device=DEV)
    out = torch.full((K, N), float("nan"), dtype=torch.float32, device=DEV)
    if packed:
        pk = prepack_nvfp4_weight(wq, ws, order="high_first")
        G.launch_fp4_gemm(x, pk.packed, ws, out, group_size=16, nvfp4=True, alpha=1.0,
                          order="low_first", config=CFG64, w_permuted=True, scale_words=words)
    else:
        G.launch_fp4_gemm(x, wq, ws, out, group_size=16, nvfp4=True, alpha=1.0,
                          order="high_first", config=CFG64, scale_words=words)
    from fp4mm.formats import dequantize_nvfp4_blocks

    assert torch.equal(out, dequantize_nvfp4_blocks(wq, ws, "high_first").T)


def test_nan_scale_byte_propagates():
    """A NaN E4M3 scale byte (0x7F / 0xFF) poisons exactly the outputs that read its block."""
    M, N, K = 5, 20, 64
    xq, xs, wq, ws = nvfp4_operands(M, N, K, seed=3)
    ws[3, 1] = 0x7F
    ws[11, 2] = 0xFF
    ref = reference.nvfp4_mm(xq, xs, wq, ws, 1.0)
    for cfg, pk in [(CFG32, None), (CFG64, prepack_nvfp4_weight(wq, ws))]:
        out = torch.zeros((M, N), dtype=torch.float32, device=DEV)
        G.nvfp4_mm_gemm(xq, xs, wq, ws, 1.0, "low_first", out, config=cfg, prepacked=pk)
        assert torch.equal(torch.isnan(out), torch.isnan(ref))
        assert torch.isnan(out[:, 3]).all() and torch.isnan(out[:, 11]).all()


@pytest.mark.parametrize("group_size,K,cfg", [
    (2, 48, CFG32), (16, 96, CFG64), (32, 96, CFG32), (64, 128, CFG64), (128, 256, CFG64),
    (6, 36, CFG32),
], ids=["g2", "g16", "g32-row", "g64", "g128-row", "g6-gather"])
def test_w4a16_mm_gemm_every_scale_path(group_size, K, cfg):
    M, N = 7, 21
    g = torch.Generator().manual_seed(group_size)
    x = (0.5 * torch.randn(M, K, generator=g)).half().to(DEV)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    sc = (0.1 * torch.rand(N, K // group_size, generator=g) + 0.01).half().to(DEV)
    for order in ORDERS:
        ref = reference.w4a16_mm(x, wq, sc, group_size, order=order)
        out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
        G.w4a16_mm_gemm(x, wq, sc, group_size, order, out, config=cfg)
        assert not torch.isnan(out).any()
        # one fp16 rounding of each dequantised weight (2^-11 relative) summed over K, plus the
        # fp16 output rounding: bounded by |x| @ |w|^T * 2^-10 + |ref| * 2^-10.
        w_abs = reference.w4a16_mm(torch.eye(K, dtype=torch.float16, device=DEV), wq, sc,
                                   group_size, order=order).abs()
        bound = (x.float().abs() @ w_abs) * 2**-10 + ref.abs() * 2**-10 + 1e-6
        assert ((out.float() - ref).abs() <= bound).all(), group_size


def test_config_validity_and_scale_paths():
    assert G.is_valid_config(G.choose_config(2048, 18432, 3072))
    assert not G.is_valid_config(G.GemmConfig(block_k=48))
    assert G._scale_path(True, 16, 64) == G.SCALE_NVFP4
    assert G._scale_path(False, 32, 64) == G.SCALE_GROUP_BLOCK
    assert G._scale_path(False, 128, 64) == G.SCALE_GROUP_ROW
    assert G._scale_path(False, 6, 64) == G.SCALE_GROUP_GATHER


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                    reason="bf16 paths need an sm_90 GPU (the interpreter's bf16 is wrong)")
def test_bf16_paths_on_gpu():
    M, N, K = 100, 300, 512
    xq, xs, wq, ws = nvfp4_operands(M, N, K, seed=4)
    ref = reference.nvfp4_mm(xq, xs, wq, ws, 0.5)
    out = torch.empty((M, N), dtype=torch.bfloat16, device=DEV)
    G.nvfp4_mm_gemm(xq, xs, wq, ws, 0.5, "low_first", out)
    assert ((out.float() - ref).abs() <= ref.abs() * 2**-7 + ref.abs().amax() * 2**-12).all()
    x = torch.randn(M, K, device=DEV).bfloat16()
    out = torch.empty((M, N), dtype=torch.bfloat16, device=DEV)
    G.nvfp4_w4a16_mm_gemm(x, wq, ws, 0.5, "low_first", out)
    from fp4mm.reference import nvfp4_w4a16_mm

    ref = nvfp4_w4a16_mm(x, wq, ws, 2.0)
    assert (out.float() - ref).abs().max() <= ref.abs().amax() * 2**-7
