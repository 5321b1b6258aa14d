"""Benchmarks: ``fp4mm bench`` (``harness``) checks each implementation against the oracle,
then times it beside cuBLAS, torch, Triton ``dot_scaled`` and quack (``baselines``) in one run;
``report`` regenerates the README's performance section from the committed JSON results.

Modules: ``cases`` (suites, shapes, inputs), ``impls`` (fp4mm's entries), ``baselines``,
``harness`` (the run, JSON, CLI), ``plot`` (the PNG), ``report`` (the README section).

quack is optional (``quack-kernels==0.6.5`` with ``nvidia-cutlass-dsl[-libs-base,-libs-core,
-libs-cu13]==4.8.1``, ``apache-tvm-ffi<0.2``, ``torch-c-dlpack-ext``, ``einops``). On a machine
without network: ``pip install --no-index --no-deps --target DIR *.whl`` and put both ``DIR`` and
``DIR/nvidia_cutlass_dsl/dsl_packages`` on ``PYTHONPATH``; the harness uses it when
``import quack.gemm_w4`` works. ``FP4MM_GIT_COMMIT`` records the commit when the tree has no
``.git``.
"""
