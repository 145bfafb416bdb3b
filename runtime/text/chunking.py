"""Cutting long text into pieces a model can take, without losing or breaking anything.

`chunk(text, max_len)` returns pieces that join back into `text` exactly, none longer than
`max_len` code points, cut only between clusters; a single cluster longer than `max_len` is the
one exception and is cut at code points. Pieces are taken greedily from the left; each is

1. the rest of the text, if it fits; else
2. the longest piece ending after a sentence end (។ ៕ ? !) and the whitespace after it, if that
   piece is at least max_len // 2 long; else
3. the longest piece ending after whitespace, if at least max_len // 2 long; else
4. the longest piece ending at any cluster boundary; else
5. max_len code points (the cluster at hand alone is longer than max_len).

The max_len // 2 floor stops pieces from shrinking just to end at a nicer place: short pieces
give the model less context and the decoder more calls.
"""

import re
from bisect import bisect_right

from runtime.text.clusters import cluster_bounds

SENTENCE_ENDS = "។៕?!"
_SENTENCE_END = re.compile(f"[{SENTENCE_ENDS}]\\s*")


def chunk(text: str, max_len: int) -> list[str]:
    """`text` in pieces of at most `max_len` code points that join back into `text`."""
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    cluster_ends = [end for _, end in cluster_bounds(text)]
    after_sentence = {match.end() for match in _SENTENCE_END.finditer(text)}
    after_space = {i + 1 for i, ch in enumerate(text) if ch.isspace()}
    pieces = []
    start = 0
    while start < len(text):
        if start + max_len >= len(text):
            cut = len(text)
        else:
            cut = _next_cut(cluster_ends, start, max_len, (after_sentence, after_space))
        pieces.append(text[start:cut])
        start = cut
    return pieces


def _next_cut(
    cluster_ends: list[int], start: int, max_len: int, preferences: tuple[set[int], ...]
) -> int:
    """Where the piece starting at `start` ends: rules 2-5 of the module docstring, with
    `preferences` holding the cut positions of rules 2 and 3."""
    limit = start + max_len
    candidates = cluster_ends[bisect_right(cluster_ends, start) : bisect_right(cluster_ends, limit)]
    for preferred in preferences:
        for cut in reversed(candidates):
            if cut - start < max_len // 2:
                break
            if cut in preferred:
                return cut
    return candidates[-1] if candidates else limit


def reassemble(chunks: list[str]) -> str:
    return "".join(chunks)
