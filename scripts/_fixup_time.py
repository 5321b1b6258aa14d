import sys, os, torch
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..")); sys.path.insert(0, os.path.dirname(__file__))
import gpu_gluon as w4a4
from fp4mm.bench.harness import graph_timer
from fp4mm.kernels import fp4_gemm_sm90 as g
from fp4mm.kernels.dequant_nvfp4 import dequant_nvfp4
for M, N, K in [(1024, 18432, 3072), (2048, 3072, 3072)]:
    xq, xs, wq, ws = w4a4.gen(M, N, K, seed=1)
    packs = [g.prepack_weight_sm90(wq.clone(), ws.clone(), "high_first") for _ in range(3)]
    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
    i = [0]
    def nxt(l):
        i[0] += 1; return l[i[0] % len(l)]
    a = graph_timer(lambda: g.fp4_gemm_sm90(xq, xs, None, None, 1 / 64, "high_first", out, prepacked=nxt(packs)), False)[0]
    b = graph_timer(lambda: g.gemm_sm90_dense_x(dequant_nvfp4(xq, xs, order="high_first", pdl=True), nxt(packs), 1 / 64, out), False)[0]
    print(M, N, K, g.choose_config(M, N, K), f"call (pair summed in the GEMM) {a*1e3:.1f} us, with the reduce launch {b*1e3:.1f} us", flush=True)
