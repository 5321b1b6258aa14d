"""``fp4mm`` command line: ``check`` (the local judge) and ``bench`` (the benchmark harness)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from fp4mm.bench import harness
    from fp4mm.challenge import judge

    parser = argparse.ArgumentParser(prog="fp4mm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    judge.add_arguments(sub.add_parser("check", help="judge a solution file against the challenge"))
    harness.add_arguments(sub.add_parser("bench", help="check, then time fp4mm against baselines"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)
