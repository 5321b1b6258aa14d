"""Probe (H100): which groupwise fp4_gemm tile configs are right on the GPU. The launcher's
checks are bypassed so that multi-chunk tiles can be tried too. Prints one line per config."""
import itertools
import json
import os
import sys

import torch
import triton

from fp4mm import reference
from fp4mm.kernels import fp4_gemm as G


def run(M, N, K, group, cfg):
    g = torch.Generator().manual_seed(group * 1000 + K)
    x = (0.5 * torch.randn(M, K, generator=g)).half().cuda()
    wq = torch.randint(0, 256, (N, K // 2), dtype=torch.uint8, generator=g).cuda()
    sc = (0.1 * torch.rand(N, K // group, generator=g) + 0.01).half().cuda()
    ref = reference.w4a16_mm(x, wq, sc, group, order="low_first")
    out = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
    path = G._scale_path(False, group)
    sub = G._sub_k(path, group, cfg.block_k)
    grid = (triton.cdiv(N, cfg.block_n) * triton.cdiv(M, cfg.block_m),)
    G._fp4_gemm_kernel[grid](
        x, wq, sc, out, M, N, K, 1.0, x.stride(0), wq.stride(0), sc.stride(0), out.stride(0),
        SCALE_PATH=path, GROUP=group, SUB=sub, SPLIT_M=G._split_m(path, cfg.block_m),
        HIGH_FIRST=False, EVEN_K=K % cfg.block_k == 0, SCALE_WORDS=False, W_PERM=False,
        BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, GROUP_N=cfg.group_n,
        NUM_STAGES=cfg.num_stages, num_warps=cfg.num_warps)
    torch.cuda.synchronize()
    err = (out - ref).abs().max().item()
    return err, ref.abs().max().item()


rows = []
for group, bk, bn, bm, nw, st in itertools.product(
        (16, 32), (16, 32, 64), (16, 32, 64, 128), (16, 64), (4, 8), (1, 2, 4)):
    if bk < 16 or (bn == 16 and nw == 8):
        continue
    cfg = G.GemmConfig(block_n=bn, block_m=bm, block_k=bk, num_stages=st, num_warps=nw)
    M, N, K = 70, 200, 256
    try:
        err, mx = run(M, N, K, group, cfg)
        ok = err <= mx * 2**-18 + 1e-6
        line = dict(group=group, block_k=bk, block_n=bn, block_m=bm, warps=nw, stages=st,
                    sub=G._sub_k(1, group, bk), err=err, ok=ok)
    except Exception as e:  # noqa: BLE001
        line = dict(group=group, block_k=bk, block_n=bn, block_m=bm, warps=nw, stages=st,
                    error=f"{type(e).__name__}: {str(e)[:100]}")
    rows.append(line)
    print(line, flush=True)
# The shipped heuristic at several M
for group in (16, 32, 48, 64, 128):
    for M in (7, 16, 64, 128, 300):
        cfg = G.choose_config(M, 200, 768, group)
        err, mx = run(M, 200, 768, group, cfg)
        line = dict(shipped=True, group=group, M=M, cfg=str(cfg), err=err,
                    ok=err <= mx * 2**-18 + 1e-6)
        rows.append(line)
        print(line, flush=True)
out = os.environ.get("OUT", ".")
json.dump(dict(device=torch.cuda.get_device_name(), triton=triton.__version__, rows=rows),
          open(os.path.join(out, "group16_probe.json"), "w"), indent=1)
print("bad:", sum(1 for r in rows if not r.get("ok")), file=sys.stderr)
