"""The order of a plain-Triton kernel's PDL instructions and global stores in its sm_90 PTX, for
the compile-only tests of the late trigger (``fp4mm.kernels.pdl``)."""

import json
import os
import subprocess
import sys

_CHILD = """
import json, re, sys, importlib, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
module, kernel, sig, consts = json.loads(sys.argv[1])
fn = getattr(importlib.import_module(module), kernel)
got = {}
for late in (False, True):
    ptx = triton.compile(ASTSource(fn, sig, constexprs={**consts, "PDL": True, "PDL_LATE": late}),
                         target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]
    got[str(late)] = [m.group(0) for m in re.finditer(r"griddepcontrol\\.\\w+|st\\.global", ptx)]
print(json.dumps(got))
"""


def pdl_order(module: str, kernel: str, sig: dict, consts: dict) -> tuple[list, list]:
    """``(early, late)``: the sequence of ``griddepcontrol.*`` and ``st.global`` instructions
    in ``module.kernel``'s PTX for sm_90a with PDL and PDL_LATE False / True (the other
    constexprs ``consts``), compiled in a clean child process (the CPU session's
    TRITON_INTERPRET breaks compilation)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([module, kernel, sig, consts])],
                       capture_output=True, text=True, env=env, timeout=600, check=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["False"], got["True"]


def assert_late_trigger_follows_the_stores(early: list, late: list) -> None:
    """Early: wait, then launch, before any store. Late: wait first, launch last, once; the
    same stores."""
    wait, launch = "griddepcontrol.wait", "griddepcontrol.launch_dependents"
    assert early[:2] == [wait, launch] and early.count(launch) == 1 and "st.global" in early
    assert late[0] == wait and late[-1] == launch and late.count(launch) == 1
    assert late.count("st.global") == early.count("st.global")
