"""`kmcorrect bench` (`make bench`): the benchmarks that exist so far, written to
benchmarks/results/<device>/. Today: decoding, greedy vs input-guided aggressive on one engine
(benchmarks/decoding.py)."""

from __future__ import annotations

import argparse

from benchmarks import decoding


def add_arguments(parser: argparse.ArgumentParser) -> None:
    decoding.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    decoding.check_args(args)
    args.log = print
    decoding.run(args)
    return 0
