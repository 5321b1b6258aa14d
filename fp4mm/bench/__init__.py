"""Benchmarks: ``fp4mm bench`` (``harness``) checks each implementation against the oracle,
then times it beside cuBLAS, torch, Triton ``dot_scaled`` and quack (``baselines``) in one run;
``report`` regenerates the README's performance section from the committed JSON results.

Modules: ``cases`` (suites, shapes, inputs), ``impls`` (fp4mm's entries), ``baselines``,
``harness`` (the run, JSON, CLI), ``plot`` (the PNG), ``report`` (the README section).
"""
