"""Plain-text corpora in, clean sentences out.

A corpus is UTF-8 text, one paragraph a line. Lines that are not valid UTF-8, empty, or
without any Khmer are counted and skipped (the counts go into the data card). Paragraphs are
normalized, then split into 20–200 character sentences at ។ ៕ ? ! (long ones again at
spaces or cluster boundaries, short ones merged with their neighbour).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from runtime.errors import UserError
from runtime.text import chunk, is_khmer, normalize

MIN_SENTENCE = 20
MAX_SENTENCE = 200

# A sentence ends after a terminator and the spaces that follow it.
_SENTENCE_END = re.compile(r"[។៕?!]+ *")


def read_paragraphs(path: Path, skipped: Counter) -> list[str]:
    """Normalized Khmer paragraphs of a corpus file; `skipped` counts what was left out and why."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"corpus not found: {path}") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise UserError(f"corpus is not a readable file: {path} ({exc.strerror})") from None
    paragraphs = []
    for line in raw.split(b"\n"):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            skipped["lines not UTF-8"] += 1
            continue
        text = normalize(text)
        if not text:
            skipped["empty lines"] += 1
        elif not any(is_khmer(ch) for ch in text):
            skipped["lines without Khmer"] += 1
        else:
            paragraphs.append(text)
    if raw.endswith(b"\n"):
        skipped["empty lines"] -= 1  # the final newline ends the last line, it opens none
    return paragraphs


def split_sentences(
    paragraph: str, min_len: int = MIN_SENTENCE, max_len: int = MAX_SENTENCE
) -> list[str]:
    """Sentences of min_len..max_len characters, in order; short leftovers are merged or dropped."""
    pieces = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        pieces.append(paragraph[start : match.end()])
        start = match.end()
    pieces.append(paragraph[start:])

    sentences: list[str] = []
    pending = ""
    for piece in pieces:
        pending += piece
        if len(pending.strip()) < min_len:
            continue
        sentences.extend(part.strip() for part in chunk(pending, max_len))
        pending = ""
    if pending.strip() and sentences and len(sentences[-1]) + len(pending) <= max_len:
        sentences[-1] = sentences[-1] + " " + pending.strip()
    return [s for s in sentences if min_len <= len(s) <= max_len]


def corpus_sentences(paragraphs: Iterable[str], skipped: Counter) -> list[str]:
    """Unique Khmer sentences of the paragraphs, first occurrence order."""
    seen: dict[str, None] = {}
    for paragraph in paragraphs:
        for sentence in split_sentences(paragraph):
            if not any(is_khmer(ch) for ch in sentence):
                skipped["sentences without Khmer"] += 1
            elif sentence in seen:
                skipped["duplicate sentences"] += 1
            else:
                seen[sentence] = None
    return list(seen)
