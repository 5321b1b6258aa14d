"""ptxas on a kernel's PTX for sm_90a (the ptxas Triton bundles, the one the GPU runs use): its
verbose report (registers, spill bytes, warnings) for the compile-only tests."""

import json
import os
import subprocess
import sys
import tempfile


def ptxas_log(ptx: str) -> str:
    import triton

    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([triton.knobs.nvidia.ptxas.path, "-v", "--gpu-name=sm_90a", src,
                            "-o", os.path.join(d, "k.o")], capture_output=True, text=True,
                           check=True)
    return r.stdout + r.stderr


def compile_in_child(test_file: str) -> list:
    """``compile_report(*case)`` for every case of ``SHIPPED`` in the test module ``test_file``,
    run in a clean child process: TRITON_INTERPRET, set for the CPU session, leaves triton's
    language patched, which breaks Gluon compilation in this process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    name = os.path.splitext(os.path.basename(test_file))[0]
    code = (f"import json, sys; sys.path.insert(0, sys.argv[1]); import {name} as t; "
            "print(json.dumps([t.compile_report(*c) for c in t.SHIPPED]))")
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(test_file))],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
