"""Drive the decode kernels for Nsight Compute (one op per argument, a few launches each):
``ncu --clock-control none -k regex:gemv ... python scripts/gpu_ncu_gemv.py nvfp4_w4a16 w4a4``
(also ``nvfp4_w4a16_bf16``, ``w4a16_g32``: groups of 32, fp16 x).
Shapes: M = 1 (or ``NCU_M`` tokens), N = 18432, K = 3072, the heuristic config (split-K reduce
kernels run too)."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402

N, K = 18432, 3072
torch.manual_seed(0)
w = fp4mm.quantize_nvfp4(torch.randn(N, K, device="cuda"))
g = fp4mm.quantize_fp4_groupwise(torch.randn(N, K, device="cuda"), 32)
x = torch.randn(int(os.environ.get("NCU_M", "1")), K, device="cuda")
for op in sys.argv[1:]:
    for _ in range(3):
        if op == "w4a4":
            qx = fp4mm.quantize_nvfp4(x)
            fp4mm.nvfp4_mm(qx.data, qx.scales, w.data, w.scales, 1.0)
        elif op == "nvfp4_w4a16":
            fp4mm.nvfp4_w4a16_mm(x.half(), w.data, w.scales, w.global_scale)
        elif op == "nvfp4_w4a16_bf16":
            fp4mm.nvfp4_w4a16_mm(x.bfloat16(), w.data, w.scales, w.global_scale)
        elif op == "w4a16_g32":
            fp4mm.w4a16_mm(x.half(), g.data, g.scales, 32)
torch.cuda.synchronize()
