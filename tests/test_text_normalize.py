import time
import unicodedata

import pytest
from hypothesis import given, settings
from strategies import any_text

from runtime.text import normalize


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
        ("ក\x02ខ\x1d\x00\x85គ", "កខគ"),  # control characters (pypdf's unmapped glyphs) removed
    ],
)
def test_normalizes(text: str, normalized: str) -> None:
    assert normalize(text) == normalized


@settings(max_examples=500, deadline=None)
@given(any_text())
def test_normalize_is_idempotent(text: str) -> None:
    normalized = normalize(text)
    assert normalize(normalized) == normalized
    assert unicodedata.is_normalized("NFC", normalized)
    assert "\u200b" not in normalized
    assert "  " not in normalized
    assert normalized == normalized.strip()


def test_long_lines_are_fast() -> None:
    line = ("ភ្នំពេញ\u200b ជា  រាជធានី។ e\u0301 " * 4000)[:100_000]
    started = time.perf_counter()
    normalized = normalize(line)
    assert time.perf_counter() - started < 1.0
    assert "\u200b" not in normalized and "  " not in normalized


def test_well_written_sentences_are_already_normal(khmer_sentences: list[str]) -> None:
    for sentence in khmer_sentences:
        assert normalize(sentence) == sentence
