"""Drive the group-scale Gluon GEMM for Nsight Compute (the revision-1 case, prepacked, fp16):
``ncu --clock-control none -k regex:grouped_or_sm90 --launch-skip 1 --launch-count 1
--section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis
python scripts/gpu_ncu_grouped.py``. Argument ``nvfp4`` runs the NVFP4 W4A16 GEMM at the same
shape instead (the same ring and MMAs without group scaling), for comparison."""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fp4mm  # noqa: E402

M, N, K, G = 2048, 8192, 3072, 32
torch.manual_seed(0)
x = (0.5 * torch.randn(M, K, device="cuda")).half()
if sys.argv[1:] == ["nvfp4"]:
    w = fp4mm.quantize_nvfp4(torch.randn(N, K, device="cuda"))
    pk = fp4mm.prepack_nvfp4_weight(w.data, w.scales)
    for _ in range(3):
        fp4mm.nvfp4_w4a16_mm(x, pk, None, w.global_scale)
else:
    g = fp4mm.quantize_fp4_groupwise(torch.randn(N, K, device="cuda"), G)
    pk = fp4mm.prepack_w4a16_weight(g.data, g.scales.half(), G)
    for _ in range(3):
        fp4mm.w4a16_mm(x, pk, None, G)
torch.cuda.synchronize()
