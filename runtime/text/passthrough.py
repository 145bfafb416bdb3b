"""Characters the model cannot produce must never get lost.

Text is split into runs of characters in the vocabulary, which go to the model, and runs of
characters outside it (other scripts, emoji, rare symbols), which are handed back verbatim in
their original place. This is why models never need to emit <unk>.
"""

from dataclasses import dataclass
from itertools import groupby

from runtime.text.vocab import Vocab


@dataclass(frozen=True)
class Piece:
    """A maximal run of characters that are all in the vocabulary (`known`) or all outside it."""

    text: str
    known: bool


def split_by_vocab(text: str, vocab: Vocab) -> list[Piece]:
    """`text` as alternating known and unknown pieces, in order."""
    return [Piece("".join(run), known) for known, run in groupby(text, key=lambda ch: ch in vocab)]


def join_pieces(pieces: list[Piece]) -> str:
    return "".join(piece.text for piece in pieces)
