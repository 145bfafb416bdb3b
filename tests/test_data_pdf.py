"""The pdf channel, with the real generators, fonts and extractors on a few hand-written lines."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from training.data import pdf
from training.data.pdf import EXTRACTORS, GENERATORS, available_fonts, make_rows

SENTENCES = [
    "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។",
    "សួស្តី តើអ្នកសុខសប្បាយជាទេ?",
    "ភ្នំពេញគឺជារាជធានីនៃព្រះរាជាណាចក្រកម្ពុជា ហើយជាទីក្រុងធំជាងគេ។",
    "យើងទៅផ្សារទិញបន្លែ និងផ្លែឈើនៅព្រឹកនេះ។",
    "សិស្សានុសិស្សកំពុងរៀនភាសាខ្មែរនៅក្នុងថ្នាក់។",
    "អរគុណច្រើនសម្រាប់ជំនួយរបស់អ្នក។",
]


def _pdfs(cache: Path) -> list[Path]:
    return sorted((cache / "pdf").glob("*.pdf"))


def _page_count(path: Path) -> int:
    from pypdf import PdfReader

    return len(PdfReader(str(path)).pages)


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _in_order(rows: list[dict], sentences: list[str]) -> bool:
    """Targets run through the sentences in order (a sentence's rows are contiguous)."""
    targets = [r["target"] for r in rows]
    deduped = [t for i, t in enumerate(targets) if i == 0 or t != targets[i - 1]]
    return deduped == sentences


def _done(result) -> str:
    return next(n for n in result.notes if n.startswith("pdf: rendered"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One pooled run over every generator (3 batches of 2 sentences), and its cache."""
    cache = tmp_path_factory.mktemp("pdf-cache")
    result = make_rows(
        SENTENCES, seed=7, cache_dir=cache, workers=2, pages_per_pdf=2, progress=False
    )
    return result, cache


def test_unknown_names_are_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="fpdf2, typst, libreoffice"):
        make_rows(SENTENCES, seed=0, cache_dir=tmp_path, generators=["msword"])
    with pytest.raises(ValueError, match="pdftotext, pdftotext-layout, pypdf, pdfminer"):
        make_rows(SENTENCES, seed=0, cache_dir=tmp_path, extractors=["ocr"])
    with pytest.raises(ValueError, match="Khmer"):
        make_rows(SENTENCES, seed=0, cache_dir=tmp_path, fonts=["Comic Sans"])


def test_khmer_fonts_are_found():
    fonts = available_fonts()
    if not fonts:
        pytest.skip("no Khmer font installed: apt-get install fonts-khmeros fonts-noto-core")
    assert all(path.is_file() for path in fonts.values())


@pytest.mark.parametrize("generator", GENERATORS)
def test_each_generator_renders_one_page_per_sentence(generator, tmp_path):
    result = make_rows(
        SENTENCES[:3],
        seed=1,
        cache_dir=tmp_path,
        workers=1,
        pages_per_pdf=3,
        generators=[generator],
        extractors=["pdftotext-layout", "pypdf"],
        progress=False,
    )
    if not result.rows:
        pytest.skip("; ".join(result.notes))
    [path] = _pdfs(tmp_path)
    assert _page_count(path) == 3
    assert _in_order(result.rows, SENTENCES[:3])
    assert {r["generator"] for r in result.rows} == {generator}
    assert len(result.rows) == 6


def test_rows_carry_damaged_text_and_metadata(run):
    result, _ = run
    if not result.rows:
        pytest.skip("; ".join(result.notes))
    fonts = available_fonts()
    for row in result.rows:
        assert row["channel"] == "pdf"
        assert row["generator"] in GENERATORS
        assert row["extractor"] in EXTRACTORS
        assert row["font"] in fonts
        assert 11 <= row["font_size"] <= 16
        assert row["input"] == row["input"].rstrip("\n\f")
    assert _in_order(result.rows, SENTENCES)
    # The measured damage: extraction does not give the typed text back.
    assert any(_collapse(r["input"]) != _collapse(r["target"]) for r in result.rows)
    missing = [n for n in result.notes if "install" in n]
    if not missing:  # everything installed: every extractor read every page of all 3 PDFs
        assert len(result.rows) == len(SENTENCES) * len(EXTRACTORS)
        assert {r["generator"] for r in result.rows} == set(GENERATORS)


def test_rerun_renders_nothing_and_gives_the_same_rows(run):
    result, cache = run
    before = {p: p.stat().st_mtime_ns for p in (cache / "pdf").rglob("*") if p.is_file()}
    again = make_rows(
        SENTENCES, seed=7, cache_dir=cache, workers=2, pages_per_pdf=2, progress=False
    )
    after = {p: p.stat().st_mtime_ns for p in (cache / "pdf").rglob("*") if p.is_file()}
    assert again.rows == result.rows
    assert after == before
    assert re.search(r"rendered 0 PDFs \(\d+ cached\), extracted 0 ", _done(again))


def test_same_seed_same_rows_from_scratch(run, tmp_path):
    result, _ = run
    again = make_rows(
        SENTENCES, seed=7, cache_dir=tmp_path, workers=2, pages_per_pdf=2, progress=False
    )
    assert again.rows == result.rows
    assert "rendered 0 PDFs" not in _done(again)


def test_missing_programs_are_named_with_their_install_hint(tmp_path, monkeypatch):
    available_fonts()  # fonts are looked up once (fc-list) before PATH goes empty
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = make_rows(
        SENTENCES[:2],
        seed=0,
        cache_dir=tmp_path,
        workers=1,
        generators=["libreoffice", "typst"],
        extractors=["pdftotext", "pypdf"],
        progress=False,
    )
    notes = "\n".join(result.notes)
    assert "apt-get install libreoffice-writer-nogui" in notes
    assert "apt-get install poppler-utils" in notes
    if result.rows:  # the pure-Python tools went on
        assert {(r["generator"], r["extractor"]) for r in result.rows} == {("typst", "pypdf")}


def test_an_overflowing_page_never_misaligns_rows(tmp_path):
    long_sentence = " ".join(["ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា ហើយខ្ញុំចង់រៀនភាសាខ្មែរ។"] * 150)
    batch = [SENTENCES[0], long_sentence, SENTENCES[1]]
    result = make_rows(
        batch,
        seed=0,
        cache_dir=tmp_path,
        workers=1,
        pages_per_pdf=3,
        generators=["typst"],
        extractors=["pdftotext"],
        progress=False,
    )
    if not result.rows:
        pytest.skip("; ".join(result.notes))
    assert any("re-rendered one PDF per sentence" in n for n in result.notes)
    assert [r["target"] for r in result.rows] == batch
    assert len(result.rows[0]["input"]) < 100 and len(result.rows[2]["input"]) < 100
    assert len(result.rows[1]["input"]) > len(long_sentence) // 2


def test_a_crashing_extractor_is_noted_and_the_others_go_on(tmp_path, monkeypatch):
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext not found: apt-get install poppler-utils")

    def broken(path):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(pdf, "_extract_pypdf", broken)
    result = make_rows(
        SENTENCES[:2],
        seed=0,
        cache_dir=tmp_path,
        workers=1,
        generators=["typst"],
        extractors=["pdftotext", "pypdf"],
        progress=False,
    )
    assert any("pypdf failed" in n and "simulated crash" in n for n in result.notes)
    assert [r["extractor"] for r in result.rows] == ["pdftotext", "pdftotext"]


def test_a_substituted_font_drops_the_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(pdf, "_font_embedded", lambda fonts, config: False)
    result = make_rows(
        SENTENCES[:2],
        seed=0,
        cache_dir=tmp_path,
        workers=1,
        generators=["typst"],
        extractors=["pypdf"],
        progress=False,
    )
    assert result.rows == []
    assert any("does not embed" in n for n in result.notes)
