import itertools

import pytest
from hypothesis import given, settings
from strategies import any_text, damaged_pairs

from runtime.text import Span, apply_spans, cluster_bounds, edit_spans


@pytest.mark.parametrize(
    ("source", "target", "spans"),
    [
        ("ភ្នំពេ ញ", "ភ្នំពេញ", [Span(6, 7, "")]),  # stray space deleted
        ("នង", "និង", [Span(0, 1, "និ")]),  # dropped vowel: the whole cluster is replaced
        ("ក្នុក្នុង", "ក្នុង", [Span(4, 8, "")]),  # duplicated cluster
        ("a$b", "a b", [Span(1, 2, " ")]),
        ("abc xyz", "abd xyq", [Span(2, 3, "d"), Span(6, 7, "q")]),
        ("ab", "xy", [Span(0, 2, "xy")]),  # adjacent edits merge
        ("", "ក", [Span(0, 0, "ក")]),
        ("same", "same", []),
    ],
)
def test_finds_cluster_edits(source: str, target: str, spans: list[Span]) -> None:
    assert edit_spans(source, target) == spans
    assert apply_spans(source, spans) == target


@settings(max_examples=500, deadline=None)
@given(damaged_pairs())
def test_applying_spans_gives_the_target(pair: tuple[str, str]) -> None:
    source, target = pair
    spans = edit_spans(source, target)
    assert apply_spans(source, spans) == target
    cluster_edges = {edge for bound in cluster_bounds(source) for edge in bound} | {0}
    for previous, span in itertools.pairwise(spans):
        assert previous.end < span.start
    for span in spans:
        assert span.start in cluster_edges and span.end in cluster_edges
        assert source[span.start : span.end] != span.replacement


@settings(max_examples=300, deadline=None)
@given(any_text(), any_text())
def test_applying_spans_between_unrelated_texts(source: str, target: str) -> None:
    assert apply_spans(source, edit_spans(source, target)) == target


@settings(max_examples=200, deadline=None)
@given(any_text())
def test_no_spans_between_equal_texts(text: str) -> None:
    assert edit_spans(text, text) == []


@pytest.mark.parametrize(
    ("spans", "problem"),
    [
        ([Span(2, 3, "x"), Span(0, 1, "y")], "before the previous span ends"),
        ([Span(0, 2, "x"), Span(1, 3, "y")], "before the previous span ends"),
        ([Span(3, 9, "x")], "past the source"),
    ],
)
def test_refuses_bad_spans(spans: list[Span], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        apply_spans("abcdef", spans)


def test_refuses_an_inverted_span() -> None:
    with pytest.raises(ValueError, match="start <= end"):
        Span(3, 2, "")
