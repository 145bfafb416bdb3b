"""The text pipeline around the model: request text → model pieces → corrected text and spans.

    prepare:  normalize → split off characters the model cannot produce → chunk known runs to
              the model's length → keep only pieces with Khmer in them for the model, without
              the spaces at their edges (the model only ever saw stripped text, so it would
              drop them and glue words onto the characters that bypass it)
    (the batcher and decoder correct the model pieces)
    assemble: put corrected pieces back in place → edit spans against the caller's input,
              each with the model's confidence

The response text is the normalized, corrected text; its spans, applied to the caller's
original input, give exactly that text (normalization edits included, at confidence 1).
Everything outside the vocabulary, and every piece without Khmer, comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.text import Span, Vocab, chunk, edit_spans, is_khmer, normalize, split_by_vocab


@dataclass(frozen=True)
class ModelOutput:
    """A model piece as the decoder returns it: text and each output character's probability."""

    text: str
    confidence: list[float]


@dataclass(frozen=True)
class ScoredSpan(Span):
    """A Span with the model's confidence in it, 0..1."""

    confidence: float


@dataclass(frozen=True)
class Correction:
    """The answer for one text: the corrected text and the edits that make it from the input."""

    text: str
    spans: list[ScoredSpan]


@dataclass(frozen=True)
class Prepared:
    """A request's text cut into pieces; `for_model[i]` is True when pieces[i] goes to the model."""

    original: str
    pieces: list[str]
    for_model: list[bool]

    @property
    def model_inputs(self) -> list[str]:
        return [p for p, m in zip(self.pieces, self.for_model, strict=True) if m]


def prepare(text: str, vocab: Vocab, max_len: int) -> Prepared:
    pieces: list[str] = []
    for_model: list[bool] = []
    for piece in split_by_vocab(normalize(text), vocab):
        if not piece.known:
            pieces.append(piece.text)
            for_model.append(False)
            continue
        for part in chunk(piece.text, max_len):
            core = part.strip(" ")
            if not any(is_khmer(ch) for ch in core):
                pieces.append(part)
                for_model.append(False)
                continue
            lead, trail = part[: part.index(core)], part[part.index(core) + len(core) :]
            pieces += [lead, core, trail]
            for_model += [False, True, False]
    return Prepared(text, pieces, for_model)


def assemble(
    prepared: Prepared, corrected: list[ModelOutput], *, with_spans: bool = True
) -> Correction:
    """The model outputs of its pieces (in `model_inputs` order) back into one text, with spans."""
    if len(corrected) != sum(prepared.for_model):
        raise ValueError(f"{len(corrected)} corrections for {sum(prepared.for_model)} pieces")
    answers = iter(corrected)
    parts: list[str] = []
    confidence: list[float] = []
    for piece, for_model in zip(prepared.pieces, prepared.for_model, strict=True):
        if for_model:
            answer = next(answers)
            parts.append(answer.text)
            confidence.extend(answer.confidence)
        else:
            parts.append(piece)
            confidence.extend([1.0] * len(piece))
    text = "".join(parts)
    spans = _scored_spans(prepared.original, text, confidence) if with_spans else []
    return Correction(text, spans)


def _scored_spans(source: str, target: str, confidence: list[float]) -> list[ScoredSpan]:
    """Spans from `source` to `target`; a span's confidence is the lowest probability among the
    characters it puts in, or for a pure deletion that of the character after it."""
    scored = []
    shift = 0  # target offset minus source offset, after the spans so far
    for span in edit_spans(source, target):
        start = span.start + shift
        stop = start + len(span.replacement)
        window = confidence[start:stop] or confidence[stop : stop + 1] or [1.0]
        scored.append(ScoredSpan(span.start, span.end, span.replacement, min(window)))
        shift += len(span.replacement) - (span.end - span.start)
    return scored
