"""ptxas on a kernel's PTX for sm_90a (the ptxas Triton bundles, the one the GPU runs use): its
verbose report (registers, spill bytes, warnings) for the compile-only tests."""

import os
import subprocess
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
