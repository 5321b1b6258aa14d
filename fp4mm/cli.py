"""``fp4mm`` command line.

- ``fp4mm check``: the local judge (``fp4mm check --help``).
- ``fp4mm bench``: correctness first, then timings against baselines (needs a CUDA GPU).
- ``fp4mm demo``: the main job: judge fp4mm's built-in solutions for both challenge revisions,
  then, when a CUDA GPU is present, run the benchmark.
"""

from __future__ import annotations

import argparse


def _demo(args: argparse.Namespace) -> int:
    import torch

    status = main(["check", "--builtin"])
    if torch.cuda.is_available():
        status = max(status, main(["bench"]))
    else:
        print("No CUDA GPU here: skipping `fp4mm bench` (it needs one).")
    return status


def build_parser() -> argparse.ArgumentParser:
    from fp4mm.bench import harness
    from fp4mm.challenge import judge

    parser = argparse.ArgumentParser(
        prog="fp4mm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    judge.add_arguments(sub.add_parser("check", help="judge a solution file against the challenge"))
    harness.add_arguments(sub.add_parser("bench", help="check, then time fp4mm against baselines"))
    demo = sub.add_parser(
        "demo", help="judge the built-in solutions; benchmark if a GPU is present"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)
