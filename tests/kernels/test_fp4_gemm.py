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
CFG16 = G.GemmConfig(block_n=64, block_m=16, block_k=16, num_stages=2, num_warps=4)
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
    pk = prepack_nvfp4_weight(wq, ws, order=order, layout="triton")
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
        pk = prepack_nvfp4_weight(wq, ws, order="high_first", layout="triton")
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
    for cfg, pk in [(CFG32, None), (CFG64, prepack_nvfp4_weight(wq, ws, layout="triton"))]:
        out = torch.zeros((M, N), dtype=torch.float32, device=DEV)
        G.nvfp4_mm_gemm(xq, xs, wq, ws, 1.0, "low_first", out, config=cfg, prepacked=pk)
        assert torch.equal(torch.isnan(out), torch.isnan(ref))
        assert torch.isnan(out[:, 3]).all() and torch.isnan(out[:, 11]).all()


# BLOCK_M 256 runs the token tile as two accumulators (SPLIT_M) on the groupwise dot path.
CFG_SPLIT = G.GemmConfig(block_n=16, block_m=256, block_k=32, num_stages=2, num_warps=4)


@pytest.mark.parametrize("group_size,K,cfg", [
    (2, 48, CFG32), (16, 96, CFG16), (16, 48, CFG16), (32, 96, CFG32), (64, 128, CFG64),
    (128, 256, CFG64), (48, 96, CFG16), (6, 36, CFG32), (32, 64, CFG_SPLIT),
], ids=["g2-fma", "g16", "g16-3tiles", "g32", "g64", "g128-2tiles", "g48-gcd16",
        "g6-fma", "g32-splitm"])
def test_w4a16_mm_gemm_every_scale_path(group_size, K, cfg):
    M, N = (7, 21) if cfg.block_m < 256 else (300, 21)
    g = torch.Generator().manual_seed(group_size)
    x = (0.5 * torch.randn(M, K, generator=g)).half().to(DEV)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    sc = (0.1 * torch.rand(N, K // group_size, generator=g) + 0.01).half().to(DEV)
    for order in ORDERS:
        ref = reference.w4a16_mm(x, wq, sc, group_size, order=order)
        out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
        G.w4a16_mm_gemm(x, wq, sc, group_size, order, out, config=cfg)
        # products exact: only fp32 summation order and the fp16 output rounding differ
        assert_close_exact_products(out, ref)


@pytest.mark.parametrize("group_size,cfg", [(32, CFG32), (16, CFG16), (128, CFG64), (2, CFG32),
                                            (32, CFG_SPLIT)],
                         ids=["g32", "g16", "g128", "g2-fma", "g32-splitm"])
def test_w4a16_one_hot_probe_is_bit_exact(group_size, cfg):
    """Regression (v4): e2m1 * fp16 scale was rounded to fp16 before the dot. Scales with 11
    significant bits times code 1.5 need 12-13 bits; with identity activations the fp32 output
    must equal the oracle's exact fp32 product bit for bit."""
    N, K = 24, 256
    g = torch.Generator().manual_seed(5)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g)
    wq[0, :] = 0x33  # code 3 = 1.5 in both nibbles
    mant = torch.randint(1024, 2048, (N, K // group_size), generator=g)  # 11 significant bits
    mant[0, 0] = 1025  # scale 1 + 2^-10: 1.5 * scale = 1.5 + 2^-10 + 2^-11
    sc = (mant.double() * 2.0**-14).half()
    x = torch.eye(K, dtype=torch.float16, device=DEV)
    wq, sc = wq.to(DEV), sc.to(DEV)
    out = torch.full((K, N), float("nan"), dtype=torch.float32, device=DEV)
    G.w4a16_mm_gemm(x, wq, sc, group_size, "low_first", out, config=cfg)
    ref = reference.w4a16_mm(x, wq, sc, group_size, order="low_first")
    assert ref[0, 0].item() == 1.5 * (1 + 2**-10) * 2**-4  # not representable in fp16
    assert torch.equal(out, ref)


@pytest.mark.parametrize("group_size,cfg", [
    (16, G.GemmConfig(block_n=16, block_m=16, block_k=16, num_stages=2, num_warps=4)),
    (16, CFG32), (48, G.GemmConfig(block_n=32, block_m=16, block_k=64, num_warps=4))])
def test_narrow_tiles_with_16_wide_group_chunks_are_refused(group_size, cfg):
    """Regression: 16-wide group chunks on tiles of fewer than 64 weight rows gave wrong results
    on an H100 (the interpreter was right; scripts/gpu_group16_probe.py), so the launcher refuses
    them and choose_config never returns them."""
    K = 96
    x = torch.zeros(4, K, dtype=torch.float16, device=DEV)
    wq = torch.zeros(8, K // 2, dtype=torch.uint8, device=DEV)
    sc = torch.ones(8, K // group_size, dtype=torch.float16, device=DEV)
    out = torch.empty(4, 8, dtype=torch.float16, device=DEV)
    with pytest.raises(ValueError, match="BLOCK_N >= 64"):
        G.w4a16_mm_gemm(x, wq, sc, group_size, "low_first", out, config=cfg)
    for M in (1, 16, 64, 128, 2048):
        chosen = G.choose_config(M, 8192, 3072, group_size)
        assert G._sub_k(G.SCALE_GROUP_DOT, group_size, chosen.block_k) > 16 or chosen.block_n >= 64


@pytest.mark.parametrize("group_size,K", [(16, 96), (48, 192)])
def test_several_group_chunks_per_k_tile(group_size, K):
    """BLOCK_K spanning several group chunks (right on an H100 at BLOCK_N >= 64)."""
    cfg = G.GemmConfig(block_n=64, block_m=16, block_k=64, num_stages=2, num_warps=4)
    M, N = 5, 70
    g = torch.Generator().manual_seed(K)
    x = (0.5 * torch.randn(M, K, generator=g)).half().to(DEV)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).to(DEV)
    sc = (0.1 * torch.rand(N, K // group_size, generator=g) + 0.01).half().to(DEV)
    ref = reference.w4a16_mm(x, wq, sc, group_size, order="low_first")
    out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
    G.w4a16_mm_gemm(x, wq, sc, group_size, "low_first", out, config=cfg)
    assert_close_exact_products(out, ref)


@pytest.mark.needs_gpu_memory(8)
@pytest.mark.parametrize("M,N,K", [(2**17 + 1, 16, 2**14), (2**17 + 1, 2**14 + 16, 16)],
                         ids=["x-offsets", "out-offsets"])
def test_offsets_past_2_to_the_31(M, N, K):
    """The last token rows start 2^31 elements into x (or into out): int32 offsets would wrap
    and read or write outside them."""
    g = torch.Generator(device=DEV).manual_seed(1)
    x = torch.randn((M, K), dtype=torch.float16, device=DEV, generator=g)
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, device=DEV, generator=g)
    ws = float_to_e4m3(torch.rand(N, K // 16, device=DEV, generator=g) + 0.5)
    out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
    G.nvfp4_w4a16_mm_gemm(x, wq, ws, 1.0, "low_first", out)
    rows = [0, 1, M - 2, M - 1]
    ref = reference.nvfp4_w4a16_mm(x[rows], wq, ws, 1.0)
    torch.testing.assert_close(out[rows].float(), ref, rtol=2**-9, atol=2**-9 * ref.abs().max())


def test_config_validity_and_scale_paths():
    assert G.is_valid_config(G.choose_config(2048, 18432, 3072))
    assert not G.is_valid_config(G.GemmConfig(block_k=48))
    assert G._scale_path(True, 16) == G.SCALE_NVFP4
    assert G._scale_path(False, 32) == G.SCALE_GROUP_DOT
    assert G._scale_path(False, 48) == G.SCALE_GROUP_DOT
    assert G._scale_path(False, 6) == G.SCALE_GROUP_FMA
    assert G._scale_path(False, 8) == G.SCALE_GROUP_FMA
    assert G._sub_k(G.SCALE_GROUP_DOT, 32, 64) == 32
    assert G._sub_k(G.SCALE_GROUP_DOT, 128, 64) == 64
    assert G._sub_k(G.SCALE_GROUP_DOT, 48, 64) == 16
    for M in (1, 16, 64, 128, 2048):
        for group in (None, 2, 16, 32, 128):
            assert G.is_valid_config(G.choose_config(M, 8192, 3072, group))


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


@pytest.mark.parametrize("packed", [False, True], ids=["raw", "prepacked"])
def test_alpha_from_a_device_tensor_gives_the_same_bits(packed):
    """alpha as a one-element float32 tensor, read in the epilogue (fp4mm.kernels.alpha)."""
    M, N, K = 9, 40, 128
    xq, xs, wq, ws = nvfp4_operands(M, N, K, seed=2)
    pk = prepack_nvfp4_weight(wq, ws, layout="triton") if packed else None
    outs = []
    for alpha in (0.375, torch.tensor([0.375], device=DEV)):
        out = torch.full((M, N), float("nan"), dtype=torch.float16, device=DEV)
        G.nvfp4_mm_gemm(xq, xs, wq, ws, alpha, "low_first", out, config=CFG64, prepacked=pk)
        outs.append(out)
    assert not torch.isnan(outs[0]).any() and torch.equal(outs[0], outs[1])
