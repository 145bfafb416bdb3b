"""`kmcorrect correct`: the runtime's verb (runtime/correct_cli.py), plus ``--run-dir``: a
training run's best checkpoint corrected in torch, through the same `Corrector`, for
development before export. It lives here, above both stages, so that `runtime/` never imports
`training/`."""

from __future__ import annotations

import argparse
from pathlib import Path

from runtime import correct_cli
from runtime.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    correct_cli.add_arguments(parser)
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="a training run (or checkpoint file) instead of an artifact: its best checkpoint in "
        "torch, ungated unless --min-confidence (export calibrates the gate)",
    )


def _run_corrector(args: argparse.Namespace):
    try:
        from training.checkpoint import load
        from training.torch_engine import checkpoint_corrector
    except ImportError as exc:
        raise UserError(
            f"correcting with a run directory needs torch ({exc.name} is missing): "
            "pip install 'khmer-correct[train]', or export it and pass --artifact"
        ) from None
    return checkpoint_corrector(load(args.run_dir))


def run(args: argparse.Namespace) -> int:
    if args.run_dir is None:
        return correct_cli.run(args)
    if args.artifact is not None or args.server:
        raise UserError("--run-dir, --artifact and --server name the model three ways: pass one")
    return correct_cli.run(args, load_corrector=_run_corrector)
