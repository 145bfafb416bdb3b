"""`kmcorrect`: the one console script; each verb lives beside the code it drives.

Verbs are imported only when invoked, so `kmcorrect serve` never pulls in the training
stack, and an install without the `train` extra still runs the verbs it can. This table sits
above the stages it dispatches to, so the torch-free `runtime/` knows none of the others.

One name for one thing on every verb: ``--model KIND`` is a model kind (editor, hybrid, ...),
``--run-dir DIR`` a training run, ``--artifact DIR`` an exported artifact; flags are never
abbreviated (a misspelled flag is an error, not another flag).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from runtime.errors import UserError

# verb -> (module with add_arguments(parser) and run(args) -> int, one-line help, extra it needs)
VERBS: dict[str, tuple[str, str, str]] = {
    "data": ("training.data.cli", "build train/val/test pairs and a data card", "train"),
    "train": ("training.cli", "train a model on a data folder into a run folder", "train"),
    "monitor": ("training.monitor", "a training run's live progress (--watch), plot", "train"),
    "pipeline": ("training.pipeline", "data -> train -> eval -> export -> bench, once", "train"),
    "eval": ("training.eval_cli", "score checkpoints on a data split, write reports", "train"),
    "export": ("export.cli", "checkpoint -> verified ONNX artifact (+ TensorRT)", "train"),
    "serve": ("runtime.serve_cli", "serve an artifact over gRPC until SIGTERM", "serve"),
    "correct": ("kmcorrect.correct", "correct lines in-process or via a server", "serve"),
    "bulk": ("runtime.bulk_cli", "correct folders of text and PDFs, locally or on Ray", "serve"),
    "bench": ("benchmarks.cli", "benchmark suites side by side -> results/<device>/", "train"),
    "demo": ("runtime.demo", "serve an artifact, correct sample rows over gRPC, stop", "serve"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argparse.ArgumentParser(
        prog="kmcorrect", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (_, help_text, _) in VERBS.items():
        verbs.add_parser(verb, help=help_text, add_help=False)
    known, rest = top.parse_known_args(argv)
    module_name, help_text, extra = VERBS[known.verb]
    prog = f"kmcorrect {known.verb}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(
            f"{prog}: error: missing dependency {exc.name!r}; "
            f"install the extra: pip install 'khmer-correct[{extra}]'",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(prog=prog, description=help_text, allow_abbrev=False)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return module.run(args)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
