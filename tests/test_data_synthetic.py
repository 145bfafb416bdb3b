"""The synthetic channel's noise model, on hand-made pairs showing each kind of real damage."""

import functools
import json
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.data.synthetic import (
    FORMAT,
    VERSION,
    NoiseModel,
    _undo_moves,
    apply_rewrites,
    cluster_rewrites,
    make_rows,
    source_name,
)

# (clean, damaged as an extractor returns it), one pair per kind of damage that docs/design.md
# lists under "The problem, measured".
DAMAGE = {
    "space inside a cluster": ("រាជធានីភ្នំពេញ គឺជាទីក្រុង។", "រាជធានីភ្នំពេ ញ គឺជាទីក្រ ុង។"),
    "subscript moved": ("គាត់ថែរក្សាខ្លួនឯង។", "គាត់ថែរក្សាខួន ្លឯង។"),
    "subscript lost": ("សាលារៀនថ្មី។", "សាលារៀនថមី។"),
    "vowel dropped": ("ខ្ញុំ និងគាត់ទៅផ្សារ។", "ខ្ញុំ នងគាត់ទៅផ្សារ។"),
    "cluster duplicated": ("នៅក្នុងផ្ទះ។", "នៅក្នុក្នុងផ្ទះ។"),
    "ascii junk": ("ដែលបានមក។", "ដែ$លបានមក។"),
    "cid junk": ("ហើយគាត់។", "ហើ(cid:14)យគាត់។"),
    "wrong glyph map": ("សៀវភៅ និងប៊ិច។", "សៀវភៅ និវិងប៊ិច។"),
    "reordered in cluster": ("ខ្ញុំចង់ញ៉ាំបាយ។", "ខ្ញំុចង់ញ៉ាំបាយ។"),
}

CLEAN = [
    "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា។",
    "យើងទៅលេងសួនច្បារជាមួយគ្នា។",
    "កសិករដាំស្រូវនៅខេត្តបាត់ដំបង។",
]


def rows_for(pairs, *, repeat=1, extractor="pdftotext", channel="pdf"):
    return [
        {"input": damaged, "target": clean, "channel": channel, "extractor": extractor}
        for clean, damaged in pairs
        for _ in range(repeat)
    ]


@functools.cache
def mixed_model() -> NoiseModel:
    rows = rows_for(DAMAGE.values(), repeat=3) + rows_for(((s, s) for s in CLEAN), repeat=2)
    rows += rows_for([DAMAGE["ascii junk"], DAMAGE["cid junk"]], extractor="pypdf")
    rows += [{"input": "ភ្នំពេ ញ", "target": "ភ្នំពេញ", "channel": "ocr", "engine": "tesseract"}]
    return NoiseModel.fit(rows)


# -- alignment ----------------------------------------------------------------------------------


def test_a_subscript_moved_past_the_next_syllable_is_carried():
    parts, rewrites = cluster_rewrites("ខ្លួន", "ខួន ្ល")
    assert parts == ["ខ្លួ", "ន"]
    assert rewrites == [("ខួ", " ្ល", 1), ("ន", "", 0)]


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_rewrites_reproduce_the_damaged_text_exactly(kind):
    clean, damaged = DAMAGE[kind]
    assert apply_rewrites(cluster_rewrites(clean, damaged)[1]) == damaged


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet="ក្ខលួនិងេាំ ្ុ$", min_size=1, max_size=30),
    st.text(alphabet="ក្ខលួនិងេាំ ្ុ$7", max_size=30),
)
def test_rewrites_reproduce_any_pair(clean, damaged):
    assert apply_rewrites(cluster_rewrites(clean, damaged)[1]) == damaged


def test_displaced_segments_are_put_back():
    a, b, c = "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា ", "ហើយខ្ញុំចង់រៀនភាសាខ្មែរ ", "ឱ្យបានល្អណាស់។"
    repaired, moves = _undo_moves(a + b + c, a + c + b)
    assert repaired == a + b + c
    assert moves is not None and moves[1] == [0, 2, 1]
    assert _undo_moves(a + b + c, a + b + c) == (a + b + c, None)


# -- fitting ------------------------------------------------------------------------------------


def test_fit_without_usable_rows_fails():
    with pytest.raises(ValueError):
        NoiseModel.fit([])
    with pytest.raises(ValueError):
        NoiseModel.fit([{"input": "x", "target": "", "channel": "pdf"}, {"target": "ក"}])


def test_sources_are_channel_and_extractor():
    model = mixed_model()
    assert model.sources() == ["ocr/tesseract", "pdf/pdftotext", "pdf/pypdf"]
    assert source_name({"channel": "pdf", "extractor": "pypdf"}) == "pdf/pypdf"
    with pytest.raises(ValueError):
        model.sample("ក", random.Random(0), source="pdf/nope")
    summary = model.summary()
    assert summary["pdf/pypdf"]["rows"] == 2
    assert 0 < summary["pdf/pdftotext"]["unchanged_share"] < 1


def test_sources_are_drawn_in_proportion_to_their_rows():
    rows = rows_for([DAMAGE["ascii junk"]], repeat=3) + rows_for(
        [DAMAGE["cid junk"]], extractor="pypdf"
    )
    model = NoiseModel.fit(rows)
    rng = random.Random(0)
    drawn = Counter(model.pick_source(rng) for _ in range(2000))
    assert 0.68 < drawn["pdf/pdftotext"] / 2000 < 0.82


# -- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_each_kind_of_damage_is_reproduced(kind):
    clean, damaged = DAMAGE[kind]
    model = NoiseModel.fit(rows_for([(clean, damaged)], repeat=5))
    rng = random.Random(1)
    samples = Counter(model.sample(clean, rng) for _ in range(60))
    assert samples[damaged] >= 20, samples.most_common(3)


def test_a_dropped_vowel_is_dropped_at_the_fitted_rate():
    clean, damaged = DAMAGE["vowel dropped"]
    rows = rows_for([(clean, damaged)], repeat=10) + rows_for([(clean, clean)], repeat=10)
    model = NoiseModel.fit(rows + rows_for(((s, s) for s in CLEAN), repeat=5))
    rng = random.Random(2)
    text = "គាត់ និងខ្ញុំ។"
    dropped = sum("នង" in model.sample(text, rng) for _ in range(600)) / 600
    assert 0.35 < dropped < 0.65


def test_unseen_clusters_still_get_noise_through_backoff():
    pairs = [("ពេលល្ងាច។", "ពេ លល្ងាច។"), ("លោកទៅ។", "លោ កទៅ ។")]
    model = NoiseModel.fit(rows_for(pairs, repeat=5))
    rng = random.Random(3)
    # same shape as ពេ (a consonant with the vowel េ): a space after it, learnt from ពេ
    samples = [model.sample("គេមក", rng) for _ in range(200)]
    assert sum(s.startswith("គេ ") for s in samples) > 50
    # nothing like it was fitted: class and global levels still damage it sometimes
    latin = [model.sample("hello world", rng) for _ in range(300)]
    assert sum(s != "hello world" for s in latin) > 5


def test_displaced_segments_are_sampled():
    a, b, c = "ខ្ញុំស្រឡាញ់ប្រទេសកម្ពុជា ", "ហើយខ្ញុំចង់រៀនភាសាខ្មែរ ", "ឱ្យបានល្អណាស់។"
    model = NoiseModel.fit(rows_for([(a + b + c, a + c + b)], repeat=5))
    text = "រាជធានីភ្នំពេញ គឺជាទីក្រុងធំជាងគេបំផុតនៅក្នុងប្រទេស។"
    rng = random.Random(4)
    samples = [model.sample(text, rng) for _ in range(50)]
    moved = [s for s in samples if s != text and sorted(s) == sorted(text)]
    assert len(moved) > 25


def test_sources_keep_their_own_damage():
    model = mixed_model()
    rng = random.Random(5)
    ocr = [model.sample(s, rng, source="ocr/tesseract") for s in CLEAN * 30]
    assert not any("$" in s or "(cid:" in s for s in ocr)
    pypdf = [model.sample("ដែលបានមក។ ហើយគាត់។", rng, source="pdf/pypdf") for _ in range(30)]
    assert any("$" in s for s in pypdf) and any("(cid:14)" in s for s in pypdf)


def test_sampling_is_deterministic_for_a_seed():
    model = mixed_model()
    texts = [clean for clean, _ in DAMAGE.values()] + CLEAN

    def run(seed):
        rng = random.Random(seed)
        return [model.sample(t, rng) for t in texts]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_strength_scales_damage_and_zero_is_identity():
    model = mixed_model()
    texts = [clean for clean, _ in DAMAGE.values()] + CLEAN
    rng = random.Random(9)
    for source in model.sources():
        assert all(model.sample(t, rng, source=source, strength=0) == t for t in texts)
    weak = sum(model.sample(t, rng, strength=0.3) != t for t in texts * 20)
    strong = sum(model.sample(t, rng, strength=1.5) != t for t in texts * 20)
    assert weak < strong


def test_round_trip_through_json_samples_identically():
    model = mixed_model()
    document = model.to_dict()
    assert document["format"] == FORMAT and document["version"] == VERSION
    loaded = NoiseModel.from_dict(json.loads(json.dumps(document)))
    assert loaded.to_dict() == document
    texts = [clean for clean, _ in DAMAGE.values()] + CLEAN + ["unseen text 123"]
    for seed in range(20):
        a, b = random.Random(seed), random.Random(seed)
        assert [model.sample(t, a) for t in texts] == [loaded.sample(t, b) for t in texts]


def test_from_dict_rejects_other_documents():
    document = mixed_model().to_dict()
    with pytest.raises(ValueError):
        NoiseModel.from_dict({**document, "format": "something-else"})
    with pytest.raises(ValueError):
        NoiseModel.from_dict({**document, "version": VERSION + 1})


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(max_size=80),
    strength=st.floats(min_value=0, max_value=3),
    source=st.sampled_from([None, "ocr/tesseract", "pdf/pdftotext", "pdf/pypdf"]),
    seed=st.integers(0, 2**32),
)
def test_sampling_any_text_never_fails(text, strength, source, seed):
    out = mixed_model().sample(text, random.Random(seed), source=source, strength=strength)
    assert isinstance(out, str)
    if strength == 0:
        assert out == text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=40), st.text(max_size=40)), min_size=1))
def test_fitting_any_pairs_never_fails(pairs):
    model = NoiseModel.fit(rows_for(pairs))
    out = model.sample(pairs[0][0], random.Random(0))
    assert isinstance(out, str)
    assert NoiseModel.from_dict(json.loads(json.dumps(model.to_dict()))).sources() == [
        "pdf/pdftotext"
    ]


# -- the channel --------------------------------------------------------------------------------


def test_make_rows():
    model = mixed_model()
    sentences = [*CLEAN, "", "  "]
    result = make_rows(sentences, noise=model, seed=3, variants=2)
    assert len(result.rows) == 2 * len(CLEAN)
    assert result.notes == ["skipped 2 empty sentences"]
    for row in result.rows:
        assert row["channel"] == "synthetic"
        assert row["target"] in CLEAN
        assert row["noise_source"] in model.sources()
        assert 0.7 <= row["strength"] <= 1.3
    assert make_rows(sentences, noise=model, seed=3, variants=2).rows == result.rows
    assert make_rows(sentences, noise=model, seed=4, variants=2).rows != result.rows
