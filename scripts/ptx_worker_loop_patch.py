"""Probe-only: make ptxas pipeline the wgmmas of session 12's 12-warp WG = 3 kernel.

Triton 3.6 lowers a warp_specialize worker partition as a loop (workers wait at 24 registers
for the next region, run it, loop back). In that kernel, with a wgmma inside the loop, ptxas
12.8/13.0 report C7512 and serialise every wgmma of the function (other kernels with a wgmma in
a worker partition compile pipelined as emitted: docs/perf-log.md, session 19). A kernel
that calls warp_specialize once never needs the loop-back: after the region's closing barrier
the worker can join the exit barrier and return. This rewrites that edge in the PTX before
ptxas runs."""
import re

from triton import knobs

_TAIL = re.compile(r"(\tbarrier\.sync \t1;\n\tsetmaxnreg\.dec\.sync\.aligned\.u32 \t24;\n)"
                   r"(\$L__BB0_\d+:[^\n]*\n(?:[^\n]*//[^\n]*\n)*"
                   r"\tsetmaxnreg\.dec\.sync\.aligned\.u32 \t24;\n\tbarrier\.sync \t1;)")
_RET = re.compile(r"\$L__BB0_(\d+):\s*// %common\.ret")
PATCHED = []


def patch(ptx: str) -> str:
    m, r = _TAIL.search(ptx), _RET.search(ptx)
    if not (m and r):
        return ptx
    PATCHED.append(1)
    return (ptx[:m.end(1)] + f"\tbarrier.sync \t1;\n\tbra.uni \t$L__BB0_{r.group(1)};\n"
            + ptx[m.end(1):])


def install():
    def hook(backend, stages, options, language, capability):
        orig = stages["cubin"]

        def cubin(src, metadata):
            if metadata.get("name") == "_fp4_gemm_sm90_kernel":
                src = patch(src)
            return orig(src, metadata)
        stages["cubin"] = cubin
    knobs.runtime.add_stages_inspection_hook = hook
