"""Session 35's check that the TMA GEMV compiles to the same SASS when its unused descriptors go
as None (a constexpr) instead of stand-in descriptors (x_desc for the unused extra x boxes,
w_desc for s_desc with group scales): every shipped and padded configuration of
tests/kernels/test_fp4_gemv_tma_sm90.py compiled both ways for sm_90a on the CPU and compared
line by line (control codes and instruction). Fewer parameters move the descriptors that follow
a removed one to a lower offset in parameter space, so the lines allowed to differ are the ones
that add such an offset to the parameter base (``IADD3 Rd, Pn, Rbase, 0x..., RZ``), and only in
that immediate. Usage (TRITON_INTERPRET unset; about 5 minutes):
``python scripts/cpu_tma_gemv_none_descriptors.py``."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

_spec = importlib.util.spec_from_file_location(
    "tma_tests", os.path.join(HERE, "..", "tests", "kernels", "test_fp4_gemv_tma_sm90.py"))
tma_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tma_tests)


def sass(case, *, stand_ins: bool) -> str:
    """The kernel's SASS for one configuration (the compile test's signature), its unused
    descriptors None (as launched now) or stand-ins (as launched before)."""
    sig, consts = tma_tests.kernel_signature(*case)
    if stand_ins:
        sig = {k: (sig["w_desc"] if k == "s_desc" else sig["x_desc"]) if v is None else v
               for k, v in sig.items()}
    partial, warps = case[4], case[5]
    return tma_tests.compile_kernel(sig, consts, warps, partial).asm["sass"]


def instructions(text: str) -> list[str]:
    """The SASS lines (control codes, then the instruction), parameter-bank offsets masked."""
    out = [re.sub(r"c\[0x0\]\[0x[0-9a-f]+\]", "c[0x0][param]", line.strip())
           for line in text.splitlines() if "\t" in line and line.rstrip().endswith(";")]
    assert out, "no SASS instructions found"
    return out


_OFFSET = re.compile(r"IADD3 R\d+, P\d, R\d+(\.reuse)?, 0x[0-9a-f]+, RZ;$")


def differences(before: list[str], after: list[str]) -> tuple[int, list]:
    """``(descriptor offset lines that moved, any other difference)``."""
    if len(before) != len(after):
        return 0, [f"{len(before)} vs {len(after)} instructions"]
    moved, other = 0, []
    for b, a in zip(before, after):
        if b == a:
            continue
        if (_OFFSET.search(b) and _OFFSET.search(a)
                and re.sub(r"0x[0-9a-f]+", "#", b) == re.sub(r"0x[0-9a-f]+", "#", a)):
            moved += 1
        else:
            other.append((b, a))
    return moved, other


def main():
    assert not os.environ.get("TRITON_INTERPRET"), "unset TRITON_INTERPRET"
    cases = tma_tests.SHIPPED + tma_tests.PADDED
    different, moved_total, instructions_total = 0, 0, 0
    for case in cases:
        before = instructions(sass(case, stand_ins=True))
        after = instructions(sass(case, stand_ins=False))
        moved, other = differences(before, after)
        moved_total += moved
        instructions_total += len(after)
        if other:
            different += 1
            print("different:", case, other[:8], flush=True)
    print(f"{len(cases)} configurations ({instructions_total} instructions): "
          f"{len(cases) - different} identical but for {moved_total} descriptor offsets in "
          f"parameter space; {different} with other differences")


if __name__ == "__main__":
    main()
