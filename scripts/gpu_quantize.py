"""GPU batch for the NVFP4 activation quantiser; one call of the device tool.

    python scripts/gpu_quantize.py --out DIR

1. Bit-exactness: the 16-bit quantiser tests on CUDA (adversarial threshold blocks for the PTX
   path, the threshold table, bf16) and, at 8192 x 8192, every path against the codec on the CPU
   (first 512 rows, static and dynamic), plus the codec on CUDA against the codec on the CPU.
2. Effective bandwidth at 8192 x 8192 bf16 and fp16 (bytes: 16-bit in + packed data + scales
   out) of the paths and tiles, with a torch copy of the input in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # fp4mm from this checkout
TESTS_K = "16bit or table or paths or amax or bf16_on_cuda or threshold or odd_row"


def _equal(a, b) -> bool:
    return all(torch_equal(u, v) for u, v in zip(a, b))


def torch_equal(u, v) -> bool:
    import torch

    return torch.equal(u.cpu(), v.cpu())


def exactness(res: dict) -> None:
    import torch

    from fp4mm.formats import nvfp4_global_scale, quantize_nvfp4
    from fp4mm.kernels.quantize_nvfp4 import quantize_nvfp4_triton

    out = {}
    for dtype in (torch.bfloat16, torch.float16):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(8192, 8192, generator=g) * torch.logspace(-6, 2, 8192)
        x = x.to(dtype).cuda()
        sub = x[:512].cpu()
        gs_cpu = nvfp4_global_scale(x.cpu())
        for order in ("low_first", "high_first"):
            want = quantize_nvfp4(sub, gs_cpu, order)
            for path in ("ptx", "int16", "f32"):
                for label, gs in (("static", gs_cpu.cuda()), ("dynamic", None)):
                    q = quantize_nvfp4_triton(x, gs, order, path=path)
                    out[f"{dtype}-{order}-{path}-{label}"] = (
                        torch_equal(q.data[:512], want.data)
                        and torch_equal(q.scales[:512], want.scales)
                        and torch_equal(q.global_scale, gs_cpu))
        cuda_q, cpu_q = quantize_nvfp4(x[:512]), quantize_nvfp4(sub)
        out[f"{dtype}-codec_cuda_vs_cpu"] = _equal(cuda_q, cpu_q)
    res["bit_exact_8192_first512_rows"] = out
    res["bit_exact_all"] = all(out.values())
    print("bit-exact:", res["bit_exact_all"], [k for k, v in out.items() if not v], flush=True)


def bandwidth(res: dict) -> None:
    import torch
    import triton

    from fp4mm.kernels.quantize_nvfp4 import (
        QuantizeConfig,
        nvfp4_amax_triton,
        pick_config,
        quantize_nvfp4_triton,
    )

    M = K = 8192
    moved = M * K * 2 + M * K // 2 + M * K // 16
    variants = {
        "ptx_default": ("ptx", None),
        "ptx_16x256w4": ("ptx", QuantizeConfig(16, 256, 4)),
        "ptx_8x512w4": ("ptx", QuantizeConfig(8, 512, 4)),
        "ptx_8x256w4_t2048": ("ptx", QuantizeConfig(8, 256, 4, target_programs=2048)),
        "ptx_8x256w4_t8192": ("ptx", QuantizeConfig(8, 256, 4, target_programs=8192)),
        "ptx_4x256w2": ("ptx", QuantizeConfig(4, 256, 2)),
        "ptx_16x256w8": ("ptx", QuantizeConfig(16, 256, 8)),
        "int16_default": ("int16", None),
        "f32_default (previous kernel)": ("f32", None),
    }
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(M, K, device="cuda", dtype=dtype)
        x[:, ::97] *= 40.0
        gs = (2688.0 / x.abs().amax().float()).reshape(())
        rows = {}
        ms = triton.testing.do_bench(lambda x=x: x.clone(), warmup=25, rep=100)
        rows["torch_clone"] = {"ms": ms, "TBps": 2 * M * K * 2 / ms / 1e9}
        names = variants if dtype == torch.bfloat16 else {
            k: v for k, v in variants.items() if k in ("ptx_default", "ptx_16x256w4",
                                                       "int16_default",
                                                       "f32_default (previous kernel)")}
        for name, (path, cfg) in names.items():
            ms = triton.testing.do_bench(
                lambda p=path, c=cfg, x=x, gs=gs: quantize_nvfp4_triton(x, gs, path=p, config=c),
                warmup=25, rep=100)
            rows[f"static_{name}"] = {"config": repr(cfg or pick_config(M, K)), "ms": ms,
                                      "effective_TBps": moved / ms / 1e9}
        for path in ("ptx", "f32"):
            ms = triton.testing.do_bench(lambda p=path, x=x: quantize_nvfp4_triton(x, path=p),
                                         warmup=25, rep=100)
            rows[f"dynamic_{path}_default"] = {"ms": ms, "effective_TBps": moved / ms / 1e9}
            ms = triton.testing.do_bench(lambda p=path, x=x: nvfp4_amax_triton(x, path=p),
                                         warmup=25, rep=100)
            rows[f"amax_only_{path}"] = {"ms": ms, "read_TBps": 2 * M * K / ms / 1e9}
        copy = rows["torch_clone"]["TBps"]
        for k, v in rows.items():
            tb = v.get("effective_TBps", v.get("read_TBps", v.get("TBps")))
            v["vs_copy"] = tb / copy
            print(f"{str(dtype):15s} {k:40s} {v['ms'] * 1e3:8.1f} us {tb:6.3f} TB/s "
                  f"{tb / copy:5.2f}x copy", flush=True)
        res[f"rows_8192x8192_{str(dtype).removeprefix('torch.')}"] = rows
    for shape in ((2048, 3072), (16, 3072)):
        xs = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        g = (2688.0 / xs.abs().amax().float()).reshape(())
        res[f"us_{shape[0]}x{shape[1]}_bf16"] = {
            f"{mode}_{path}": 1e3 * triton.testing.do_bench(
                lambda gg=gg, p=path, xs=xs: quantize_nvfp4_triton(xs, gg, path=p),
                warmup=25, rep=50)
            for mode, gg in (("static", g), ("dynamic", None)) for path in ("ptx", "f32")}
        print(shape, res[f"us_{shape[0]}x{shape[1]}_bf16"], flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    p.add_argument("--skip-tests", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import triton

    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": triton.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "moved_bytes_8192x8192": 8192 * 8192 * (2 + 0.5 + 0.0625)}
    t0 = time.time()
    if not args.skip_tests:
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            "tests/kernels/test_quantize_nvfp4.py", "-k", TESTS_K], cwd=ROOT,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        res["pytest_rc"] = r.returncode
        res["pytest_tail"] = (r.stdout + r.stderr)[-1500:]
        print(res["pytest_tail"][-600:], f"[{time.time() - t0:.0f} s]", flush=True)
    for step in (exactness, bandwidth):
        try:
            step(res)
        except Exception as e:  # report and go on
            res.setdefault("errors", []).append(f"{type(e).__name__}: {e}"[:800])
            print("ERROR", e, flush=True)
        print(f"[{time.time() - t0:.0f} s]", flush=True)
        (out / "quantize_nvfp4_gpu.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
