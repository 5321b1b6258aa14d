# ruff: noqa: B023  (the closures are used inside their loop iteration)
"""Evict-first weight words by asm for the group-scale forms whose words are not 16-byte runs
(session 26): the columns per half step (8-byte runs, ``v2``) and the chains (4-byte words),
which use Triton's ``evict_first`` (an L1 hint plus an L2 policy), against a patched copy of
``fp4_gemv_sm90`` that loads them with ``ld.global.L1::evict_first`` by asm, as the NVFP4 and
per-step column forms do (there it was 1-3% faster than Triton's hint, session 25).

Every variant is checked bit-identical to the shipped kernel and against the oracle first;
then 3 rotating rounds (CUDA-graph medians over 4 weight copies, the shipped configs).
Usage on an sm_90 machine: ``python scripts/gpu_gemv_group_evict_asm.py`` (JSON to $OUT).
"""

from __future__ import annotations

import inspect
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fp4mm.kernels import fp4_gemv_sm90 as S  # noqa: E402
from scripts.gpu_decode import Problem, close, patched_module, rounds, time_graph  # noqa: E402,E501

RUN_WORDS = '''@gluon.constexpr_function
def _run_words(words_layout):
    """A thread's contiguous int32 words: 4, 2 or 1."""
    bases = [list(b) for b in words_layout.reg_bases]
    if bases[:2] == [[0, 1], [0, 2]]:
        return 4
    return 2 if bases[:1] == [[0, 1]] else 1


@gluon.jit
def _load_w('''
ASM_LOADS = '''    elif RUNS16 == 4:
        # pack=4: the asm gets a thread's 4 contiguous words (their pointers; the first
        # addresses all four)
        wd = gl.inline_asm_elementwise(
            "ld.global.L1::evict_first.v4.u32 {$0, $1, $2, $3}, [$4]; // $5 $6 $7",
            "=r,=r,=r,=r,l,l,l,l", [w_ptr + w_offs + i * (KSTEP // 8)], dtype=gl.int32,
            is_pure=True, pack=4)
        sc = _load_scales(ws_ptr + s_offs + s_step, live, False, W_GROUP, COLS_K)
    elif RUNS16 == 2:
        wd = gl.inline_asm_elementwise(
            "ld.global.L1::evict_first.v2.u32 {$0, $1}, [$2]; // $3",
            "=r,=r,l,l", [w_ptr + w_offs + i * (KSTEP // 8)], dtype=gl.int32,
            is_pure=True, pack=2)
        sc = _load_scales(ws_ptr + s_offs + s_step, live, False, W_GROUP, COLS_K)
    elif RUNS16 == 1:
        wd = gl.inline_asm_elementwise(
            "ld.global.L1::evict_first.u32 $0, [$1];",
            "=r,l", [w_ptr + w_offs + i * (KSTEP // 8)], dtype=gl.int32,
            is_pure=True, pack=1)
        sc = _load_scales(ws_ptr + s_offs + s_step, live, False, W_GROUP, COLS_K)
'''


def variant():
    src = inspect.getsource(S)
    start = src.index("    elif RUNS16:\n")
    end = src.index("    else:\n", start)
    return patched_module("fp4_gemv_sm90_evict_asm", src, [
        ("@gluon.jit\ndef _load_w(", RUN_WORDS),
        (src[start:end], ASM_LOADS),
        ("    W_RUNS16: gl.constexpr = _in_16_byte_runs(W_WORDS)",
         "    W_RUNS16: gl.constexpr = _run_words(W_WORDS)"),
    ])


def main():
    V = variant()
    rows = []
    cases = [(32, torch.float16, 4), (32, torch.float16, 3), (64, torch.float16, 8),
             (32, torch.float16, 16), (32, torch.bfloat16, 4), (32, torch.float16, 1)]
    for group, dt, M in cases:
        N, K = 18432, 3072
        p = Problem("w4a16_mm", M, N, K, group=group, dtype=dt, copies=4)
        out = torch.empty((M, N), dtype=dt, device="cuda")
        cfg = S.choose_config(M, N, K, False, group, bf16_x=dt == torch.bfloat16)
        fns = {name: (lambda i, o, m=m: m.gemv_sm90(p.x[0], None, *p.w[i], 1.0, "low_first", o,
                                                    config=cfg, group_size=group))
               for name, m in (("triton hint", S), ("asm L1", V))}
        outs = {}
        for k, f in fns.items():
            o = torch.full_like(out, float("nan"))
            f(0, o)
            outs[k] = o
            if not close(o, p.reference(0))[0]:
                raise SystemExit(f"FAIL {k} g{group} M={M}")
        assert torch.equal(outs["triton hint"], outs["asm L1"])
        got = rounds({k: (lambda f=f: time_graph([lambda i=i: f(i, out) for i in range(4)])[0])
                      for k, f in fns.items()})
        med = {k: sorted(v)[1] for k, v in got.items()}
        for k, v in got.items():
            rows.append(dict(op="w4a16_mm", x=str(dt), group=group, M=M, N=N, K=K, config=str(cfg),
                             impl=k, median_us=med[k], rounds_us=v))
        print(f"g{group} {str(dt):14s} M={M:2d} {cfg.group_cols or 'chains'}: "
              + "  ".join(f"{k} {t:.2f}" for k, t in med.items()), flush=True)
        with open(os.path.join(os.environ.get("OUT", "."), "gemv-group-evict-asm.json"), "w") as fh:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                           rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
