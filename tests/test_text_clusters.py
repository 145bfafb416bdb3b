import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import any_text, valid_clusters

from runtime.text import cluster_bounds, is_valid_cluster, segment


@pytest.mark.parametrize(
    ("text", "clusters"),
    [
        ("ស្ត្រី", ["ស្ត្រី"]),  # two subscripts, coeng-ro last, then a vowel
        ("ក្រ", ["ក្រ"]),
        ("ខ្មែរ", ["ខ្មែ", "រ"]),
        ("ធម៌", ["ធ", "ម៌"]),  # robat follows its base
        ("ប៊ុ", ["ប៊ុ"]),  # shifter, then vowel
        ("ស៊ី", ["ស៊ី"]),
        ("កាំ", ["កាំ"]),  # vowel + nikahit
        ("ក់", ["ក់"]),  # bantoc
        ("ព្រះ", ["ព្រះ"]),  # reahmuk
        ("ភ្នំពេញ", ["ភ្នំ", "ពេ", "ញ"]),
        ("ហ្វ្រ", ["ហ្វ្រ"]),
        ("ស្ត្រ", ["ស្ត្រ"]),
        ("ឥឡូវ", ["ឥ", "ឡូ", "វ"]),  # independent vowel as base
        ("ក\u200d\u17d2ក", ["ក\u200d\u17d2ក"]),  # final coeng, marked by ZWJ
        ("Khmer", ["K", "h", "m", "e", "r"]),
        ("2024 ២០២៤", ["2", "0", "2", "4", " ", "២", "០", "២", "៤"]),
        ("e\u0301x", ["e\u0301", "x"]),  # non-Khmer combining marks attach
        ("", []),
    ],
)
def test_segments_known_words(text: str, clusters: list[str]) -> None:
    assert segment(text) == clusters


@pytest.mark.parametrize(
    ("damaged", "clusters"),
    [
        ("ភ្នំពេ ញ", ["ភ្នំ", "ពេ", " ", "ញ"]),  # space inside a word
        ("ស្រ្តី", ["ស្រ្តី"]),  # coeng-ro first: common, accepted by segment
        ("\u17d2ក", ["\u17d2", "ក"]),  # subscript that lost its base
        ("កិី", ["កិ", "ី"]),  # second vowel
        ("ក្ក្ក្ក", ["ក្ក្ក", "\u17d2", "ក"]),  # third subscript
        ("\u0301\u0301a", ["\u0301\u0301", "a"]),  # marks with no base
        ("😀\u200d😀", ["😀", "\u200d", "😀"]),
    ],
)
def test_segments_damaged_text_liberally(damaged: str, clusters: list[str]) -> None:
    assert segment(damaged) == clusters


@pytest.mark.parametrize(
    "cluster",
    ["ក", "ស្ត្រី", "ក្រ", "ហ្វ្រ", "ម៌", "ប៊ុ", "ស៊ី", "កាំ", "ក់", "ព្រះ", "ភ្នំ", "ឥ",
     "ក\u200d\u17d2ក", "ប៊\u200cី", "a", " ", "១", "។", "\u19e0", "e\u0301"],
)  # fmt: skip
def test_valid_clusters(cluster: str) -> None:
    assert is_valid_cluster(cluster)


@pytest.mark.parametrize(
    "cluster",
    [
        "",
        "\u17d2",  # lone coeng
        "ា",  # vowel without base
        "ិក",  # vowel before its base
        "កិី",  # two vowels
        "កា\u17d2ក",  # vowel before a subscript
        "ក\u17d2ក\u17d2ក\u17d2ក",  # three subscripts
        "ស្រ្ត",  # coeng-ro before another subscript
        "ក៊៊",  # two shifters
        "ក\u17d2",  # coeng with nothing to subscript
        "ក៌\u17d2ក\u17d2ក\u17d2ក",
        "ab",
        "\u0301",
        "ក\u0301",
        "\u17b4",  # deprecated inherent vowel
    ],
)
def test_invalid_clusters(cluster: str) -> None:
    assert not is_valid_cluster(cluster)


@settings(max_examples=500, deadline=None)
@given(any_text())
def test_clusters_join_back_to_the_text(text: str) -> None:
    clusters = segment(text)
    assert "".join(clusters) == text
    assert all(clusters)


@settings(max_examples=300, deadline=None)
@given(any_text())
def test_bounds_are_contiguous_and_match_segment(text: str) -> None:
    bounds = cluster_bounds(text)
    edges = [0, *(edge for bound in bounds for edge in bound), len(text)]
    assert edges[0::2] == edges[1::2]  # each cluster starts where the previous one ended
    assert [text[start:end] for start, end in bounds] == segment(text)


@settings(max_examples=300, deadline=None)
@given(valid_clusters())
def test_well_formed_syllables_are_one_valid_cluster(cluster: str) -> None:
    assert segment(cluster) == [cluster]
    assert is_valid_cluster(cluster)


@settings(max_examples=200, deadline=None)
@given(st.lists(valid_clusters(), max_size=12))
def test_well_formed_text_segments_into_its_syllables(clusters: list[str]) -> None:
    assert segment("".join(clusters)) == clusters


def test_well_written_sentences_have_only_valid_clusters(khmer_sentences: list[str]) -> None:
    for sentence in khmer_sentences:
        assert [c for c in segment(sentence) if not is_valid_cluster(c)] == [], sentence
