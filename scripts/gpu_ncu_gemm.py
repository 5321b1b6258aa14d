"""Drive the W4A4 Gluon GEMM for Nsight Compute, prepacked weights, fp16 out, one shape per
argument ``MxNxK`` (default: the challenge case and 1024x3072x3072), three calls each;
``cublas:MxNxK`` runs torch's bf16 matmul at that shape instead (kernel regex ``nvjet|gemm``:
cuBLAS on sm_90 runs ``nvjet_*`` kernels). Ours:
``ncu --clock-control none -k regex:fp4_gemm_sm90 --launch-skip 1 --launch-count 1
--section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats
--metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
python scripts/gpu_ncu_gemm.py 1024x3072x3072``."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402

torch.manual_seed(0)
for shape in sys.argv[1:] or ["2048x18432x3072", "1024x3072x3072"]:
    cublas = shape.startswith("cublas:")
    M, N, K = (int(v) for v in shape.removeprefix("cublas:").split("x"))
    if cublas:
        a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            torch.matmul(a, b.T)
        continue
    w = fp4mm.quantize_nvfp4(torch.randn(N, K, device="cuda"))
    x = fp4mm.quantize_nvfp4(torch.randn(M, K, device="cuda"))
    pk = fp4mm.prepack_nvfp4_weight(w.data, w.scales)
    for _ in range(3):
        fp4mm.nvfp4_mm(x.data, x.scales, pk, None, 1 / 64)
torch.cuda.synchronize()
