"""A/B on the GPU: the Gluon GEMM with E4M3 scales stored once (this tree) against the same
kernel with each scale stored twice (the layout before commit fd0132c, loaded from git).

Usage (sm_90, inside the git checkout): ``python scripts/gpu_gemm_scale_dedup.py`` (writes $OUT
or .). Both versions are checked against the fp32 oracle first (output poisoned), then timed
alternately (CUDA graphs, rotating weight copies >= 3x L2), two rounds each, heuristic configs,
fp16 x (the GEMM alone, no x pre-pass).
"""

from __future__ import annotations

import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemm_sm90 as NEW  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402

BEFORE = "7718a41"  # last commit with the doubled scales


def old_module():
    """fp4_gemm_sm90 and prepack_sm90 as of BEFORE, imported as private modules."""
    root = os.path.join(os.path.dirname(__file__), "..")

    def load(name, path, replace=()):
        # a copy beside the script (the device's copy of the tree may have stale git metadata)
        copy = os.path.join(root, "scripts", f"_{BEFORE}_{os.path.basename(path)}")
        if os.path.exists(copy):
            src = open(copy).read()
        else:
            src = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=root, check=True,
                                 capture_output=True, text=True).stdout
        return patched_module(name, src, replace)

    load("old_prepack_sm90", "fp4mm/kernels/prepack_sm90.py")
    return load("old_fp4_gemm_sm90", "fp4mm/kernels/fp4_gemm_sm90.py",
                [("from fp4mm.kernels.prepack_sm90 import", "from old_prepack_sm90 import")])


def main():
    OLD = old_module()
    rows = []
    shapes = [(1, 18432, 3072), (16, 18432, 3072), (32, 18432, 3072), (64, 18432, 3072),
              (64, 8192, 8192), (128, 3072, 3072), (1024, 3072, 3072), (2048, 3072, 3072),
              (2048, 18432, 3072)]
    for M, N, K in shapes:
        copies = 4 if M <= 128 else 2
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.float16, copies=copies)
        packs = {name: [mod.prepack_weight_sm90(wq, ws, p.order) for wq, ws in p.w]
                 for name, mod in (("twice", OLD), ("once", NEW))}
        mods = {"twice": OLD, "once": NEW}
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        ok = {}
        for name, mod in mods.items():
            o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
            mod.gemm_sm90_dense_x(p.x[0], packs[name][0], p.alpha, o)
            torch.cuda.synchronize()
            ok[name] = close(o, p.reference(0))[0]
        ts = {name: [] for name in mods}
        for _ in range(2):
            for name, mod in mods.items():
                if ok[name]:
                    ts[name].append(time_graph(
                        [lambda i=i, m=mod, pk=packs[name]: m.gemm_sm90_dense_x(
                            p.x[0], pk[i], p.alpha, out) for i in range(copies)])[0])
        cfg = NEW.choose_config(M, N, K)
        for name in mods:
            rows.append(dict(M=M, N=N, K=K, scales=name, ok=ok[name], config=str(cfg),
                             median_us=ts[name]))
        print(f"{M:5d}x{N}x{K} {cfg.BN}/{cfg.STAGES}/{cfg.SPLIT}: twice "
              f"{ts['twice']} once {ts['once']} ok {ok}", flush=True)
    save_rows("gemm-scale-dedup", rows)


if __name__ == "__main__":
    main()
