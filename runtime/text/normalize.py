"""The one text normalization; training, serving and the metrics all see text through it.

`normalize(text)`:

1. removes ZWSP (U+200B) and BOM (U+FEFF): invisible word-break hints that extractors keep or
   drop at random, so no model can predict them and no metric should count them;
2. applies NFC;
3. turns every run of whitespace (whatever str.isspace accepts: tab, newline, NBSP,
   U+2000-200A, U+202F, U+3000, ...) into one U+0020 and strips it from both ends.

ZWNJ and ZWJ stay: they change how Khmer is shaped. ZWSP goes before NFC so that characters it
separated compose; whitespace is a starter that composes with nothing, so step 3 keeps the text
NFC and normalizing twice changes nothing.

`normalize_with_offsets` also says where each normalized character came from, so that edits
found on normalized text can be reported against the caller's original text.
"""

import functools
import itertools
import re
import unicodedata
from collections.abc import Sequence

_INVISIBLE = "\u200b\ufeff"
_DROP_INVISIBLE = str.maketrans(dict.fromkeys(_INVISIBLE))
_WHITESPACE_RUN = re.compile(r"\s+")


def normalize(text: str) -> str:
    """`text` in the normal form the module docstring defines."""
    composed = unicodedata.normalize("NFC", text.translate(_DROP_INVISIBLE))
    return _WHITESPACE_RUN.sub(" ", composed).strip()


def normalize_with_offsets(text: str) -> tuple[str, list[int]]:
    """`normalize(text)`, and where in `text` each of its characters came from.

    `offsets` has one entry per normalized character plus one: `offsets[i]` is the index in
    `text` of the character normalized character i came from (of a collapsed whitespace run,
    its first character; of characters NFC rewrote, the first code point of the stretch it
    rewrote), and `offsets[-1]` is where the normalized content ends in `text`, before any
    stripped trailing whitespace, ZWSP or BOM. Offsets never decrease.
    """
    visible = text.translate(_DROP_INVISIBLE)
    if len(visible) == len(text):
        visible_sources: Sequence[int] = range(len(text))
    else:
        visible_sources = [i for i, ch in enumerate(text) if ch not in _INVISIBLE]
    composed, composed_sources = _nfc_with_sources(visible)
    normalized, normalized_sources = _collapse_whitespace_with_sources(composed)
    offsets = [visible_sources[composed_sources[i]] for i in normalized_sources]
    end = len(text)
    while end and (text[end - 1].isspace() or text[end - 1] in _INVISIBLE):
        end -= 1
    offsets.append(end)
    return normalized, offsets


def _nfc_with_sources(text: str) -> tuple[str, Sequence[int]]:
    """NFC of `text`, and for each output character the index of its source in `text`.

    NFC is applied stretch by stretch, each stretch starting at a character that NFC never
    combines with what precedes it; every character of a stretch NFC rewrote maps to the
    stretch's first code point.
    """
    if unicodedata.is_normalized("NFC", text):
        return text, range(len(text))
    starts = [i for i, ch in enumerate(text) if i == 0 or _begins_nfc_stretch(ch)]
    parts = []
    sources: list[int] = []
    for start, end in itertools.pairwise([*starts, len(text)]):
        stretch = text[start:end]
        composed = unicodedata.normalize("NFC", stretch)
        parts.append(composed)
        sources.extend(range(start, end) if composed == stretch else [start] * len(composed))
    return "".join(parts), sources


def _begins_nfc_stretch(ch: str) -> bool:
    """True if NFC can neither reorder `ch` before, nor compose it with, earlier characters."""
    lead = unicodedata.normalize("NFD", ch)[0]
    return unicodedata.combining(lead) == 0 and lead not in _composition_seconds()


@functools.cache
def _composition_seconds() -> frozenset[str]:
    """Characters that canonically compose with a preceding character (computed once, ~0.1 s)."""
    seconds = {chr(cp) for cp in [*range(0x1161, 0x1176), *range(0x11A8, 0x11C3)]}  # Hangul V, T
    for cp in range(0x110000):
        decomposition = unicodedata.decomposition(chr(cp)).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            seconds.add(chr(int(decomposition[1], 16)))
    return frozenset(seconds)


def _collapse_whitespace_with_sources(text: str) -> tuple[str, list[int]]:
    """Whitespace runs as one space, ends stripped; and each output character's index in `text`."""
    parts = []
    sources: list[int] = []
    position = 0
    for run in _WHITESPACE_RUN.finditer(text):
        parts.append(text[position : run.start()])
        sources.extend(range(position, run.start()))
        if run.start() > 0 and run.end() < len(text):
            parts.append(" ")
            sources.append(run.start())
        position = run.end()
    parts.append(text[position:])
    sources.extend(range(position, len(text)))
    return "".join(parts), sources
