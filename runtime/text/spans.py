"""Edit spans: what a correction changed, as replacements of whole clusters of the source.

The service reports each correction as spans over the caller's input, so a pipeline can show,
accept or reject them one by one. Spans cover whole clusters because a change inside a syllable
is only meaningful, and only displayable, as a change of that syllable.
"""

from dataclasses import dataclass
from itertools import groupby

from rapidfuzz.distance import Levenshtein

from runtime.text.clusters import cluster_bounds, symbolize


@dataclass(frozen=True)
class Span:
    """Replace `source[start:end]` (code point offsets) with `replacement`."""

    start: int
    end: int
    replacement: str

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"span ({self.start}, {self.end}) is not 0 <= start <= end")


def edit_spans(source: str, target: str) -> list[Span]:
    """The fewest cluster edits that turn `source` into `target`, adjacent edits merged.

    Clusters are aligned by Levenshtein distance. The spans come sorted, never overlap or touch,
    and each changes something; `apply_spans(source, edit_spans(source, target)) == target`.
    """
    source_bounds = cluster_bounds(source)
    target_bounds = cluster_bounds(target)
    source_symbols, target_symbols = symbolize(
        [source[start:end] for start, end in source_bounds],
        [target[start:end] for start, end in target_bounds],
    )
    # Offset in code points of each cluster index, one past the last included.
    source_offsets = [start for start, _ in source_bounds] + [len(source)]
    target_offsets = [start for start, _ in target_bounds] + [len(target)]
    spans = []
    opcodes = Levenshtein.opcodes(source_symbols, target_symbols)
    for is_equal, run in groupby(opcodes, key=lambda opcode: opcode.tag == "equal"):
        if is_equal:
            continue
        edits = list(run)
        first, last = edits[0], edits[-1]
        start = source_offsets[first.src_start]
        end = source_offsets[last.src_end]
        replacement = target[target_offsets[first.dest_start] : target_offsets[last.dest_end]]
        if source[start:end] != replacement:
            spans.append(Span(start, end, replacement))
    return spans


def apply_spans(source: str, spans: list[Span]) -> str:
    """`source` with each span's stretch replaced; spans must be sorted, disjoint, in range."""
    parts = []
    position = 0
    for span in spans:
        if span.start < position:
            raise ValueError(f"{span} starts before the previous span ends ({position})")
        if span.end > len(source):
            raise ValueError(f"{span} ends past the source ({len(source)} code points)")
        parts += [source[position : span.start], span.replacement]
        position = span.end
    parts.append(source[position:])
    return "".join(parts)
