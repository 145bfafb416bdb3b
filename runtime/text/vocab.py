"""The character vocabulary: which characters the models read and write, and their ids.

Ids are baked into a trained model, so a vocabulary travels with every checkpoint and export
(as JSON, see `Vocab.to_dict`) and is read back from there, never rebuilt. `Vocab.default()` is
the vocabulary new models are trained with: all of Khmer, printable ASCII, common typography and
the zero-width characters. Anything else bypasses the model unchanged (see passthrough.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

FORMAT = "khmer-correct-vocab"
VERSION = 1
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

# Inclusive code point ranges of the default vocabulary, in id order.
_KHMER_RANGES = ((0x1780, 0x17DD), (0x17E0, 0x17E9), (0x17F0, 0x17F9), (0x19E0, 0x19FF))
_ASCII_PRINTABLE = (0x20, 0x7E)
# Typography found in Khmer documents besides ASCII (Khmer's own punctuation is in its block).
# No NBSP: normalization turns it into a space.
_TYPOGRAPHY = "«»‹›“”‘’„‐‑–—…•·°‰§¶№×÷±€£¥©®™′″"
# ZWSP marks word breaks; ZWNJ and ZWJ control shaping.
_ZERO_WIDTH = "\u200b\u200c\u200d"


def is_khmer(ch: str) -> bool:
    """True if the character is in the Khmer (U+1780-17FF) or Khmer Symbols (U+19E0-19FF) block."""
    return "\u1780" <= ch <= "\u17ff" or "\u19e0" <= ch <= "\u19ff"


class Vocab:
    """Characters and their ids: the special tokens take ids 0-3, the characters follow in order."""

    def __init__(self, chars: Iterable[str]) -> None:
        self._chars = tuple(chars)
        self._ids: dict[str, int] = {}
        for ch in self._chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"vocabulary entry {ch!r} is not a single character")
            if ch in self._ids:
                raise ValueError(f"vocabulary lists {ch!r} (U+{ord(ch):04X}) more than once")
            self._ids[ch] = len(SPECIALS) + len(self._ids)

    @classmethod
    def default(cls) -> Vocab:
        code_points = [
            cp
            for first, last in (*_KHMER_RANGES, _ASCII_PRINTABLE)
            for cp in range(first, last + 1)
        ]
        return cls([*map(chr, code_points), *_TYPOGRAPHY, *_ZERO_WIDTH])

    @property
    def pad_id(self) -> int:
        return SPECIALS.index("<pad>")

    @property
    def bos_id(self) -> int:
        return SPECIALS.index("<bos>")

    @property
    def eos_id(self) -> int:
        return SPECIALS.index("<eos>")

    @property
    def unk_id(self) -> int:
        return SPECIALS.index("<unk>")

    @property
    def chars(self) -> tuple[str, ...]:
        """The characters in id order (character i has id len(SPECIALS) + i)."""
        return self._chars

    def __len__(self) -> int:
        return len(SPECIALS) + len(self._chars)

    def __contains__(self, ch: object) -> bool:
        return ch in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._chars == other._chars

    def __hash__(self) -> int:
        return hash(self._chars)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} ids)"

    def encode(self, text: str) -> list[int]:
        """One id per character; characters outside the vocabulary become <unk>."""
        unk_id = self.unk_id
        return [self._ids.get(ch, unk_id) for ch in text]

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> str:
        """The text of `ids`, stopping at the first <eos> unless `stop_at_eos` is False.

        Special tokens produce no text. That includes <unk>: models never learn to emit it,
        because characters outside the vocabulary bypass the model. An id outside the
        vocabulary is a ValueError.
        """
        chars = []
        for token in map(int, ids):
            if token == self.eos_id and stop_at_eos:
                break
            if len(SPECIALS) <= token < len(self):
                chars.append(self._chars[token - len(SPECIALS)])
            elif not 0 <= token < len(SPECIALS):
                raise ValueError(f"id {token} is outside the vocabulary (0..{len(self) - 1})")
        return "".join(chars)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "specials": list(SPECIALS),
            "chars": list(self._chars),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        """The vocabulary `to_dict` described; ValueError names what is wrong with `data`."""
        if not isinstance(data, dict):
            raise ValueError(f"a vocabulary is a JSON object, not {type(data).__name__}")
        missing = [key for key in ("format", "version", "specials", "chars") if key not in data]
        if missing:
            raise ValueError(f"vocabulary lacks {', '.join(missing)}")
        if data["format"] != FORMAT:
            raise ValueError(f"format is {data['format']!r}, not {FORMAT!r}")
        if data["version"] != VERSION:
            raise ValueError(f"vocabulary version {data['version']!r} is not {VERSION}")
        if tuple(data["specials"]) != SPECIALS:
            raise ValueError(f"specials {data['specials']!r} differ from {list(SPECIALS)!r}")
        if not isinstance(data["chars"], list):
            raise ValueError("vocabulary chars must be a list")
        return cls(data["chars"])

    def to_json(self, path: str | Path) -> None:
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> Vocab:
        """Read a vocabulary file; a broken or foreign file is a ValueError naming the file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
