"""Channel ``legacy``: Unicode Khmer → Limon / ABC legacy-font text in visual order."""

import time

import pytest

from training.data.legacy import ENCODINGS, make_rows, to_legacy

# Expected strings derived from public Limon tables (see training/data/legacy.py):
# [csv]   danhhong/limon_unicode_converter, data/unicode_limon.csv (Unicode ↔ Limon glyph codes)
# [kfc]   README of the "kfc" package (Khmer Font Converter): ថ្ងៃខែឆ្នាំកំណើត ↔ éf¶ExqñaMkMeNIt
# [js]    chamnap/khmer_unicode_converter, test/limon_test.js and test/abc_test.js
# [pdf]   pdftotext output of a PDF set in LmnTTFantBig (Limon family) quoted in a public project
#         note: "brmtßeCatika Gdækfa kfaBN'naéRtsrN³"
LIMON_WORDS = [
    ("ខ្មែរ", "Exµr"),  # [csv] ែ=E before the base, ខ=x, ្ម=µ, រ=r
    ("កម្ពុជា", "km<úCa"),  # [csv] ្ព=<; [js] taller ុ under a subscript (ú)
    ("ស្រី", "RsI"),  # [csv] coeng-ro R before the base, ី=I
    ("នៅ", "enA"),  # [csv] ៅ = e + A around the base
    ("ភ្នំពេញ", "PñMeBj"),  # [csv] ្ន=ñ, ំ=M, េ=e before ព=B
    ("ថ្ងៃខែឆ្នាំកំណើត", "éf¶ExqñaMkMeNIt"),  # [kfc] worked example
    ("អក្សរបញ្ចូល", "GkSrbBa©Úl"),  # [js] ញ with a subscript is drawn "Ba"; ូ under it is Ú
    ("លីម៉ូន", "lIm:Un"),  # [js] ៉=":"
    ("ខ្ញុំ", "´"),  # [csv/js] ligature
    ("បរមត្ថជោតិកា", "brmtßeCatika"),  # [pdf] ោ = e + a around the base
    ("អដ្ឋកថា", "Gdækfa"),  # [pdf]
    ("ត្រៃសរណៈ", "éRtsrN³"),  # [pdf] pre-base vowel, then coeng-ro, then the base
]

ABC_WORDS = [
    # [js] test/abc_test.js: "GkßrbBa©Úl (eGb‘ÍsuI)" ↔ អក្សរបញ្ចូល (អេប៊ីស៊ី)
    ("អក្សរបញ្ចូល (អេប៊ីស៊ី)", "GkßrbBa©Úl (eGb‘ÍsuI)"),
    ("ខ្មែរ", "Exµr"),
]


@pytest.mark.parametrize(("unicode", "limon"), LIMON_WORDS)
def test_limon_known_words(unicode, limon):
    assert to_legacy(unicode) == limon
    assert to_legacy(unicode, "limon") == limon


@pytest.mark.parametrize(("unicode", "abc"), ABC_WORDS)
def test_abc_known_words(unicode, abc):
    assert to_legacy(unicode, "abc") == abc


def test_pre_base_vowels_and_coeng_ro_come_first():
    # េ ែ ៃ and the left part of ោ ើ come before the base; coeng-ro before the base, after them.
    assert to_legacy("កេ") == "ek"
    assert to_legacy("កែ") == "Ek"
    assert to_legacy("កៃ") == "ék"
    assert to_legacy("កោ") == "eka"  # split vowel: two glyphs
    assert to_legacy("កើ") == "ekI"
    assert to_legacy("ក្រ") == "Rk"
    assert to_legacy("ប្រទេស") == "RbeTs"
    assert to_legacy("ត្រៃ") == "éRt"  # vowel, then coeng-ro, then base
    # coeng-ro typed second (ស្ត្រី) or first (ស្រ្តី): the same glyphs
    assert to_legacy("ស្ត្រី") == to_legacy("ស្រ្តី") == "RsþI"


def test_latin_digits_and_spaces_pass_unchanged():
    text = "Hello, world! 2025 info@example.org (a+b)=c"
    for encoding in ENCODINGS:
        assert to_legacy(text, encoding) == text
    assert to_legacy("សួស្តី World 123") == "sYsþI World 123"


def test_khmer_digits_and_punctuation():
    assert to_legacy("១២៣០") == "1230"
    assert to_legacy("ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។") == "´RsLaj;RbeTskm<úCa."


def test_pure_khmer_output_is_latin():
    sentences = ["ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។", "សួស្តី ពិភពលោក", "ភ្នំពេញ ជាទីក្រុងធំ"]
    for sentence in sentences:
        for encoding in ENCODINGS:
            out = to_legacy(sentence, encoding)
            assert out
            assert all(ord(ch) < 256 for ch in out), (encoding, out)
            assert not any("\u1780" <= ch <= "\u17ff" for ch in out)


def test_no_glyph_falls_back_to_unicode():
    assert to_legacy("ក៖") == "k៖"  # no documented Limon code for ៖: kept as is


def test_zero_width_space_is_dropped():
    assert to_legacy("ខ្មែរ\u200bភាសា") == "ExµrPasa"


def test_make_rows_metadata_and_determinism(khmer_sentences):
    first = make_rows(khmer_sentences, seed=3)
    again = make_rows(khmer_sentences, seed=3)
    assert first.rows == again.rows
    assert len(first.rows) == len(khmer_sentences)
    for row, sentence in zip(first.rows, khmer_sentences, strict=True):
        assert row["target"] == sentence
        assert row["channel"] == "legacy"
        assert row["encoding"] in ENCODINGS
        assert row["input"] == to_legacy(sentence, row["encoding"])
    many = make_rows(khmer_sentences * 5, seed=3)
    assert {r["encoding"] for r in many.rows} == set(ENCODINGS)
    only = make_rows(khmer_sentences, seed=3, encodings=["abc"])
    assert {r["encoding"] for r in only.rows} == {"abc"}


def test_unknown_encoding_names_the_valid_ones():
    with pytest.raises(ValueError, match="limon") as info:
        to_legacy("ក", "zawgyi")
    assert "abc" in str(info.value)
    with pytest.raises(ValueError, match="limon"):
        make_rows(["ក"], seed=0, encodings=["zawgyi"])


def test_fast_enough(khmer_sentences):
    sentences = [f"{s} {i}" for i in range(500) for s in khmer_sentences]  # 6,000
    start = time.perf_counter()
    make_rows(sentences, seed=0)
    rate = len(sentences) / (time.perf_counter() - start)
    assert rate > 5000, f"{rate:.0f} sentences/s"
