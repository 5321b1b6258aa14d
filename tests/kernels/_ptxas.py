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


def compile_in_child(test_file: str, report: str = "compile_report",
                     configs: str = "SHIPPED") -> list:
    """``report(*case)`` for every case of the list ``configs`` in the test module
    ``test_file``, in order, computed in clean child processes: TRITON_INTERPRET, set for the CPU
    session, leaves triton's language patched, which breaks Gluon compilation in this process.
    The cases are dealt round-robin to one child per CPU (at most 4): compiling is CPU-bound,
    and CI has two cores."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    name = os.path.splitext(os.path.basename(test_file))[0]
    workers = max(1, min(4, os.cpu_count() or 1))
    code = (f"import json, sys; sys.path.insert(0, sys.argv[1]); import {name} as t; "
            f"w, r = int(sys.argv[2]), int(sys.argv[3]); "
            f"print(json.dumps([t.{report}(*c) for i, c in enumerate(t.{configs}) "
            f"if i % w == r]))")
    folder = os.path.dirname(os.path.abspath(test_file))
    children = [subprocess.Popen([sys.executable, "-c", code, folder, str(workers), str(r)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env) for r in range(workers)]
    parts = []
    for child in children:
        out, err = child.communicate(timeout=900)
        assert child.returncode == 0, err[-4000:]
        parts.append(json.loads(out.strip().splitlines()[-1]))
    total = sum(len(p) for p in parts)
    return [parts[i % workers][i // workers] for i in range(total)]
