"""Channel ``ocr``: text2image + tesseract -l khm, with a content-hash cache."""

import os
import shutil

import pytest

from runtime.text.metrics import cer
from training.data import ocr
from training.data.rows import MissingTool

HAVE_TOOLS = bool(shutil.which("text2image") and shutil.which("tesseract"))
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="tesseract-ocr (text2image) not installed")

LATIN = "សូមផ្ញើសំបុត្រមកអាសយដ្ឋាន info@example.org មុនថ្ងៃទី១៥ ខែមករា។"
SENTENCES = ["ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។", "សួស្តី ពិភពលោក", LATIN]
UNRENDERABLE = "😀🙂 😀"  # no Khmer font has these glyphs: that sentence fails, the others go on


def _mostly_khmer(text: str) -> bool:
    chars = [ch for ch in text if not ch.isspace()]
    khmer = sum("\u1780" <= ch <= "\u17ff" for ch in chars)
    return bool(chars) and khmer / len(chars) >= 0.5


@needs_tools
def test_rows_cache_and_notes(tmp_path, monkeypatch):
    monkeypatch.setattr(ocr, "FONTS", (*ocr.FONTS, ("No Such Khmer Font", 5)))
    first = ocr.make_rows(
        [*SENTENCES, UNRENDERABLE], seed=7, cache_dir=tmp_path, workers=2, progress=False
    )
    font_names = {name for name, _ in ocr.FONTS}
    assert len(first.rows) == len(SENTENCES), first.notes
    for row, sentence in zip(first.rows, SENTENCES, strict=True):
        assert row["target"] == sentence
        assert row["channel"] == "ocr"
        assert row["engine"] == "tesseract"
        assert row["lang"] == ("khm+eng" if sentence == LATIN else "khm")
        assert row["font"] in font_names
        assert row["ptsize"] in ocr.PTSIZES
        assert row["input"].strip()
        assert _mostly_khmer(row["input"]), row["input"]
        assert cer(row["input"], sentence) <= ocr.MAX_CER
    assert any("No Such Khmer Font" in note for note in first.notes)
    assert any("could not be rendered" in note for note in first.notes)
    assert list((tmp_path / "ocr").rglob("*.json"))

    def no_work(*args, **kwargs):
        raise AssertionError("cached sentences must not be rendered again")

    monkeypatch.setattr(ocr, "_job", no_work)
    again = ocr.make_rows(SENTENCES, seed=7, cache_dir=tmp_path, workers=2, progress=False)
    assert again.rows == first.rows


def test_missing_tesseract_names_the_package(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    text2image = shutil.which("text2image")
    if text2image:  # keep text2image reachable: only tesseract is missing
        os.symlink(text2image, bin_dir / "text2image")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(MissingTool, match="tesseract-ocr"):
        ocr.make_rows(SENTENCES, seed=0, cache_dir=tmp_path, workers=1, progress=False)


@needs_tools
def test_missing_khmer_model_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(ocr, "_languages", lambda: {"eng", "osd"})
    with pytest.raises(MissingTool, match="tesseract-ocr-khm"):
        ocr.make_rows(SENTENCES, seed=0, cache_dir=tmp_path, workers=1, progress=False)


def test_no_sentences_no_work(tmp_path):
    assert ocr.make_rows([], seed=0, cache_dir=tmp_path, progress=False).rows == []


def test_settings_are_a_function_of_seed_and_sentence():
    fonts = [name for name, _ in ocr.FONTS]
    one = ocr.settings_for(SENTENCES[0], 3, fonts, {"khm", "eng"})
    assert one == ocr.settings_for(SENTENCES[0], 3, fonts, {"khm", "eng"})
    assert one.lang == "khm"
    assert ocr.settings_for(LATIN, 3, fonts, {"khm", "eng"}).lang == "khm+eng"
    assert ocr.settings_for(LATIN, 3, fonts, {"khm"}).lang == "khm"
    draws = {ocr.settings_for(SENTENCES[0], seed, fonts, {"khm"}) for seed in range(40)}
    assert len({s.font for s in draws}) > 1 and len({s.ptsize for s in draws}) > 1
