import re
import time
import unicodedata

import pytest
from hypothesis import given, settings
from strategies import any_text, khmer_text

from runtime.text import normalize, normalize_with_offsets


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("  ភ្នំ\t\tពេញ \n", "ភ្នំ ពេញ"),
        ("a\u00a0b\u2003c\u3000d\u202fe\r\nf", "a b c d e f"),
        ("ក\u200bខ\ufeff", "កខ"),  # ZWSP and BOM removed
        ("a \u200b b", "a b"),  # the spaces ZWSP separated merge
        ("ប៊\u200cី\u200d", "ប៊\u200cី\u200d"),  # ZWNJ and ZWJ kept
        ("e\u0301", "\u00e9"),  # NFC
        ("e\u200b\u0301", "\u00e9"),  # ZWSP goes before NFC
        ("\u2000x", "x"),  # NFC maps U+2000 to U+2002, still whitespace
        (" \t\u200b\n", ""),
    ],
)
def test_normalizes(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


@pytest.mark.parametrize(
    ("text", "normalized", "offsets"),
    [
        ("  a  b ", "a b", [2, 3, 5, 6]),
        ("a\u200bb", "ab", [0, 2, 3]),
        ("e\u0301x", "\u00e9x", [0, 2, 3]),
        ("\u1100\u1161\u11a8x", "\uac01x", [0, 3, 4]),  # Hangul jamo compose
        ("ab\u200b \n", "ab", [0, 1, 2]),
        ("   ", "", [0]),
        ("", "", [0]),
    ],
)
def test_offsets_point_into_the_original(text: str, normalized: str, offsets: list[int]) -> None:
    assert normalize_with_offsets(text) == (normalized, offsets)


@settings(max_examples=500, deadline=None)
@given(any_text())
def test_normalize_is_idempotent(text: str) -> None:
    normalized = normalize(text)
    assert normalize(normalized) == normalized
    assert unicodedata.is_normalized("NFC", normalized)
    assert "\u200b" not in normalized
    assert "  " not in normalized
    assert normalized == normalized.strip()


@settings(max_examples=500, deadline=None)
@given(any_text())
def test_offsets_are_valid(text: str) -> None:
    normalized, offsets = normalize_with_offsets(text)
    assert normalized == normalize(text)
    assert len(offsets) == len(normalized) + 1
    assert offsets == sorted(offsets)
    assert all(0 <= offset <= len(text) for offset in offsets)
    assert all(offset < len(text) for offset in offsets[:-1])
    content_end = len(re.sub(r"[\s\u200b\ufeff]+\Z", "", text))
    assert offsets[-1] == content_end


@settings(max_examples=300, deadline=None)
@given(khmer_text())
def test_offsets_name_the_source_character(text: str) -> None:
    """Where only whitespace and ZWSP/BOM change, each character comes from where offsets say."""
    if not unicodedata.is_normalized("NFC", text):
        return
    normalized, offsets = normalize_with_offsets(text)
    for ch, offset in zip(normalized, offsets[:-1], strict=True):
        assert ch == text[offset] or (ch == " " and text[offset].isspace())


def test_long_lines_are_fast() -> None:
    line = ("ភ្នំពេញ\u200b ជា  រាជធានី។ e\u0301 " * 4000)[:100_000]
    normalize_with_offsets("e\u0301")  # builds the one-off NFC table (~0.1 s) outside the timing
    started = time.perf_counter()
    normalized, offsets = normalize_with_offsets(line)
    assert time.perf_counter() - started < 1.0
    assert normalized == normalize(line)
    assert len(offsets) == len(normalized) + 1


def test_well_written_sentences_are_already_normal(khmer_sentences: list[str]) -> None:
    for sentence in khmer_sentences:
        assert normalize(sentence) == sentence
