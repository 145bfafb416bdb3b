"""The data build end to end with the real channels, on a handful of hand-written sentences."""

import json

import pytest

from runtime.cli import main
from runtime.errors import UserError
from training.data.build import SPLITS, Plan, build
from training.data.rows import read_rows

PLAN = dict(
    seed=1,
    split_shares=(0.5, 0.25, 0.25),
    pdf_sentences=10,
    ocr_sentences=3,
    legacy_share=0.2,
    clean_share=0.2,
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
