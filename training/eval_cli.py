"""`kmcorrect eval`: score checkpoints on a data split and write the reports (and a comparison)."""

from __future__ import annotations

import argparse
import json
from itertools import islice
from pathlib import Path

import torch

from runtime.editing import Gate
from runtime.errors import UserError
from training import checkpoint
from training.data.rows import read_rows
from training.evaluate import evaluate_checkpoint, headline, write_comparison, write_reports

DEFAULT_RUN = Path("runs/editor-default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir",
        type=Path,
        action="append",
        help=f"run directory or checkpoint file; repeat to compare models (default: {DEFAULT_RUN})",
    )
    parser.add_argument("--data", type=Path, default=Path("data/default"), help="data directory")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--limit", type=int, help="evaluate only the first N rows")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--out",
        type=Path,
        help="report folder (default: <run>/eval/<split>; with several models, "
        "<out>/<run name>/ each and the comparison in <out>, default runs/comparison/<split>)",
    )
    parser.add_argument("--seed", type=int, default=0, help="picks the sample shown in HTML")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--min-confidence",
        type=float,
        help="the editor's gate: apply only edits this confident (default: calibrated on the "
        "val split of --data, as export does)",
    )


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available here; run with --device cpu")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:
        raise UserError(f"--min-confidence must be within 0..1, got {args.min_confidence}")
    rows = _read_split(args.data, args.split, args.limit)
    # Load every checkpoint before evaluating any, so a bad path fails in seconds, not hours.
    paths = args.run_dir or [DEFAULT_RUN]
    loaded = [(path, checkpoint.load(path)) for path in paths]
    run_dirs = [_run_dir(path) for path in paths]
    names = _unique([run_dir.name for run_dir in run_dirs])
    comparing = len(loaded) > 1

    reports = []
    gate_rows = None  # the val split, read once if an editor's gate is to be calibrated
    for (path, ckpt), run_dir, name in zip(loaded, run_dirs, names, strict=True):
        if ckpt.model_name == "editor" and args.min_confidence is None and gate_rows is None:
            # Calibrated as export calibrates it; without a val split the gate stays open.
            has_val = (args.data / "val.jsonl").is_file()
            gate_rows = _read_split(args.data, "val", None) if has_val else []
        report = evaluate_checkpoint(
            ckpt,
            rows,
            batch_size=args.batch_size,
            device=args.device,
            gate_rows=gate_rows or (),
            min_confidence=args.min_confidence,
        )
        report["checkpoint"].update(name=name, path=str(path))
        report["data"] = {"path": str(args.data), "split": args.split}
        if args.out:
            out = args.out / name if comparing else args.out
        else:
            out = run_dir / "eval" / args.split
        write_reports(report, rows, out, seed=args.seed)
        print(f"{name}: {headline(report)}")
        if "gate" in report:
            print(f"  gate: {Gate.of_settings(report['gate'], None).describe()}")
        print(f"  reports: {out}/report.{{json,md,html}}, predictions.jsonl")
        reports.append(report)
    if comparing:
        out = args.out or Path("runs") / "comparison" / args.split
        write_comparison(reports, out)
        print(f"comparison: {out}/comparison.{{md,json}}")
    return 0


def _read_split(data: Path, split: str, limit: int | None) -> list[dict]:
    if not data.is_dir():
        raise UserError(f"data directory not found: {data} (build one with `kmcorrect data`)")
    path = data / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: {data} has no {split} split")
    try:
        rows = list(islice(read_rows(path), limit))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not UTF-8 JSONL rows ({exc})") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def _run_dir(path: Path) -> Path:
    """The run a checkpoint belongs to: where its eval reports go by default."""
    info = checkpoint.resolve(path)
    return info.parent.parent if info.parent.name == "checkpoints" else info.parent


def _unique(names: list[str]) -> list[str]:
    """`names`, with -2, -3, ... appended to repeats so that each model gets its own folder."""
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, count = name, 1
        while candidate in taken:
            count += 1
            candidate = f"{name}-{count}"
        taken.add(candidate)
        unique.append(candidate)
    return unique
