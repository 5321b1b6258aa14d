"""A/B on the GPU: the Gluon GEMM of this tree against ``fp4_gemm_sm90`` (and its prepack) as of
an earlier commit, in the same process, GEMM alone on fp16 x (no x pre-pass, split-K partials
summed by the reduce kernel).

Usage (sm_90): ``python scripts/gpu_gemm_ab.py --before COMMIT [--case M,N,K[,BN,STAGES,SPLIT]]
...`` (writes $OUT or .). Without ``--case``: nine shapes from 1x18432 to 2048x18432 at their
heuristic configs. Both versions are checked against the fp32 oracle first (output poisoned),
then timed alternately (CUDA graphs, rotating weight copies >= 3x L2), two rounds each.
The old sources come from ``scripts/_<COMMIT>_<file>.py`` when present (the device's copy of
the tree may have stale git metadata), else from ``git show``.

Session 14 used it for the scales stored once (``--before 7718a41``) and the reduce kernel.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemm_sm90 as NEW  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, save_rows, time_graph  # noqa: E402

SHAPES = [(1, 18432, 3072), (16, 18432, 3072), (32, 18432, 3072), (64, 18432, 3072),
          (64, 8192, 8192), (128, 3072, 3072), (1024, 3072, 3072), (2048, 3072, 3072),
          (2048, 18432, 3072)]


def old_module(before):
    """fp4_gemm_sm90 and prepack_sm90 as of ``before``, imported as private modules."""
    root = os.path.join(os.path.dirname(__file__), "..")

    def load(name, path, replace=()):
        copy = os.path.join(root, "scripts", f"_{before}_{os.path.basename(path)}")
        if os.path.exists(copy):
            src = open(copy).read()
        else:
            src = subprocess.run(["git", "show", f"{before}:{path}"], cwd=root, check=True,
                                 capture_output=True, text=True).stdout
        return patched_module(f"{name}_{before}", src, replace)

    load("old_prepack_sm90", "fp4mm/kernels/prepack_sm90.py")
    return load("old_fp4_gemm_sm90", "fp4mm/kernels/fp4_gemm_sm90.py",
                [("from fp4mm.kernels.prepack_sm90 import",
                  f"from old_prepack_sm90_{before} import")])


def parse_case(text):
    v = [int(t) for t in text.split(",")]
    if len(v) not in (3, 6):
        raise argparse.ArgumentTypeError(f"--case: expected M,N,K[,BN,STAGES,SPLIT], got {text}")
    return tuple(v[:3]), (tuple(v[3:]) if len(v) == 6 else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--case", type=parse_case, action="append")
    args = ap.parse_args()
    OLD = old_module(args.before)
    mods = {"before": OLD, "now": NEW}
    rows = []
    for (M, N, K), cfg_t in args.case or [(s, None) for s in SHAPES]:
        copies = 4 if M <= 128 else 2
        p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=torch.float16, copies=copies)
        packs = {name: [mod.prepack_weight_sm90(wq, ws, p.order) for wq, ws in p.w]
                 for name, mod in mods.items()}
        cfgs = {name: (mod.SM90Config(BN=cfg_t[0], STAGES=cfg_t[1], SPLIT=cfg_t[2]) if cfg_t
                       else mod.choose_config(M, N, K)) for name, mod in mods.items()}
        out = torch.empty((M, N), dtype=torch.float16, device="cuda")
        ok = {}
        for name, mod in mods.items():
            # fp32 output where the config's epilogue tile fits, else the timed fp16
            od = (torch.float32 if mod.config_is_valid(cfgs[name], torch.float32)
                  else torch.float16)
            o = torch.full((M, N), float("nan"), dtype=od, device="cuda")
            mod.gemm_sm90_dense_x(p.x[0], packs[name][0], p.alpha, o, config=cfgs[name])
            torch.cuda.synchronize()
            ok[name] = close(o, p.reference(0))[0]
        ts = {name: [] for name in mods}
        for _ in range(2):
            for name, mod in mods.items():
                if ok[name]:
                    ts[name].append(time_graph(
                        [lambda i=i, m=mod, pk=packs[name], c=cfgs[name]: m.gemm_sm90_dense_x(
                            p.x[0], pk[i], p.alpha, out, config=c) for i in range(copies)])[0])
        for name in mods:
            rows.append(dict(M=M, N=N, K=K, version=name,
                             commit=args.before if name == "before" else "tree", ok=ok[name],
                             config=str(cfgs[name]), median_us=ts[name]))
        c = cfgs["now"]
        print(f"{M:5d}x{N}x{K} {c.BN}/{c.STAGES}/{c.SPLIT}: before "
              + " ".join(f"{t:7.2f}" for t in ts["before"]) + " | now "
              + " ".join(f"{t:7.2f}" for t in ts["now"]) + f" | ok {ok}", flush=True)
    save_rows(f"gemm-ab-{args.before}", rows)


if __name__ == "__main__":
    main()
