"""Khmer orthographic syllables ("clusters"): the unit edits, chunk cuts and cluster error work in.

A Khmer syllable is stored as a base letter followed by its dependent signs in a fixed order and
drawn as one unit; text cut anywhere inside it cannot be rendered. The structure is the encoding
order of the Unicode Standard (ch. 16.4, Khmer) as refined by SIL's Khmer Character
Specification (its khnormal ordering):

    base robat? subscript{0,2} shifter? joiner? vowel? sign_above{0,2} sign_after? final_coeng?

    base         consonant U+1780-17A2 or independent vowel U+17A3-17B3
    robat        U+17CC
    subscript    coeng U+17D2 + consonant or independent vowel; of two, a coeng-ro comes last
    shifter      U+17C9 muusikatoan, U+17CA triisap
    joiner       ZWNJ, or ZWJ not followed by coeng (holds a shifter up; ligature control)
    vowel        one dependent vowel U+17B6-17C5
    sign_above   U+17C6 nikahit, U+17CB bantoc, U+17CD-17D1, U+17D3, U+17DD atthacan
    sign_after   U+17C7 reahmuk, U+17C8 yuukaleapintu
    final_coeng  ZWJ + coeng + consonant other than ro (SIL's marked final coeng)

`segment` reads damaged text, so it is liberal: it takes two subscripts in either order
(ស្រ្តី is a common spelling of ស្ត្រី), and every Khmer sign that cannot attach becomes a cluster
of its own. `is_valid_cluster` is the strict check. Any other character is a cluster of its own,
together with the non-Khmer combining marks (Mn, Me) that follow it.
"""

import re
import unicodedata
from collections.abc import Sequence

from runtime.text.vocab import is_khmer

_BASE = "[\u1780-\u17b3]"
_BASE_EXCEPT_RO = "[\u1780-\u1799\u179b-\u17b3]"
_COENG = "\u17d2"
_ROBAT = "\u17cc"
_SLOTS_AFTER_SUBSCRIPTS = (
    "[\u17c9\u17ca]?"  # shifter
    "(?:\u200c|\u200d(?!\u17d2))?"  # joiner; a ZWJ before coeng starts the final coeng
    "[\u17b6-\u17c5]?"  # vowel
    "[\u17c6\u17cb\u17cd-\u17d1\u17d3\u17dd]{0,2}"  # signs above
    "[\u17c7\u17c8]?"  # sign after
    f"(?:\u200d{_COENG}{_BASE_EXCEPT_RO})?"  # final coeng
)


def _cluster_pattern(subscripts: str) -> re.Pattern[str]:
    return re.compile(f"{_BASE}{_ROBAT}?{subscripts}{_SLOTS_AFTER_SUBSCRIPTS}")


# segment: up to two subscripts, in any order.
_LIBERAL_CLUSTER = _cluster_pattern(f"(?:{_COENG}{_BASE}){{0,2}}")
# is_valid_cluster: of two subscripts, a coeng-ro is the second.
_STRICT_CLUSTER = _cluster_pattern(f"(?:{_COENG}{_BASE_EXCEPT_RO})?(?:{_COENG}{_BASE})?")


def _is_base(ch: str) -> bool:
    return "\u1780" <= ch <= "\u17b3"


def _is_khmer_sign(ch: str) -> bool:
    """Dependent signs and coeng: Khmer characters that cannot stand alone."""
    return "\u17b4" <= ch <= "\u17d3" or ch == "\u17dd"


def _is_foreign_mark(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Me") and not is_khmer(ch)


def cluster_bounds(text: str) -> list[tuple[int, int]]:
    """(start, end) code point offsets of each cluster; together they cover `text` exactly."""
    bounds = []
    start = 0
    while start < len(text):
        match = _LIBERAL_CLUSTER.match(text, start)
        end = match.end() if match else start + 1
        while end < len(text) and _is_foreign_mark(text[end]):
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def segment(text: str) -> list[str]:
    """The clusters of `text`, in order; `"".join(segment(text)) == text` for every string."""
    return [text[start:end] for start, end in cluster_bounds(text)]


def is_valid_cluster(cluster: str) -> bool:
    """True if `cluster` is one well-formed cluster: a Khmer syllable in normal order, a lone
    Khmer character that stands alone (digit, punctuation, symbol), or a non-Khmer character
    with its non-Khmer combining marks."""
    if not cluster:
        return False
    first = cluster[0]
    if _is_base(first):
        return _STRICT_CLUSTER.fullmatch(cluster) is not None
    if is_khmer(first):
        return len(cluster) == 1 and not _is_khmer_sign(first)
    return not _is_foreign_mark(first) and all(map(_is_foreign_mark, cluster[1:]))


def symbolize(*sequences: Sequence[str]) -> list[list[int]]:
    """The sequences with each distinct string replaced by one small integer.

    rapidfuzz compares items other than single characters and integers by hash() alone; aligning
    the symbols instead of the clusters makes the comparison exact.
    """
    symbols: dict[str, int] = {}
    return [[symbols.setdefault(item, len(symbols)) for item in sequence] for sequence in sequences]
