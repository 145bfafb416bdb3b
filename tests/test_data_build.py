"""The data build end to end with the real channels, on a handful of hand-written sentences."""

import json

import pytest

from kmcorrect.cli import main
from runtime.errors import UserError
from training.data import ocr, pdf
from training.data.build import CHANNELS, SPLITS, Plan, allot, apportion, build, split_of
from training.data.rows import read_rows

PLAN = dict(
    seed=1,
    split_shares=(0.5, 0.25, 0.25),
    legacy_share=0.2,
    clean_share=0.2,
    ocr_share=0.2,
    pdf_share=0.4,
    ocr_max_sentences=4,
    synthetic_variants=1,
    workers=2,
    progress=False,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, khmer_sentences):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(khmer_sentences) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    card = build(corpus, root / "a", Plan(**PLAN), root / "cache")
    return root, card


def split_rows(out_dir):
    return {s: list(read_rows(out_dir / f"{s}.jsonl")) for s in SPLITS}


def test_splits_never_share_a_source_sentence(built):
    root, _ = built
    targets = {s: {row["target"] for row in rows} for s, rows in split_rows(root / "a").items()}
    assert all(targets.values())
    assert not targets["train"] & targets["val"]
    assert not targets["train"] & targets["test"]
    assert not targets["val"] & targets["test"]


def test_channels_and_card(built):
    root, card = built
    rows = [row for rows in split_rows(root / "a").values() for row in rows]
    channels = {row["channel"] for row in rows}
    assert {"pdf", "ocr", "legacy", "clean", "synthetic"} <= channels
    pdf_rows = [row for row in rows if row["channel"] == "pdf"]
    assert all({"generator", "font", "extractor"} <= row.keys() for row in pdf_rows)
    assert any(row["input"] != row["target"] for row in pdf_rows)
    on_disk = json.loads((root / "a" / "card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert on_disk["splits"]["train"]["overall"]["rows"] == len(split_rows(root / "a")["train"])
    assert on_disk["channels"]["pdf"]["rows_per_s"] > 0
    assert "CER before" in (root / "a" / "card.md").read_text()
    assert (root / "a" / "noise_model.json").exists()


def test_deterministic_for_a_seed(built, corpus):
    root, _ = built
    build(corpus, root / "b", Plan(**PLAN), root / "cache")
    for split in SPLITS:
        assert (root / "a" / f"{split}.jsonl").read_bytes() == (
            root / "b" / f"{split}.jsonl"
        ).read_bytes()


def test_given_pairs_pass_through(tmp_path, khmer_sentences):
    pairs = tmp_path / "seed.json"
    pairs.write_text(
        json.dumps([{"input": s.replace("្", ""), "target": s} for s in khmer_sentences])
    )
    card = build(pairs, tmp_path / "out", Plan(**PLAN), tmp_path / "cache")
    rows = [row for rows in split_rows(tmp_path / "out").values() for row in rows]
    assert sorted(row["target"] for row in rows) == sorted(khmer_sentences)
    assert card["input"]["pairs"] == len(khmer_sentences)


def test_corpus_without_khmer_is_a_clear_error(tmp_path):
    corpus = tmp_path / "latin.txt"
    corpus.write_text("no Khmer here\nnor here\n")
    with pytest.raises(UserError, match="no usable Khmer sentences"):
        build(corpus, tmp_path / "out", Plan(**PLAN), tmp_path / "cache")


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    assert main(["data", "--corpus", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "kmcorrect data: error: corpus not found" in err
    assert "Traceback" not in err
    assert main(["data", "--clean-share", "2", "--out", str(tmp_path / "o")]) == 2
    assert "--clean-share must be within 0..1" in capsys.readouterr().err


# A small news corpus of its own (hand-written here), as a user might bring: 12 sentences.
NEWS = [
    "ក្រសួងសុខាភិបាលបានបើកមន្ទីរពេទ្យថ្មីមួយនៅខេត្តកំពង់ចាម កាលពីព្រឹកថ្ងៃច័ន្ទ។",
    "ភ្លៀងធ្លាក់ខ្លាំងពេញមួយយប់ បានធ្វើឱ្យផ្លូវជាច្រើនក្នុងក្រុងលិចទឹក។",
    "តម្លៃប្រេងសាំងនៅតាមស្ថានីយបានធ្លាក់ចុះបន្តិច សម្រាប់សប្តាហ៍នេះ។",
    "ក្រុមបាល់ទាត់ជម្រើសជាតិបានឈ្នះការប្រកួតមិត្តភាព ដោយលទ្ធផលពីរទល់មួយ។",
    "អាជ្ញាធរខេត្តសៀមរាបរំពឹងថា ភ្ញៀវទេសចរនឹងកើនឡើងក្នុងរដូវបុណ្យខាងមុខ។",
    "កសិករនៅខេត្តតាកែវចាប់ផ្តើមប្រមូលផលស្រូវប្រាំង មុនពេលទឹកជំនន់មកដល់។",
    "ធនាគារជាតិបានប្រកាសអត្រាប្តូរប្រាក់ថ្មី សម្រាប់ប្រាក់ដុល្លារអាមេរិក។",
    "សាលារៀនចំនួនដប់ប្រាំបានទទួលកុំព្យូទ័រថ្មី ពីអង្គការក្រៅរដ្ឋាភិបាលមួយ។",
    "ការដ្ឋានសាងសង់ស្ពានឆ្លងទន្លេមេគង្គ នឹងបញ្ចប់នៅចុងឆ្នាំក្រោយ។",
    "ក្រុមអ្នកស្រាវជ្រាវបានរកឃើញប្រាសាទបុរាណតូចមួយ នៅក្នុងព្រៃខេត្តព្រះវិហារ។",
    "រដ្ឋាភិបាលគ្រោងសាងសង់ផ្លូវល្បឿនលឿនថ្មី ភ្ជាប់រាជធានីទៅកំពង់ផែ។",
    "ពិព័រណ៍ផលិតផលខ្មែរនឹងបើកនៅមជ្ឈមណ្ឌលកោះពេជ្រ ចាប់ពីថ្ងៃសុក្រនេះ។",
]


def test_a_twelve_sentence_corpus_feeds_every_channel(tmp_path):
    """The reported problem: with fixed quotas taken in order, pdf got nothing."""
    if pdf.unavailable() or ocr.unavailable():
        pytest.skip(f"pdf/ocr tools missing: {pdf.unavailable() + ocr.unavailable()}")
    corpus = tmp_path / "news.txt"
    corpus.write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    plan = Plan(synthetic_variants=1, workers=2, progress=False)  # the default shares
    card = build(corpus, tmp_path / "out", plan, tmp_path / "cache")
    assert card["input"]["sentences"] == len(NEWS)
    train_sentences = card["input"]["train sentences"]
    assert train_sentences >= len(CHANNELS)  # so each channel is owed at least one
    allotted = card["channel_sentences"]["train"]
    assert all(allotted[name] >= 1 for name in CHANNELS), allotted
    assert sum(allotted.values()) == train_sentences  # the default shares sum to 1
    assert allotted["pdf"] == max(allotted.values())
    train = split_rows(tmp_path / "out")["train"]
    by_channel = {name: [r for r in train if r["channel"] == name] for name in CHANNELS}
    assert by_channel["pdf"] and by_channel["legacy"] and by_channel["clean"]
    assert {r["target"] for r in by_channel["pdf"]} <= set(NEWS)
    assert {"synthetic"} <= {r["channel"] for r in train}
    notes = [n for info in card["channels"].values() for n in info["notes"]]
    assert not any("nothing to do" in note for note in notes)
    assert "Sentences per channel" in (tmp_path / "out" / "card.md").read_text()


def _by_split(count: int, plan: Plan) -> dict[str, list[str]]:
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i in range(count):
        sentence = f"ប្រយោគ {i}"
        by_split[split_of(sentence, plan.seed, plan.split_shares)].append(sentence)
    return by_split


def _totals(plan: Plan, count: int, runnable=CHANNELS) -> dict[str, int]:
    allotted = allot(plan, _by_split(count, plan), set(runnable))
    return {name: sum(allotted[s][name] for s in SPLITS) for name in CHANNELS}


def test_shares_scale_with_the_corpus_until_the_caps():
    plan = Plan()
    small, double = _totals(plan, 1000), _totals(plan, 2000)
    for name in ("legacy", "clean", "pdf"):
        assert abs(double[name] - 2 * small[name]) <= 3, (name, small, double)
    assert small["pdf"] == pytest.approx(0.7 * 1000, abs=3)
    assert small["ocr"] == pytest.approx(0.15 * 1000, abs=3)
    assert double["ocr"] == pytest.approx(2 * small["ocr"], abs=3)
    # OCR is capped early (it is slow), pdf only for a very large corpus.
    big = _totals(plan, 25_000)
    assert big["ocr"] == plan.ocr_max_sentences
    assert big["pdf"] == pytest.approx(0.7 * 25_000, abs=3)
    huge = _totals(plan, 100_000)
    assert huge["pdf"] == plan.pdf_max_sentences
    assert huge["legacy"] == pytest.approx(0.05 * 100_000, abs=3)  # no cap


def test_every_channel_gets_a_sentence_once_a_split_has_enough():
    shares = Plan().shares()
    for total in range(200):
        counts = apportion(total, shares)
        assert sum(counts.values()) == total  # the default shares sum to 1
        if total >= len(shares):
            assert min(counts.values()) >= 1, (total, counts)
    assert apportion(10, {"a": 0.5, "b": 0.0, "c": 0.01}) == {"a": 5, "b": 0, "c": 1}
    assert apportion(3, {"a": 0.1, "b": 0.1, "c": 0.1}) == {"a": 1, "b": 1, "c": 1}
    assert apportion(600, {"train": 0.8, "val": 0.1, "test": 0.1}) == {
        "train": 480,
        "val": 60,
        "test": 60,
    }


def test_a_channel_that_cannot_run_gets_no_sentences(tmp_path, monkeypatch, khmer_sentences):
    note = "tesseract not found: apt-get install tesseract-ocr tesseract-ocr-khm"
    monkeypatch.setattr(ocr, "unavailable", lambda: [note])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(khmer_sentences) + "\n", encoding="utf-8")
    plan = Plan(**{**PLAN, "pdf_share": 0.0})  # no rendering: this test stays fast
    card = build(corpus, tmp_path / "out", plan, tmp_path / "cache")
    assert all(counts["ocr"] == 0 for counts in card["channel_sentences"].values())
    assert note in card["channels"]["ocr"]["notes"]
    assert card["channels"]["clean"]["rows"] > 0
    assert _totals(plan, 1000, runnable={"legacy", "clean"})["ocr"] == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"pdf_share": 1.5}, "pdf_share must be within 0..1, got 1.5"),
        ({"ocr_share": -0.1}, "ocr_share must be within 0..1"),
        ({"pdf_share": 0.9}, "sum to 1.2; they must not sum over 1"),
        ({"ocr_max_sentences": 0}, "ocr_max_sentences must be at least 1"),
    ],
)
def test_invalid_plans_are_clear_errors(tmp_path, change, message):
    with pytest.raises(UserError, match=message):
        Plan(**change).check()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=message):
        build(corpus, tmp_path / "out", Plan(**change), tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_cli_rejects_invalid_shares(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["data", "--pdf-share", "1.1", "--out", out]) == 2
    assert "--pdf-share must be within 0..1" in capsys.readouterr().err
    assert main(["data", "--pdf-share", "0.8", "--clean-share", "0.2", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--legacy-share + --clean-share + --ocr-share + --pdf-share sum to 1.2" in err
    assert "Traceback" not in err
    assert main(["data", "--ocr-max-sentences", "0", "--out", out]) == 2
    assert "set --ocr-share to 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
