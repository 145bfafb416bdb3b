"""`kmcorrect data`: build training pairs and the data card from a corpus."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runtime.errors import UserError
from training.data.build import Plan, build


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        type=Path,
        help="UTF-8 text, one paragraph a line; or pairs as .jsonl / .json list "
        "(default: the embedded default corpus)",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: data/<name>)")
    parser.add_argument("--name", help="dataset name (default: corpus file stem, or 'default')")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/kmcorrect"),
        help="rendered PDFs and OCR results, reused across builds",
    )
    defaults = Plan()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--pdf-sentences",
        type=int,
        default=defaults.pdf_sentences,
        help="sentences typeset and extracted, over all splits",
    )
    parser.add_argument(
        "--ocr-sentences",
        type=int,
        default=defaults.ocr_sentences,
        help="sentences rendered and read by Tesseract (slow), over all splits",
    )
    parser.add_argument("--legacy-share", type=float, default=defaults.legacy_share)
    parser.add_argument("--clean-share", type=float, default=defaults.clean_share)
    parser.add_argument(
        "--synthetic-variants",
        type=int,
        default=defaults.synthetic_variants,
        help="noisy versions sampled per sentence",
    )
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    for name in ("pdf_sentences", "ocr_sentences", "synthetic_variants"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("legacy_share", "clean_share"):
        if not 0 <= getattr(args, name) <= 1:
            raise UserError(f"--{name.replace('_', '-')} must be within 0..1")
    name = args.name or (args.corpus.stem if args.corpus else "default")
    out = args.out or Path("data") / name
    plan = Plan(
        seed=args.seed,
        pdf_sentences=args.pdf_sentences,
        ocr_sentences=args.ocr_sentences,
        legacy_share=args.legacy_share,
        clean_share=args.clean_share,
        synthetic_variants=args.synthetic_variants,
        workers=args.workers,
        progress=not args.no_progress,
    )
    card = build(args.corpus, out, plan, args.cache)
    counts = ", ".join(f"{split} {stats['rows']}" for split, stats in card["splits"].items())
    print(
        f"wrote {out}/{{train,val,test}}.jsonl ({counts} rows) and {out}/card.md "
        f"in {card['seconds']:.0f} s"
    )
    for channel, info in card["channels"].items():
        for note in info["notes"]:
            print(f"note [{channel}]: {note}")
    return 0
