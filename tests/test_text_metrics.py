import json

import pytest
from hypothesis import example, given, settings
from rapidfuzz.distance import Levenshtein
from strategies import damaged_pairs

from runtime.text import ScoreBoard, cer, cluster_error_rate, error_mix, normalize
from runtime.text.metrics import KINDS, error_kinds


@pytest.mark.parametrize(
    ("prediction", "reference", "rate"),
    [
        ("abc", "abd", 1 / 3),
        ("abc", "abc", 0.0),
        ("", "", 0.0),
        ("a", "", 1.0),
        ("", "ab", 1.0),
        ("a  b\u200b\n", "a b", 0.0),  # compared after normalization
        ("នង", "និង", 1 / 3),
    ],
)
def test_cer(prediction: str, reference: str, rate: float) -> None:
    assert cer(prediction, reference) == pytest.approx(rate)


def test_cluster_error_rate_counts_clusters() -> None:
    assert cluster_error_rate("ក្នុក្នុង", "ក្នុង") == pytest.approx(1 / 2)
    assert cluster_error_rate("នង", "និង") == pytest.approx(1 / 2)
    assert cluster_error_rate("", "") == 0.0


@pytest.mark.parametrize(
    ("prediction", "reference", "mix"),
    [
        ("abc", "abd", {"substitution": 1, "insertion": 0, "deletion": 0}),
        ("ab", "abc", {"substitution": 0, "insertion": 0, "deletion": 1}),  # prediction lost c
        ("abcd", "abc", {"substitution": 0, "insertion": 1, "deletion": 0}),  # extra d
        ("ភ្នំពេ ញ", "ភ្នំពេញ", {"substitution": 0, "insertion": 1, "deletion": 0}),
    ],
)
def test_error_mix_turns_the_prediction_into_the_reference(
    prediction: str, reference: str, mix: dict[str, int]
) -> None:
    assert error_mix(prediction, reference) == mix


@settings(max_examples=200, deadline=None)
@given(damaged_pairs())
def test_error_mix_adds_up_to_the_distance(pair: tuple[str, str]) -> None:
    prediction, reference = pair
    distance = Levenshtein.distance(normalize(prediction), normalize(reference))
    assert sum(error_mix(prediction, reference).values()) == distance


def test_score_board() -> None:
    board = ScoreBoard()
    board.add("abd", "abc", "abc")  # fixed: 1 -> 0
    board.add("hello", "hellp", "hello")  # clean row, harmed: 0 -> 1
    board.add("ab", "ac", "ac")  # fixed: 1 -> 0
    assert board.rows == 3
    assert board.cer_before == pytest.approx(2 / 10)
    assert board.cer_after == pytest.approx(1 / 10)
    assert board.relative_reduction == pytest.approx(0.5)
    assert board.harm_rate == pytest.approx(1 / 3)
    assert board.clean_rows == 1
    assert board.clean_cer_introduced == pytest.approx(1 / 5)
    assert board.error_mix == {"substitution": 1, "insertion": 0, "deletion": 0}
    report = json.loads(json.dumps(board.as_dict()))
    assert report["harm_rate"] == pytest.approx(1 / 3)
    assert report["error_mix"]["substitution"] == 1


def test_score_board_normalizes_rows() -> None:
    board = ScoreBoard()
    board.add("a\u200b  b", "a b ", " a b")
    assert (board.cer_before, board.cer_after, board.clean_rows) == (0.0, 0.0, 1)


def test_empty_score_board() -> None:
    board = ScoreBoard()
    assert board.as_dict() == {
        "rows": 0,
        "reference_chars": 0,
        "cer_before": 0.0,
        "cer_after": 0.0,
        "relative_reduction": 0.0,
        "harm_rate": 0.0,
        "clean_rows": 0,
        "clean_cer_introduced": 0.0,
        "error_mix": {"substitution": 0, "insertion": 0, "deletion": 0},
        "error_kinds_before": dict.fromkeys(KINDS, 0),
        "error_kinds_after": dict.fromkeys(KINDS, 0),
    }


def test_nothing_to_correct_means_no_reduction() -> None:
    board = ScoreBoard()
    board.add("abc", "abd", "abc")
    assert board.cer_before == 0.0
    assert board.relative_reduction == 0.0
    assert board.harm_rate == 1.0


def test_error_kinds_name_what_extractors_do() -> None:
    # a space inside a word, a vowel moved after the next consonant, a lost subscript
    assert error_kinds("ត ិច", "តិច") == {"space": 1, "vowel_sign": 0, "subscript": 0, "other": 0}
    assert error_kinds("តចិ", "តិច")["vowel_sign"] == 2
    assert error_kinds("ស្រី", "ស្រី") == dict.fromkeys(KINDS, 0)
    assert error_kinds("សី", "ស្រី") == {"space": 0, "vowel_sign": 0, "subscript": 2, "other": 0}
    assert error_kinds("ករ", "កខ") == {"space": 0, "vowel_sign": 0, "subscript": 0, "other": 1}


@settings(max_examples=200, deadline=None)
@given(damaged_pairs())
@example(pair=("ក៌៊ោះ\u200dកជកកក", "ក៌៊ោះ\u200d្ជកកក"))
def test_error_kinds_add_up_to_the_distance(pair) -> None:
    clean, damaged = pair
    kinds = error_kinds(damaged, clean)
    assert min(kinds.values()) >= 0
    assert sum(kinds.values()) == Levenshtein.distance(normalize(damaged), normalize(clean))
