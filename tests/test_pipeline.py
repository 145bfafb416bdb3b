"""The serving text pipeline, with a stand-in corrector in place of the model."""

from hypothesis import given, settings
from strategies import any_text

from runtime.pipeline import ModelOutput, assemble, prepare
from runtime.text import Vocab, apply_spans, normalize

VOCAB = Vocab.default()


def fix_pdf_damage(text: str) -> ModelOutput:
    """A deterministic 'model': removes spaces before Khmer signs, doubles nothing else."""
    out = text.replace(" ា", "ា").replace(" ្", "្")
    return ModelOutput(out, [0.9] * len(out))


def correct(text: str, max_len: int = 40):
    prepared = prepare(text, VOCAB, max_len)
    return prepared, assemble(prepared, [fix_pdf_damage(p) for p in prepared.model_inputs])


def test_corrects_and_reports_spans_against_the_original():
    original = "  ខ្ញុំ ស្រឡ ាញ់ ភ ្នំពេញ  "
    _, result = correct(original)
    assert result.text == "ខ្ញុំ ស្រឡាញ់ ភ្នំពេញ"
    assert apply_spans(original, result.spans) == result.text
    model_edits = [s for s in result.spans if s.confidence < 1.0]
    assert model_edits and all(s.confidence == 0.9 for s in model_edits)


def test_unknown_characters_and_non_khmer_pieces_skip_the_model():
    prepared, result = correct("ភ្នំពេ ញ 🙂 hello ไทย world")
    assert all(any("\u1780" <= ch <= "\u17ff" for ch in p) for p in prepared.model_inputs)
    assert "🙂" in result.text and "ไทย" in result.text and "hello" in result.text


def test_long_text_is_chunked_for_the_model_and_comes_back_whole():
    sentence = "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។ "
    prepared, result = correct(sentence * 30, max_len=50)
    assert len(prepared.model_inputs) > 1
    assert all(len(p) <= 50 for p in prepared.model_inputs)
    assert result.text == normalize(sentence * 30)


def test_empty_text_gives_empty_result():
    prepared, result = correct("")
    assert prepared.model_inputs == [] and result.text == "" and result.spans == []


@settings(max_examples=300, deadline=None)
@given(any_text())
def test_spans_applied_to_the_input_reproduce_the_output(text):
    _, result = correct(text, max_len=16)
    assert apply_spans(text, result.spans) == result.text
    for ch in text:  # nothing outside the vocabulary is lost
        if ch not in VOCAB and not ch.isspace() and normalize(ch) == ch:
            assert ch in result.text
