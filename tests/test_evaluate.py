"""`kmcorrect eval`: correction, group scores, reports, comparison and CLI errors, on tiny models.

A tiny transformer trained for a second to copy the hand-written sentences stands in for a
corrector whose output is known; untrained models stand in for ones that rewrite everything.
"""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pytest
import torch
from serving import Running, config

from kmcorrect.cli import main
from runtime.client import Client
from runtime.corrector import Corrector
from runtime.text import ScoreBoard, Vocab, cluster_error_rate, split_by_vocab
from training import checkpoint
from training.evaluate import (
    GROUP_KEYS,
    evaluate,
    evaluate_checkpoint,
    sample_rows,
    write_comparison,
    write_reports,
)
from training.models import build_model
from training.torch_engine import model_corrector

VOCAB = Vocab.default()
MAX_SOURCE = 64  # every hand-written sentence fits; two together do not


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a busy 2-core machine run fastest on one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, ids != VOCAB.pad_id


@pytest.fixture(scope="module")
def copier(khmer_sentences) -> torch.nn.Module:
    """A tiny char_transformer that reproduces each hand-written sentence exactly."""
    src, src_mask = _pad([VOCAB.encode(s) for s in khmer_sentences])
    tgt, _ = _pad([[VOCAB.bos_id, *VOCAB.encode(s), VOCAB.eos_id] for s in khmer_sentences])
    torch.manual_seed(0)
    model = build_model("char_transformer", len(VOCAB), "tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(600):
        out = model.loss(src, src_mask, tgt)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if out.ce.item() < 0.002:
            break
    model.eval()
    assert _correct(model, khmer_sentences) == khmer_sentences
    return model


def _untrained(name: str = "char_transformer") -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(name, len(VOCAB), "tiny").eval()


def _corrector(model: torch.nn.Module) -> Corrector:
    """The serving Corrector over a tiny test model, pieces of at most MAX_SOURCE characters."""
    name = {"CharTransformer": "char_transformer", "CharLSTM": "char_lstm"}.get(
        type(model).__name__, "hybrid"
    )
    return model_corrector(
        model, VOCAB, name=name, max_src_len=MAX_SOURCE, max_tgt_len=2 * MAX_SOURCE
    )


def _correct(model: torch.nn.Module, texts: list[str], batch_size: int = 32) -> list[str]:
    return [c.text for c in _corrector(model).correct(texts, batch_size=batch_size)]


def _rows(sentences: list[str]) -> list[dict]:
    """Rows of every channel, with the metadata each carries; damage made by hand."""
    s = sentences
    return [
        {"input": s[0][:5] + " " + s[0][5:], "target": s[0], "channel": "pdf",
         "generator": "fpdf2", "font": "Khmer OS", "extractor": "pypdf"},
        {"input": s[1][:10] + s[1][11:], "target": s[1], "channel": "pdf",
         "generator": "typst", "font": "Khmer OS", "extractor": "pdftotext"},
        {"input": s[2], "target": s[2], "channel": "pdf",
         "generator": "fpdf2", "font": "Noto Sans Khmer", "extractor": "pypdf"},
        {"input": s[3] + s[3][:4], "target": s[3], "channel": "ocr",
         "engine": "tesseract", "lang": "khm", "font": "Khmer OS"},
        {"input": "gxkBPaKa", "target": s[4][:8], "channel": "legacy", "encoding": "limon"},
        {"input": s[5].replace(" ", ""), "target": s[5], "channel": "synthetic",
         "noise_source": "pdf/pypdf", "strength": 1.0},
        {"input": s[6], "target": s[6], "channel": "clean"},
        {"input": s[7], "target": s[7], "channel": "clean"},
    ]  # fmt: skip


# --------------------------------------------------------------------------- correcting


@pytest.fixture
def source_widths(monkeypatch) -> list[int]:
    """The longest piece of every batch a Corrector runs from now on (running itself is real)."""
    widths = []
    run_batch = Corrector.run_batch

    def watched_run_batch(self, jobs):
        widths.append(max(len(job.text) for job in jobs))
        return run_batch(self, jobs)

    monkeypatch.setattr(Corrector, "run_batch", watched_run_batch)
    return widths


def test_long_text_is_chunked_to_the_model_length_and_round_trips(
    copier, khmer_sentences, source_widths
):
    long_text = " ".join(khmer_sentences[:5])
    assert len(long_text) > 4 * MAX_SOURCE
    texts = [long_text, khmer_sentences[9]]
    assert _correct(copier, texts, batch_size=2) == texts
    assert max(source_widths) <= MAX_SOURCE
    assert len(source_widths) == 3  # 6 pieces, 2 a batch


def test_out_of_vocabulary_characters_keep_their_places(copier, khmer_sentences):
    first, second = khmer_sentences[3], khmer_sentences[9]
    text = f"😀{first} ภาษาไทย {second}🇰🇭"
    assert _correct(copier, [text]) == [text]

    (rewritten,) = _correct(_untrained(), [text])
    assert rewritten != text
    assert rewritten.startswith("😀") and rewritten.endswith("🇰🇭")
    assert " ภาษาไทย " in rewritten  # the spaces beside the bypassed run stay too
    unknown = [piece.text for piece in split_by_vocab(rewritten, VOCAB) if not piece.known]
    assert unknown == ["😀", "ภาษาไทย", "🇰🇭"]


def test_input_is_normalized_before_correction(copier, khmer_sentences):
    sentence = khmer_sentences[0]
    messy = f"  {sentence[:10]}\u200b{sentence[10:]}\n"
    assert _correct(copier, [messy, ""]) == [sentence, ""]


# --------------------------------------------------------------------------- scores


def test_group_scores_match_scoreboards_built_by_hand(copier, khmer_sentences):
    rows = _rows(khmer_sentences)
    report = evaluate(_corrector(copier), rows, batch_size=3)
    predictions = report["predictions"]
    assert len(predictions) == len(rows) == report["rows"]

    overall, channels, groups = ScoreBoard(), {}, {}
    for row, prediction in zip(rows, predictions, strict=True):
        boards = [overall, channels.setdefault(row["channel"], ScoreBoard())]
        for key in GROUP_KEYS:
            if key in row:
                by_value = groups.setdefault(row["channel"], {}).setdefault(key, {})
                boards.append(by_value.setdefault(row[key], ScoreBoard()))
        for board in boards:
            board.add(row["input"], prediction, row["target"])

    assert {k: v for k, v in report["overall"].items() if "cluster" not in k} == overall.as_dict()
    assert report["channels"] == {name: board.as_dict() for name, board in channels.items()}
    assert report["groups"] == {
        channel: {
            key: {value: board.as_dict() for value, board in by_value.items()}
            for key, by_value in by_key.items()
        }
        for channel, by_key in groups.items()
    }
    assert set(report["groups"]) == {"pdf", "ocr", "legacy", "synthetic"}  # clean has no keys
    assert set(report["groups"]["pdf"]) == {"generator", "font", "extractor"}
    assert report["groups"]["pdf"]["extractor"]["pypdf"]["rows"] == 2
    # The copier leaves good text alone: nothing introduced on clean rows.
    assert report["channels"]["clean"]["cer_after"] == 0.0
    assert report["overall"]["clean_rows"] == 3  # the two clean rows and one clean pdf row
    assert report["overall"]["clean_cer_introduced"] == 0.0
    assert report["timing"]["rows_per_s"] > 0 and report["timing"]["chars_per_s"] > 0


def test_cluster_error_rate_of_one_row_is_the_metric(khmer_sentences):
    row = _rows(khmer_sentences)[0]
    report = evaluate(_corrector(_untrained()), [row])
    (prediction,) = report["predictions"]
    scores = report["overall"]
    assert scores["cluster_error_rate_before"] == cluster_error_rate(row["input"], row["target"])
    assert scores["cluster_error_rate_after"] == cluster_error_rate(prediction, row["target"])


@pytest.mark.parametrize(
    ("run", "exported"), [("run_dir", "artifact"), ("editor_run_dir", "editor_artifact")]
)
def test_eval_answers_a_row_as_in_any_batch_and_as_the_server_does(
    request, data_dir, run, exported
):
    """One path from model to text: a row's prediction in `kmcorrect eval` does not depend on
    the rows beside it in a batch, and is what `kmcorrect serve` answers for that row (the
    hybrid: greedy; the editor: its one pass, gate at 0 on both sides)."""
    lines = (data_dir / "test.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    rows = [json.loads(line) for line in lines]
    ckpt = checkpoint.load(request.getfixturevalue(run))
    together = evaluate_checkpoint(ckpt, rows, batch_size=5, min_confidence=0.0)["predictions"]
    alone = [evaluate_checkpoint(ckpt, [row], min_confidence=0.0)["predictions"][0] for row in rows]
    assert together == alone
    running = Running(config(request.getfixturevalue(exported)))
    try:
        with Client(running.target) as client:
            texts = [row["input"] for row in rows]
            served = client.correct_batch(texts, spans=False, min_confidence=0.0)
    finally:
        running.stop()
    assert together == [result.text for result in served]
    assert together != texts  # the model edits, so the equality is not the identity's


def test_sample_shows_worst_harms_first_then_a_seeded_pick():
    rows = [{"input": "abcd", "target": "abcd", "channel": "clean"} for _ in range(10)]
    predictions = ["abcd"] * 10
    predictions[3], predictions[7] = "abXd", "XXXX"  # harm 1 and 4
    picked = sample_rows(rows, predictions, seed=5, size=5)
    assert picked[:2] == [7, 3]
    assert len(picked) == 5 and len(set(picked)) == 5
    assert picked == sample_rows(rows, predictions, seed=5, size=5)
    assert sample_rows(rows, predictions, seed=5, size=1) == [7]
    assert sorted(sample_rows(rows, predictions, seed=0, size=50)) == list(range(10))


# --------------------------------------------------------------------------- reports


class _TagBalance(HTMLParser):
    """Fails on any end tag that does not close the innermost open element."""

    VOID = frozenset({"meta", "br", "hr", "img", "link", "input", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()


def test_reports_are_written_and_the_page_is_well_formed_and_escaped(khmer_sentences, tmp_path):
    rows = _rows(khmer_sentences)
    script = "<script>alert('x')</script> "
    rows.append({"input": script + "ខ ្ញុំ", "target": script + "ខ្ញុំ", "channel": "pdf",
                 "generator": "typst", "font": "Khmer OS", "extractor": "pdfminer"})  # fmt: skip
    report = evaluate(_corrector(_untrained()), rows)
    report["data"] = {"path": "data/hand", "split": "test"}
    paths = write_reports(report, rows, tmp_path, seed=0)

    page = paths["report.html"].read_text(encoding="utf-8")
    parser = _TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not [attrs for _, attrs in parser.tags if {"src", "href"} & set(attrs)]
    samples = page[page.index('<div class="sample">') :]
    assert samples.count('<div class="sample">') == len(rows)
    for marked in ('<del class="change">', '<ins class="change">', 'class="residual"'):
        assert marked in samples
    assert 'class="harmed"' in samples  # an untrained model makes every row worse

    summary = json.loads(paths["report.json"].read_text(encoding="utf-8"))
    assert "predictions" not in summary and summary["channels"] == report["channels"]
    lines = paths["predictions.jsonl"].read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == report["predictions"]
    markdown = paths["report.md"].read_text(encoding="utf-8")
    for title in ("## Overall", "## By channel", "## pdf by extractor", "## legacy by encoding"):
        assert title in markdown
    assert "| pdfminer |" in markdown


def test_comparison_has_a_row_per_model(khmer_sentences, tmp_path):
    rows = _rows(khmer_sentences)
    reports = []
    for name in ("hybrid", "char_transformer", "char_lstm"):
        report = evaluate(_corrector(_untrained(name)), rows)
        report["checkpoint"] = {"name": f"{name}-run", "model": name, "params": 1,
                                "step": None, "train_seconds": 90.0, "val_cer": None}  # fmt: skip
        reports.append(report)
    paths = write_comparison(reports, tmp_path)
    table = paths["comparison.md"].read_text(encoding="utf-8")
    for name in ("hybrid", "char_transformer", "char_lstm"):
        assert f"| {name}-run ({name}) |" in table
    assert "pdf reduction pypdf" in table and "CER after legacy" in table
    models = json.loads(paths["comparison.json"].read_text(encoding="utf-8"))["models"]
    assert [m["name"] for m in models] == ["hybrid-run", "char_transformer-run", "char_lstm-run"]
    assert models[2]["pdf_reduction_by_extractor"] == {
        extractor: reports[2]["groups"]["pdf"]["extractor"][extractor]["relative_reduction"]
        for extractor in ("pdftotext", "pypdf")
    }


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def kmcorrect():
    """`kmcorrect eval ARGS...`."""
    return lambda *argv: main(["eval", *map(str, argv)])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, khmer_sentences):
    """Two runs of untrained tiny models and a data folder, as train and data leave them."""
    root = tmp_path_factory.mktemp("eval")
    for run, name in (("transformer", "char_transformer"), ("lstm", "char_lstm")):
        checkpoint.save(
            root / "runs" / run / "checkpoints",
            "best",
            model_name=name,
            model=_untrained(name),
            vocab=VOCAB,
            meta={
                "train_config": {"max_src_len": 24},
                "progress": {"step": 40, "elapsed_s": 120.0},
                "metrics": {"val_cer": 0.9},
            },
        )
    rows = [{**row, "target": row["target"][:20]} for row in _rows(khmer_sentences)]
    (root / "data").mkdir()
    for split in ("test", "val"):
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        (root / "data" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_cli_compares_models_into_one_table(kmcorrect, workspace, tmp_path, capsys):
    runs = workspace / "runs"
    lstm_file = runs / "lstm" / "checkpoints" / "best.json"
    code = kmcorrect("--run-dir", runs / "transformer", "--run-dir", lstm_file,
                     "--data", workspace / "data", "--limit", 3, "--batch-size", 2,
                     "--out", tmp_path)  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "transformer: CER" in printed and "lstm: CER" in printed
    assert (tmp_path / "transformer" / "report.html").exists()
    assert (tmp_path / "lstm" / "report.md").exists()
    comparison = json.loads((tmp_path / "comparison.json").read_text(encoding="utf-8"))
    assert [(m["name"], m["model"], m["steps"]) for m in comparison["models"]] == [
        ("transformer", "char_transformer", 40),
        ("lstm", "char_lstm", 40),
    ]
    assert comparison["rows"] == 3
    table = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert "| transformer (char_transformer) |" in table and "| lstm (char_lstm) |" in table
    assert "2.0 min" in table


def test_cli_writes_into_the_run_by_default(kmcorrect, workspace, source_widths):
    run = workspace / "runs" / "lstm"
    code = kmcorrect("--run-dir", run, "--data", workspace / "data", "--split", "val", "--limit", 2)
    assert code == 0
    assert max(source_widths) <= 24  # the run's train_config.max_src_len, not the default 256
    report = json.loads((run / "eval" / "val" / "report.json").read_text(encoding="utf-8"))
    assert report["rows"] == 2
    assert report["checkpoint"]["model"] == "char_lstm"
    assert report["checkpoint"]["val_cer"] == 0.9


def _corrupt_tensors(run):
    weights = checkpoint.tensors_path(run / "checkpoints" / "best.json")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)


def _foreign_json(run):
    (run / "checkpoints" / "best.json").write_text('{"format": "something-else"}')


@pytest.mark.parametrize(
    ("damage", "message"),
    [(_corrupt_tensors, "is corrupt"), (_foreign_json, "not a khmer-correct checkpoint")],
)
def test_cli_rejects_a_damaged_checkpoint(kmcorrect, workspace, tmp_path, capsys, damage, message):
    run = tmp_path / "run"
    shutil.copytree(workspace / "runs" / "transformer" / "checkpoints", run / "checkpoints")
    damage(run)
    assert kmcorrect("--run-dir", run, "--data", workspace / "data") == 2
    error = capsys.readouterr().err
    assert error.startswith("kmcorrect eval: error: ") and message in error
    assert not (run / "eval").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "{tmp}/nowhere"], "data directory not found: {tmp}/nowhere"),
        (["--data", "{tmp}/empty"], "has no test split"),
        (["--data", "{tmp}/blank"], "{tmp}/blank/test.jsonl has no rows"),
        (["--data", "{tmp}/broken"], "{tmp}/broken/test.jsonl: not UTF-8 JSONL rows"),
        (["--run-dir", "{tmp}/no-run"], "checkpoint not found: {tmp}/no-run"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_cli_explains_bad_input(kmcorrect, workspace, tmp_path, capsys, arguments, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "test.jsonl").write_text("\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "test.jsonl").write_text('{"input": "ក", ')
    defaults = {"--run-dir": workspace / "runs" / "lstm", "--data": workspace / "data"}
    given = [argument.format(tmp=tmp_path) for argument in arguments]
    for flag, value in defaults.items():
        if flag not in given:
            given += [flag, value]
    assert kmcorrect(*given) == 2
    assert message.format(tmp=tmp_path) in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here, so it is no error")
def test_cli_names_the_cpu_fallback_when_cuda_is_missing(kmcorrect, workspace, capsys):
    code = kmcorrect("--run-dir", workspace / "runs" / "lstm", "--data", workspace / "data",
                     "--device", "cuda")  # fmt: skip
    assert code == 2
    assert "--device cpu" in capsys.readouterr().err
