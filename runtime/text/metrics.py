"""Evaluation metrics, as docs/design.md "Metrics" defines them; train, eval and bench use these.

Every metric compares `normalize(...)`d text (NFC, no ZWSP, whitespace runs as one space), so
nothing is counted that normalization would undo anyway.

CER is Levenshtein(prediction, reference) / len(reference). Against an empty reference a rate is
0.0 if nothing needed changing and 1.0 otherwise, here and in every corpus-level rate.

The error mix names what the text (a prediction, or an extractor's raw output) did wrong
against the reference, as OCR and ASR evaluations do: "insertion" is a character it has that the
reference lacks (a space inside a cluster), "deletion" a reference character it lost (a dropped
vowel), "substitution" a character put in place of another.
"""

import re
from collections import Counter
from itertools import pairwise

from rapidfuzz.distance import Levenshtein

from runtime.text.clusters import segment, symbolize
from runtime.text.normalize import normalize

_MIX_KEYS = {"replace": "substitution", "insert": "insertion", "delete": "deletion"}
KINDS = ("space", "vowel_sign", "subscript", "other")
_VOWEL_SIGN = re.compile("[\u17b6-\u17d1\u17d3\u17dd]")  # dependent vowels and signs
_SUBSCRIPT = re.compile("\u17d2.?")  # a coeng and the consonant it subscripts
_PROJECTIONS = (
    lambda t: t.replace(" ", ""),
    lambda t: _VOWEL_SIGN.sub("", t),
    lambda t: _SUBSCRIPT.sub("", t),
)


def error_kinds(text: str, reference: str) -> dict[str, int]:
    """The edit distance of ``text`` to ``reference`` (normalized), split by kind: what goes
    away once spaces are ignored ("space"), then dependent vowels and signs too
    ("vowel_sign": dropped, added or displaced, as extractors move them), then subscripts
    (coeng + consonant), and what is left ("other"). The parts add up to the distance, and
    no alignment has to guess which character a displacement belongs to."""
    text, reference = normalize(text), normalize(reference)
    distances = [Levenshtein.distance(text, reference)]
    for project in _PROJECTIONS:
        text, reference = project(text), project(reference)
        # Dropping a coeng with the letter after it can raise the distance (a coeng stood
        # where the text has another letter): count that as no change, never as negative.
        distances.append(min(distances[-1], Levenshtein.distance(text, reference)))
    parts = [a - b for a, b in pairwise(distances)] + [distances[-1]]
    return dict(zip(KINDS, parts, strict=True))


def _rate(distance: int, length: int) -> float:
    if length:
        return distance / length
    return 0.0 if distance == 0 else 1.0


def cer(prediction: str, reference: str) -> float:
    """Character error rate of `prediction` against `reference`."""
    prediction, reference = normalize(prediction), normalize(reference)
    return _rate(Levenshtein.distance(prediction, reference), len(reference))


def cluster_error_rate(prediction: str, reference: str) -> float:
    """Like `cer`, but counting whole clusters (see clusters.py) instead of code points."""
    prediction_symbols, reference_symbols = symbolize(
        segment(normalize(prediction)), segment(normalize(reference))
    )
    return _rate(
        Levenshtein.distance(prediction_symbols, reference_symbols), len(reference_symbols)
    )


def error_mix(prediction: str, reference: str) -> dict[str, int]:
    """Substitutions, insertions and deletions of `prediction` against `reference`."""
    return _normalized_error_mix(normalize(prediction), normalize(reference))


def _normalized_error_mix(prediction: str, reference: str) -> dict[str, int]:
    counts = Counter(_MIX_KEYS[op.tag] for op in Levenshtein.editops(reference, prediction))
    return {key: counts[key] for key in _MIX_KEYS.values()}


class ScoreBoard:
    """Corpus-level scores of a corrector, accumulated one (input, prediction, reference) row at
    a time: keep one board per channel, generator or extractor to report them separately."""

    def __init__(self) -> None:
        self.rows = 0
        self.reference_chars = 0
        self.distance_before = 0  # input vs reference, summed over rows
        self.distance_after = 0  # prediction vs reference, summed over rows
        self.harmed_rows = 0
        self.clean_rows = 0  # rows whose input already equals the reference
        self.clean_reference_chars = 0
        self.clean_distance_after = 0
        self.error_mix = dict.fromkeys(_MIX_KEYS.values(), 0)  # of the predictions
        self.kinds_before = dict.fromkeys(KINDS, 0)  # of the inputs, by kind of character
        self.kinds_after = dict.fromkeys(KINDS, 0)  # of the predictions

    def add(self, input_text: str, prediction: str, reference: str) -> None:
        input_text, prediction, reference = map(normalize, (input_text, prediction, reference))
        before = Levenshtein.distance(input_text, reference)
        after = Levenshtein.distance(prediction, reference)
        self.rows += 1
        self.reference_chars += len(reference)
        self.distance_before += before
        self.distance_after += after
        self.harmed_rows += after > before
        if input_text == reference:
            self.clean_rows += 1
            self.clean_reference_chars += len(reference)
            self.clean_distance_after += after
        for key, count in _normalized_error_mix(prediction, reference).items():
            self.error_mix[key] += count
        for kinds, text in ((self.kinds_before, input_text), (self.kinds_after, prediction)):
            for key, count in error_kinds(text, reference).items():
                kinds[key] += count

    @property
    def cer_before(self) -> float:
        return _rate(self.distance_before, self.reference_chars)

    @property
    def cer_after(self) -> float:
        return _rate(self.distance_after, self.reference_chars)

    @property
    def relative_reduction(self) -> float:
        """1 - cer_after / cer_before; 0.0 when there was nothing to correct (cer_before == 0)."""
        if self.cer_before == 0:
            return 0.0
        return 1 - self.cer_after / self.cer_before

    @property
    def harm_rate(self) -> float:
        """Share of rows whose prediction is further from the reference than their input was."""
        return self.harmed_rows / self.rows if self.rows else 0.0

    @property
    def clean_cer_introduced(self) -> float:
        """CER of the predictions on clean rows (input == reference): damage done to good text."""
        return _rate(self.clean_distance_after, self.clean_reference_chars)

    def as_dict(self) -> dict:
        return {
            "rows": self.rows,
            "reference_chars": self.reference_chars,
            "cer_before": self.cer_before,
            "cer_after": self.cer_after,
            "relative_reduction": self.relative_reduction,
            "harm_rate": self.harm_rate,
            "clean_rows": self.clean_rows,
            "clean_cer_introduced": self.clean_cer_introduced,
            "error_mix": dict(self.error_mix),
            "error_kinds_before": dict(self.kinds_before),
            "error_kinds_after": dict(self.kinds_after),
        }
