from collections import Counter

import pytest

from runtime.errors import UserError
from runtime.text import is_khmer
from training.data.corpus import (
    MAX_SENTENCE,
    MIN_SENTENCE,
    corpus_sentences,
    read_paragraphs,
    split_sentences,
)
from training.data.default_corpus import default_corpus


def test_sentences_split_at_terminators_and_keep_them(khmer_sentences):
    paragraph = " ".join(khmer_sentences[:3])
    assert split_sentences(paragraph) == khmer_sentences[:3]


def test_long_and_short_pieces_respect_bounds(khmer_sentences):
    long_paragraph = "".join(s.rstrip("។") + " " for s in khmer_sentences) + "។ ខ្លី។"
    sentences = split_sentences(long_paragraph)
    assert len(sentences) > 1
    assert all(MIN_SENTENCE <= len(s) <= MAX_SENTENCE for s in sentences)
    assert "".join(sentences).replace(" ", "") in long_paragraph.replace(" ", "")


def test_bad_lines_are_counted_and_skipped(tmp_path, khmer_sentences):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(
        khmer_sentences[0].encode()
        + b"\n\n   \n"
        + b"only latin text here, nothing Khmer\n"
        + "ខ្មែរ".encode()[:-1]  # a cut multi-byte character: not UTF-8
        + b"\n"
        + khmer_sentences[1].encode()
        + b"\n"
    )
    skipped = Counter()
    paragraphs = read_paragraphs(corpus, skipped)
    assert paragraphs == khmer_sentences[:2]
    assert skipped == Counter({"empty lines": 2, "lines without Khmer": 1, "lines not UTF-8": 1})


def test_unreadable_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="corpus not found"):
        read_paragraphs(tmp_path / "missing.txt", Counter())
    with pytest.raises(UserError, match="not a readable file"):
        read_paragraphs(tmp_path, Counter())


def test_duplicate_sentences_are_dropped(khmer_sentences):
    skipped = Counter()
    sentences = corpus_sentences([khmer_sentences[0], khmer_sentences[0], "abc 123 only"], skipped)
    assert sentences == [khmer_sentences[0]]
    assert skipped["duplicate sentences"] == 1


def test_default_corpus_is_khmer_and_deterministic():
    lines, notes = default_corpus(seed=3, paragraphs=30)
    assert notes == []  # every source installs with `make setup`
    assert lines == default_corpus(seed=3, paragraphs=30)[0]
    assert lines != default_corpus(seed=4, paragraphs=30)[0]
    assert all(any(is_khmer(ch) for ch in line) for line in lines)
    text = "".join(lines)
    assert sum(is_khmer(ch) for ch in text) > 0.6 * len(text)
    assert len(corpus_sentences(lines, Counter())) >= 30
