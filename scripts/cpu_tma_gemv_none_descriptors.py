"""Session 35's check that the TMA GEMV compiles to the same SASS when its unused descriptors go
as None (a constexpr) instead of stand-in descriptors (x_desc for the unused extra x boxes,
w_desc for s_desc with group scales): every shipped and padded configuration of
tests/kernels/test_fp4_gemv_tma_sm90.py compiled both ways for sm_90a on the CPU, the SASS
compared instruction by instruction with parameter-bank offsets masked (fewer parameters shift
them). Usage (TRITON_INTERPRET unset; about 5 minutes):
``python scripts/cpu_tma_gemv_none_descriptors.py``."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon._runtime import GluonASTSource  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "tma_tests", os.path.join(HERE, "..", "tests", "kernels", "test_fp4_gemv_tma_sm90.py"))
tma_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tma_tests)
T = tma_tests.T


def sass(x, nt, rt, stages, partial, warps, high, out, alpha_ptr=False, group=0, x_boxes=None,
         pad=(0, 0, 0), *, stand_ins: bool) -> str:
    """The kernel's SASS for one configuration (the compile test's signature), its unused
    descriptors as stand-ins (the launcher before) or None (after)."""
    bn = 16 * rt * warps
    xm, x_rows = x_boxes or (nt, 0)
    xd = f"tensordesc<{x}[{xm}, 4, 64],{T._X_SWIZZLED!r}>"
    wd = f"tensordesc<u8[{bn}, 128],{T._W_SWIZZLED!r}>"
    unused_x = xd if stand_ins else None
    xhqe = [f"tensordesc<{x}[{rows}, 4, 64],{T._X_SWIZZLED!r}>" if rows else unused_x
            for rows in T.x_extra_boxes(xm, x_rows)]
    s_desc = (wd if stand_ins else None) if group else f"tensordesc<u8[{bn}, 16],{T._PLAIN8!r}>"
    dtype = gl.bfloat16 if x == "bf16" else gl.float16
    word = {32: "i64", 64: "i32"}.get(group, "i16")
    sig = {"w_desc": wd, "s_desc": s_desc, "x_desc": xd, "xh_desc": xhqe[0],
           "xq_desc": xhqe[1], "xe_desc": xhqe[2], "ws_ptr": f"*{word}" if group else "*u8",
           "out_ptr": "*fp32" if partial else f"*{out}", "M": "i32", "N": "i32", "CHUNKS": "i32",
           "CHUNKS_SPLIT": "i32", "alpha": "fp32", "alpha_ptr": "*fp32", "stride_om": "i32",
           "stride_wsn": "i32"}
    consts = dict(DTYPE=dtype, NT=nt, HIGH_FIRST=high, PARTIAL=partial, ROW_TILES=rt,
                  STAGES=stages, PDL=partial, ALPHA_PTR=alpha_ptr, W_GROUP=group, SDTYPE=dtype,
                  X_ROWS=x_rows, PAD_A=pad[0], PAD_B=pad[1], PAD_C=pad[2])
    consts |= {k: None for k, v in sig.items() if v is None}
    sig |= {k: "constexpr" for k in consts}
    aligned = [["tt.divisibility", 16]]
    src = GluonASTSource(T._fp4_gemv_tma_sm90_kernel, sig, constexprs=consts,
                         attrs={(6,): aligned, (7,): aligned, (13,): aligned, (14,): aligned})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "launch_pdl": partial}).asm["sass"]


def instructions(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m:
            out.append(re.sub(r"c\[0x0\]\[0x[0-9a-f]+\]", "c[0x0][param]", m.group(1)))
    return out


def main():
    assert not os.environ.get("TRITON_INTERPRET"), "unset TRITON_INTERPRET"
    cases = tma_tests.SHIPPED + tma_tests.PADDED
    different = 0
    for case in cases:
        before = instructions(sass(*case, stand_ins=True))
        after = instructions(sass(*case, stand_ins=False))
        if before != after:
            different += 1
            lines = [d for d in difflib.unified_diff(before, after, lineterm="", n=0)
                     if d[:1] in "+-" and d[:3] not in ("+++", "---")]
            print("different:", case, lines[:12], flush=True)
    print(f"{len(cases)} configurations, {len(cases) - different} with identical SASS")


if __name__ == "__main__":
    main()
