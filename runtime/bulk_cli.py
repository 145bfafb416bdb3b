"""`kmcorrect bulk`: correct folders of text files and PDFs into a mirrored output folder.

Locally on a process pool sized to the cores, or with `--ray [ADDRESS]` as a Ray Data job (a
local Ray without ADDRESS). A rerun of the same command skips finished documents. The exit
code is 1 when some document failed (the summary names each with its reason), else 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.extract import EXTRACTORS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="a UTF-8 text file (one paragraph a line), a PDF, or a folder of *.txt and *.pdf",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--artifact",
        type=Path,
        default=Path("artifacts/editor-default"),
        help="an exported artifact directory (default: %(default)s)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run as a Ray Data job: on a local Ray, or on the cluster at ADDRESS "
        "(auto, ray://head:10001); put it after the inputs",
    )
    parser.add_argument(
        "--extractor",
        choices=EXTRACTORS,
        default="pdftotext-layout",
        help="how PDFs are read (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="correcting processes or Ray actors (default: one per core, or per GPU with "
        "--device cuda/tensorrt; with --ray, the cluster's)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="onnxruntime intra-op threads per worker; 0 = onnxruntime's choice (default 1)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "tensorrt", "tensorrt-native"), default="cpu"
    )
    parser.add_argument("--variant", choices=("fp32", "opt", "int8", "fp16"), default="opt")
    parser.add_argument(
        "--min-confidence",
        type=float,
        metavar="X",
        help="the editor's confidence gate, 0..1 (default: the artifact's calibrated one)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--chunk-lines",
        type=int,
        default=1000,
        help="lines per unit of work, so one big file still spreads over the workers",
    )


def run(args: argparse.Namespace) -> int:
    from runtime.bulk import SUMMARY_FILE, Settings, bulk
    from runtime.errors import UserError

    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise UserError(f"--min-confidence must be between 0 and 1, got {args.min_confidence}")
    if args.threads < 0:
        raise UserError("--threads must not be negative")
    settings = Settings(
        artifact=str(args.artifact),
        variant=args.variant,
        device=args.device,
        threads=args.threads,
        min_confidence=args.min_confidence,
        batch_size=args.batch_size,
        extractor=args.extractor,
        chunk_lines=args.chunk_lines,
    )
    summary = bulk(args.inputs, args.out, settings, workers=args.workers, ray_address=args.ray)
    files = summary["files"]
    print(
        f"bulk: {files['corrected']} files corrected, {files['already_done']} already done, "
        f"{files['failed']} failed; {summary['lines']} lines, {summary['characters']} "
        f"characters, {summary['edits']} edits, {summary['characters_per_second']:.0f} "
        f"characters/s; summary: {args.out / SUMMARY_FILE}",
        file=sys.stderr,
    )
    for failure in summary["failures"]:
        print(f"bulk: failed: {failure['input']}: {failure['reason']}", file=sys.stderr)
    return 1 if files["failed"] else 0
