import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import any_text

from runtime.text import chunk, cluster_bounds, reassemble


@settings(max_examples=500, deadline=None)
@given(any_text(), st.integers(1, 40))
def test_chunks_reassemble_fit_and_respect_clusters(text: str, max_len: int) -> None:
    chunks = chunk(text, max_len)
    assert reassemble(chunks) == text
    assert all(0 < len(piece) <= max_len for piece in chunks)
    cluster_edges = {edge for bound in cluster_bounds(text) for edge in bound}
    position = 0
    for piece in chunks[:-1]:
        position += len(piece)
        if position not in cluster_edges:  # only a cluster longer than max_len may be cut
            start, end = next((s, e) for s, e in cluster_bounds(text) if s < position < e)
            assert end - start > max_len


@pytest.mark.parametrize(
    ("text", "max_len", "chunks"),
    [
        ("", 5, []),
        ("short", 10, ["short"]),
        ("ab cd។ ef gh ij", 10, ["ab cd។ ", "ef gh ij"]),  # after a sentence end and its space
        ("ab cd ef gh ij", 10, ["ab cd ef ", "gh ij"]),  # after the last space that fits
        ("abcdefghij", 4, ["abcd", "efgh", "ij"]),  # no space: any cluster boundary
        ("ab ស្ត្រីស្ត្រី", 9, ["ab ស្ត្រី", "ស្ត្រី"]),  # never inside ស្ត្រី
        ("ស្ត្រី", 2, ["ស្", "ត្", "រី"]),  # a cluster longer than max_len is cut
    ],
)
def test_chooses_the_best_cut(text: str, max_len: int, chunks: list[str]) -> None:
    assert chunk(text, max_len) == chunks


def test_prefers_a_long_piece_to_a_nice_cut() -> None:
    """A sentence end in the first half of the window does not make a short piece."""
    assert chunk("ab។ cdefgh ijklmnop", 12) == ["ab។ cdefgh ", "ijklmnop"]


def test_refuses_nonpositive_max_len() -> None:
    with pytest.raises(ValueError, match="max_len"):
        chunk("text", 0)
