"""fp4_gemv_fp8_sm90 (W4A4 decode on E4M3 wgmma, Gluon, sm_90a): compile-only checks on any
machine, numerics on an sm_90 GPU.

Gluon cannot run in Triton's interpreter; the interpreter-tested twin of every decode GEMV is
fp4mm/kernels/fp4_gemv.py. CPU (CI): the split rule and the launcher's refusals; the ops send
1-4 W4A4 tokens here and nothing else; every specialisation the rule ships at the decode shapes
(1, 2 and 4 token columns) compiles for sm_90a without spills, with its 8 E4M3 wgmmas a window
pipelined (one wait), 16-byte weight loads and the PDL pair. GPU: vs the fp32 oracle on fresh
random inputs with the output poisoned (1-4 tokens, ragged N, window counts that are not powers
of two, every split, both nibble orders, three output dtypes, alpha from a device tensor), block
sums of the widest dynamic range, NaN scale propagation, and the ops running it alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import re

import pytest
import torch

from fp4mm import reference

F = pytest.importorskip("fp4mm.kernels.fp4_gemv_fp8_sm90")
_spec = importlib.util.spec_from_file_location(
    "_ptxas", os.path.join(os.path.dirname(__file__), "_ptxas.py"))
_ptxas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ptxas)

HAS_SM90 = torch.cuda.is_available() and F.is_hopper("cuda")
gpu = pytest.mark.skipif(not HAS_SM90, reason="needs an sm_90 CUDA device")
DECODE_SHAPES = ((18432, 3072), (8192, 8192), (3072, 3072), (14336, 4096), (4096, 14336),
                 (28672, 4096), (4096, 4096))


# ----------------------------------------------------------------------------------------------
# CPU
# ----------------------------------------------------------------------------------------------
def test_split_rule():
    for N, K in DECODE_SHAPES + ((64, 256), (100, 1280), (5000, 256 * 7)):
        s = F.choose_split(N, K)
        assert (K // F.WINDOW) % s == 0, (N, K, s)
    # the measured picks (H100, docs/perf-log.md)
    assert F.choose_split(18432, 3072) == 2
    assert F.choose_split(8192, 8192) == 4
    assert F.choose_split(3072, 3072) == 4
    assert F.choose_split(64, 256) == 1  # one window: nothing to split
    # 2 tokens: split 2 would leave 48 of 576 CTAs for a second wave of 528; 3-4 tokens run
    # those 576 in halves, 5 CTAs an SM: one wave of 660
    assert [F.choose_split(18432, 3072, m) for m in (2, 3, 4)] == [3, 2, 2]
    assert [F.uses_halves(18432, m, 2) for m in (1, 2, 3, 4)] == [False, False, True, True]
    assert not F.uses_halves(18432, 4, 3)  # 864 CTAs: not one wave either way
    assert not F.uses_halves(8192, 4, 4)  # 512 CTAs: 4 an SM hold them
    assert [F.choose_split(8192, 8192, m) for m in (2, 4)] == [4, 4]
    assert F.choose_split(28672, 4096, 4) == 2  # 896 CTAs: the second wave is 70% full
    for K in (256 * 127, 28672, 256 * 64):  # a prime window count, long K
        w = K // F.WINDOW
        assert w // F.choose_split(4096, K) <= min(8, F.MAX_WINDOWS)
    # one-wave grids take >= 2 windows a CTA where a split of <= 8 windows allows (session 39)
    assert [F.choose_split(1024, 4096, m) for m in (1, 2, 4)] == [8, 8, 8]  # was 16: 1 window
    assert F.choose_split(2048, 2048) == 4  # was 8
    assert F.choose_split(512, 256 * 11) == 11  # 11 windows: 1 a CTA or 11 (more than 8)
    assert F.choose_split(64, 512) == 1  # 2 windows: 1 CTA of both rather than 2 of one
    assert F.choose_split(50624, 512, 4) == 2  # 1582 CTAs of one window: more than a wave
    # under half a wave of CTAs: at most 4 windows each, while the grid stays one wave
    assert [F.choose_split(6144, 4096, m) for m in (1, 2, 4)] == [4, 4, 4]  # was 2: 192 x 8
    assert F.choose_split(4096, 8192) == 8  # was 4: 256 CTAs of 8 windows
    assert F.choose_split(2048, 8192) == 8  # 256 CTAs of 4 windows: unchanged
    assert F.choose_split(14336, 4096) == 2  # 448 CTAs: unchanged
    assert F.choose_split(300, 256 * 5) == 1  # 5 windows: no split leaves 2-4


def test_is_supported_and_the_launcher_refuses_before_launching():
    t = torch.zeros(16, dtype=torch.uint8)
    assert not F.is_supported(torch.device("cpu"), 1, 256, t)  # not Hopper
    K, N = 512, 64
    w_q = torch.zeros((N, K // 2), dtype=torch.uint8)
    w_s = torch.zeros((N, K // 16), dtype=torch.uint8)
    out = torch.empty((1, N), dtype=torch.float16)
    with pytest.raises(ValueError, match="x_q: expected 1 to 4 rows"):
        F.gemv_fp8_sm90(torch.zeros((5, K // 2), dtype=torch.uint8),
                        torch.zeros((5, K // 16), dtype=torch.uint8), w_q, w_s, 1.0, out)
    assert [F.tokens_per_cta(m) for m in (1, 2, 3, 4)] == [1, 2, 4, 4]
    x_q = torch.zeros((1, K // 2), dtype=torch.uint8)
    x_s = torch.zeros((1, K // 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match="split: expected a divisor of K / 256 = 2, got 3"):
        F.gemv_fp8_sm90(x_q, x_s, w_q, w_s, 1.0, out, split=3)
    big_k = 256 * 2 * (F.MAX_WINDOWS + 1)  # split 2 leaves MAX_WINDOWS + 1 windows a CTA
    with pytest.raises(ValueError, match="windows of 256 K a CTA, more than its shared memory"):
        F.gemv_fp8_sm90(torch.zeros((1, big_k // 2), dtype=torch.uint8),
                        torch.zeros((1, big_k // 16), dtype=torch.uint8),
                        torch.zeros((N, big_k // 2), dtype=torch.uint8),
                        torch.zeros((N, big_k // 16), dtype=torch.uint8), 1.0, out, split=2)
    with pytest.raises(ValueError, match="a multiple of 256, got 384"):
        F.gemv_fp8_sm90(x_q[:, :192], x_s[:, :24], w_q[:, :192], w_s[:, :24], 1.0, out)


def test_the_launcher_runs_four_tokens_in_halves_where_one_wave_needs_them(monkeypatch):
    """The launch arguments (the kernel itself is replaced: no GPU here)."""
    from fp4mm.kernels import fp4_gemv

    launches = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((grid, kwargs))

    monkeypatch.setattr(F, "_fp4_gemv_fp8_sm90_kernel", Recorder())
    monkeypatch.setattr(fp4_gemv, "reduce_partials", lambda *a, **k: None)
    N, K = 18432, 3072
    w_q = torch.zeros((N, K // 2), dtype=torch.uint8)
    w_s = torch.zeros((N, K // 16), dtype=torch.uint8)
    for M, halves in ((1, False), (2, False), (3, True), (4, True)):
        x_q = torch.zeros((M, K // 2), dtype=torch.uint8)
        x_s = torch.zeros((M, K // 16), dtype=torch.uint8)
        launches.clear()
        F.gemv_fp8_sm90(x_q, x_s, w_q, w_s, 1.0, torch.empty((M, N), dtype=torch.float16))
        (grid, kw), = launches
        assert kw["HALVES"] is halves and kw.get("maxnreg") == (96 if halves else None), M
        assert grid == (288, 2 if halves or M == 1 else 3)
    launches.clear()  # a split of 864 CTAs: one wave in neither mode, so no halves
    F.gemv_fp8_sm90(x_q, x_s, w_q, w_s, 1.0, torch.empty((4, N), dtype=torch.float16), split=3)
    assert launches[0][1]["HALVES"] is False and "maxnreg" not in launches[0][1]


def test_ops_send_one_to_four_w4a4_tokens_here(monkeypatch):
    from fp4mm.kernels import fp4_gemv_sm90
    from fp4mm.ops.dispatch import GEMV_FP8_SM90_MAX_M

    ops = importlib.import_module("fp4mm.ops.nvfp4_mm")  # the package re-exports the function
    assert GEMV_FP8_SM90_MAX_M == F.MAX_M == 4
    ran = []
    monkeypatch.setattr(F, "is_hopper", lambda device: True)
    monkeypatch.setattr(fp4_gemv_sm90, "is_hopper", lambda device: True)
    monkeypatch.setattr(F, "gemv_fp8_sm90", lambda *a, **k: ran.append("fp8"))
    monkeypatch.setattr(fp4_gemv_sm90, "gemv_sm90", lambda *a, **k: ran.append("ring"))
    K, N = 3072, 256

    def call(M, k=K, fp4=True):
        x = (torch.zeros((M, k // 2), dtype=torch.uint8) if fp4
             else torch.zeros((M, k), dtype=torch.float16))
        xs = torch.zeros((M, k // 16), dtype=torch.uint8) if fp4 else None
        w = torch.zeros((N, k // 2), dtype=torch.uint8)
        s = torch.zeros((N, k // 16), dtype=torch.uint8)
        ran.clear()
        assert ops.run_gemv_sm90(x, xs, w, s, 1.0, "low_first", torch.empty((M, N)))
        return ran[0]
    assert [call(m) for m in (1, 2, 3, 4)] == ["fp8"] * 4
    assert call(5) == "ring"
    assert call(1, k=K + 128) == "ring"  # K % 256
    assert call(4, k=K + 128) == "ring"
    assert call(1, fp4=False) == "ring"  # 16-bit x
    # an operand off 16-byte alignment: neither Gluon GEMV takes it (the Triton GEMV will)
    buf = torch.zeros(K // 2 + 8, dtype=torch.uint8)
    assert not F.is_supported(torch.device("cuda"), 1, K, buf[8:].view(1, K // 2))
    assert F.is_supported(torch.device("cuda"), 1, K, buf[:K // 2].view(1, K // 2))


def _shipped() -> list[tuple]:
    """(token columns T, windows per CTA, partial, alpha from a device tensor, out dtype,
    halves) of every specialisation the split rule gives at the decode shapes, plus the
    direct-store path with alpha from a device tensor."""
    cases = set()
    for (N, K), M in itertools.product(DECODE_SHAPES, (1, 2, 4)):
        s = F.choose_split(N, K, M)
        cases.add((F.tokens_per_cta(M), K // F.WINDOW // s, s > 1, False, "fp16",
                   F.uses_halves(N, M, s)))
    for T in (1, 2, 4):
        cases.add((T, 12, False, True, "bf16", False))  # split 1: the GEMV applies alpha
    return sorted(cases)


SHIPPED = _shipped()


def compile_report(T, wins, partial, alpha_ptr, out, halves) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    args = ["w_ptr", "ws_ptr", "xw_ptr", "xs_ptr", "out_ptr", "M", "N", "KB", "KW", "alpha",
            "alpha_ptr"]
    types = ["*i32", "*u8", "*i32", "*u8", "*fp32" if partial else f"*{out}", "i32", "i32",
             "i32", "i32", "fp32", "*fp32"]
    consts = dict(WINS=wins, TP=triton.next_power_of_2(8 * wins), T=T, PARTIAL=partial,
                  ALPHA_PTR=alpha_ptr, HALVES=halves)
    if T == 1:
        consts["M"] = 1  # what the launcher's specialisation of an int equal to 1 gives
    sig = {a: "constexpr" if a in consts else t for a, t in zip(args, types)}
    sig |= {k: "constexpr" for k in consts}
    src = GluonASTSource(F._fp4_gemv_fp8_sm90_kernel, sig, constexprs=consts,
                         attrs={(i,): [["tt.divisibility", 16]] for i in (0, 1, 2, 3, 4, 7, 8)})
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                       options={"num_warps": 4, "launch_pdl": True,
                                **({"maxnreg": F.HALVES_MAXNREG} if halves else {})})
    ptx, sass = k.asm["ptx"], k.asm["sass"]
    return {"log": _ptxas.ptxas_log(ptx),
            "wgmma": len(re.findall(r"wgmma\.mma_async\.sync\.aligned\.m64n16k32\.f32\.e4m3\.e4m3 "
                                    r"\{[^}]+\}, \{%r\d+,%r\d+,%r\d+,%r\d+\}", ptx)),
            "waits": re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, (0x\d)", sass),
            "gdc": len(re.findall(r"griddepcontrol\.\w+", ptx)),
            "ld_v4_evict_first": len(re.findall(
                r"ld\.global\.L1::evict_first\.L2::cache_hint\.v4\.b32", ptx))}


@pytest.fixture(scope="module")
def compile_reports():
    return dict(zip(SHIPPED, _ptxas.compile_in_child(__file__)))


@pytest.mark.parametrize("case", SHIPPED, ids=lambda c: "-".join(map(str, c)))
def test_shipped_specialisations_compile_pipelined_without_spills(compile_reports, case):
    rep = compile_reports[case]
    assert "0 bytes spill stores, 0 bytes spill loads" in rep["log"], rep["log"]
    assert "C75" not in rep["log"], rep["log"]  # no wgmma serialisation warnings
    assert rep["wgmma"] == 8  # register-A E4M3 m64n16k32: one window's eight
    halves = case[-1]
    # one wait a window (the eight run back to back), or one a half (four each)
    assert rep["waits"] == ["0x0"] * (2 if halves else 1)
    if halves:  # what makes 5 CTAs an SM: the reason for halves
        assert int(re.search(r"Used (\d+) registers", rep["log"])[1]) <= F.HALVES_MAXNREG
    assert rep["gdc"] == 2  # PDL: wait + launch_dependents
    # 16-byte weight loads, evict-first (the first window and the next)
    assert rep["ld_v4_evict_first"] >= 2


# ----------------------------------------------------------------------------------------------
# GPU
# ----------------------------------------------------------------------------------------------
def _problem(N, K, seed, M=1):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def e4m3(rows, cols):
        return (torch.rand((rows, cols), device="cuda", generator=gen) * 1.5 + 0.5).to(
            torch.float8_e4m3fn).view(torch.uint8)
    bytes_ = lambda r, c: torch.randint(0, 256, (r, c), dtype=torch.uint8, device="cuda",  # noqa: E731
                                        generator=gen)
    return bytes_(M, K // 2), e4m3(M, K // 16), bytes_(N, K // 2), e4m3(N, K // 16)


def _check(out, ref):
    assert not torch.isnan(out).any(), "unwritten (NaN-poisoned) or NaN outputs"
    u = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7, torch.float32: 0.0}[out.dtype]
    tol = ref.abs() * u * 1.01 + ref.abs().amax() * 2.0**-19
    err = (out.float() - ref).abs()
    assert bool((err <= tol).all()), f"max excess {float((err - tol).max())}"


def _splits(K):
    w = K // F.WINDOW
    return [s for s in range(1, w + 1) if w % s == 0][:4]


@gpu
@pytest.mark.parametrize("N,K,split", [(N, K, s) for N, K in ((64, 256), (200, 512), (77, 1280),
                                                              (4099, 3072), (130, 8192))
                                       for s in _splits(K)], ids=str)
@pytest.mark.parametrize("order", ["low_first", "high_first"])
@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_matches_oracle(N, K, split, order, M):
    x, xs, wq, ws = _problem(N, K, seed=N + K + split + 100 * M, M=M)
    ref = reference.nvfp4_mm(x, xs, wq, ws, 0.375, order=order)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        out = torch.full((M, N), float("nan"), dtype=dt, device="cuda")
        F.gemv_fp8_sm90(x, xs, wq, ws, 0.375, out, split=split)
        _check(out, ref)


@gpu
@pytest.mark.parametrize("N,K", [(19195, 512), (19200, 2048)], ids=str)
@pytest.mark.parametrize("M", [3, 4])
def test_halves_match_the_oracle(N, K, M):
    """Four-token CTAs in halves (96 registers): 300 row blocks x split 2 = 600 CTAs, one wave
    of 5 an SM."""
    split = 2
    assert F.uses_halves(N, M, split)
    x, xs, wq, ws = _problem(N, K, seed=N + K + M, M=M)
    ref = reference.nvfp4_mm(x, xs, wq, ws, 0.375)
    for dt in (torch.float32, torch.float16):
        out = torch.full((M, N), float("nan"), dtype=dt, device="cuda")
        F.gemv_fp8_sm90(x, xs, wq, ws, 0.375, out, split=split)
        _check(out, ref)


@gpu
@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("M", [1, 2, 4])
def test_alpha_from_a_device_tensor(split, M):
    x, xs, wq, ws = _problem(300, 768, seed=5, M=M)
    alpha = torch.tensor([0.3], device="cuda")
    out = torch.full((M, 300), float("nan"), dtype=torch.float16, device="cuda")
    F.gemv_fp8_sm90(x, xs, wq, ws, alpha, out, split=split)
    _check(out, reference.nvfp4_mm(x, xs, wq, ws, 0.3))


@gpu
@pytest.mark.parametrize("M", [1, 2, 4])
def test_block_sums_of_the_widest_range_are_exact(M):
    """Each 16-block sums 15 products of 6 x 6 and one of 0.5 x 0.5 (or its negative): 12
    significant bits per block sum, which the FP8 MMA must keep whole. Scales 1 and fp32 out, so
    the only rounding left is the fp32 sum of the block sums."""
    N, K = 128, 1024
    one = int(torch.tensor(1.0).to(torch.float8_e4m3fn).view(torch.uint8))
    xs = torch.full((M, K // 16), one, dtype=torch.uint8, device="cuda")
    ws = torch.full((N, K // 16), one, dtype=torch.uint8, device="cuda")
    x = torch.full((M, K // 2), 0x77, dtype=torch.uint8, device="cuda")  # 6.0 everywhere
    x[:, ::8] = 0x71  # one 0.5 a block
    x[1::2] ^= 0x88  # odd tokens negative
    wq = torch.full((N, K // 2), 0x77, dtype=torch.uint8, device="cuda")
    wq[:, ::8] = 0x71
    wq[1::2] |= 0x88  # odd rows negative
    wq[2::4, 1::8] ^= 0x08  # a sign flip within a block
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    F.gemv_fp8_sm90(x, xs, wq, ws, 1.0, out, split=2)
    ref = reference.nvfp4_mm(x, xs, wq, ws, 1.0)
    assert torch.equal(out, ref)  # the sums are integers times 2^-2: exact in any order


@gpu
@pytest.mark.parametrize("M", [1, 3, 4])
def test_nan_scale_bytes_propagate_to_exactly_their_outputs(M):
    x, xs, wq, ws = _problem(70, 512, seed=9, M=M)
    ws[3, 2] = 0x7F  # weight row 3: that column of every token
    out = torch.empty((M, 70), dtype=torch.float32, device="cuda")
    F.gemv_fp8_sm90(x, xs, wq, ws, 1.0, out, split=2)
    assert torch.isnan(out).nonzero().tolist() == [[m, 3] for m in range(M)]
    xs[M - 1, 5] = 0xFF  # the last token's scale: every output of that token, no other
    F.gemv_fp8_sm90(x, xs, wq, ws, 1.0, out, split=1)
    assert torch.isnan(out[M - 1]).all()
    assert torch.isnan(out[:M - 1]).nonzero().tolist() == [[m, 3] for m in range(M - 1)]


@gpu
@pytest.mark.parametrize("M", [1, 2, 3, 4])
def test_ops_run_it_alone_for_one_to_four_tokens(monkeypatch, M):
    import fp4mm
    from fp4mm.kernels import fp4_gemm, fp4_gemm_sm90, fp4_gemv, fp4_gemv_sm90

    def forbidden(*args, **kwargs):
        raise AssertionError("another kernel ran")
    for mod, name in ((fp4_gemm, "nvfp4_mm_gemm"), (fp4_gemm_sm90, "fp4_gemm_sm90"),
                      (fp4_gemv, "nvfp4_mm_gemv"), (fp4_gemv_sm90, "gemv_sm90")):
        monkeypatch.setattr(mod, name, forbidden)
    for N, K in itertools.product((256, 1000), (3072, 1280)):
        x, xs, wq, ws = _problem(N, K, seed=N * K + M, M=M)
        _check(fp4mm.nvfp4_mm(x, xs, wq, ws, 0.5, out_dtype=torch.float32),
               reference.nvfp4_mm(x, xs, wq, ws, 0.5))
