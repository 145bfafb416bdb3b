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
    for name, what in (
        ("legacy", "converted to legacy-font codes"),
        ("clean", "kept as identity pairs"),
        ("ocr", "rendered and read by Tesseract"),
        ("pdf", "typeset and extracted"),
    ):
        parser.add_argument(
            f"--{name}-share",
            type=float,
            default=getattr(defaults, f"{name}_share"),
            metavar="0..1",
            help=f"share of each split's sentences {what} (default: %(default)s); the four "
            "shares sum to at most 1, what they leave gets synthetic rows only",
        )
    parser.add_argument(
        "--ocr-max-sentences",
        type=int,
        default=defaults.ocr_max_sentences,
        metavar="N",
        help="cap on OCR sentences over all splits, train 80%%, val and test 10%% each; OCR is "
        "slow, about 11 sentences/s on 2 cores (default: %(default)s)",
    )
    parser.add_argument(
        "--pdf-max-sentences",
        type=int,
        default=defaults.pdf_max_sentences,
        metavar="N",
        help="cap on pdf sentences over all splits, divided as the OCR cap; binds only for "
        "very large corpora (default: %(default)s)",
    )
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
    name = args.name or (args.corpus.stem if args.corpus else "default")
    out = args.out or Path("data") / name
    plan = Plan(
        seed=args.seed,
        legacy_share=args.legacy_share,
        clean_share=args.clean_share,
        ocr_share=args.ocr_share,
        pdf_share=args.pdf_share,
        ocr_max_sentences=args.ocr_max_sentences,
        pdf_max_sentences=args.pdf_max_sentences,
        synthetic_variants=args.synthetic_variants,
        workers=args.workers,
        progress=not args.no_progress,
    )
    plan.check(spell=lambda field: "--" + field.replace("_", "-"))
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
