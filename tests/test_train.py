"""The trainer: overfitting, exact resume, checkpoints, bucketed batches, and its errors."""

from __future__ import annotations

import csv
import itertools
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kmcorrect.cli import main
from runtime.errors import UserError
from runtime.text import Vocab, chunk
from training import checkpoint
from training.batching import bucketed_batches, padded_tokens
from training.train import TrainConfig, clean_copies, load_split, train, validate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def damage(text: str, kind: int) -> str:
    """Simple versions of PDF extraction's damage (docs/design.md, "The problem, measured")."""
    middle = len(text) // 2
    if kind == 0:  # a space inside a word
        return text[:middle] + " " + text[middle:]
    if kind == 1:  # a dependent vowel dropped
        vowels = [i for i, ch in enumerate(text) if "\u17b6" <= ch <= "\u17c5"]
        return text[: vowels[0]] + text[vowels[0] + 1 :] if vowels else text + "ា"
    if kind == 2:  # the first cluster duplicated
        return text[:3] + text
    if kind == 3:  # a glyph without a Unicode mapping, as ASCII junk (same length)
        return text[:middle] + "$" + text[middle + 1 :]
    return text  # clean: left alone


def pairs(sentences: list[str], n: int = 20) -> list[dict]:
    """``n`` short pairs cut from the hand-written sentences, each with one kind of damage."""
    phrases = [p.strip() for s in sentences for p in chunk(s, 24) if len(p.strip()) >= 8]
    return [
        {"input": damage(p, i % 5), "target": p, "channel": "synthetic"}
        for i, p in enumerate(phrases[:n])
    ]


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


@pytest.fixture
def data(tmp_path: Path, khmer_sentences: list[str]) -> Path:
    """20 pairs; train repeats them 5 times so that an epoch has a few steps."""
    rows = pairs(khmer_sentences)
    assert len(rows) == 20
    folder = tmp_path / "data"
    folder.mkdir()
    write(folder / "train.jsonl", rows * 5)
    write(folder / "val.jsonl", rows)
    return folder


def config(data: Path, run_dir: Path, **changes) -> TrainConfig:
    settings = dict(
        model="hybrid",
        preset="tiny",
        data=str(data),
        run_dir=str(run_dir),
        batch_tokens=1200,
        max_batch_rows=16,
        max_src_len=60,
        max_tgt_len=60,
        lr=1e-2,
        warmup_steps=5,
        epochs=3,
        eval_rows=20,
        max_minutes=0,
        log_every=1,
        device="cpu",
        progress=False,
    )
    return TrainConfig(**{**settings, **changes})


def train_losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open() as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r["lr"]}


# --------------------------------------------------------------------------- training


def test_overfits_twenty_pairs(data: Path, tmp_path: Path):
    result = train(config(data, tmp_path / "run", epochs=40, patience=0))
    losses = train_losses(tmp_path / "run")
    assert result.stop == "epochs"
    assert max(list(losses.values())[-5:]) < 0.1, list(losses.values())[-5:]
    assert result.best_cer is not None and result.best_cer < 0.01
    assert result.best == tmp_path / "run" / "checkpoints" / "best.json"


def test_the_editor_overfits_twenty_pairs_validating_through_the_serving_collapse(
    data: Path, tmp_path: Path
):
    result = train(config(data, tmp_path / "run", model="editor", epochs=60, patience=0, lr=2e-2))
    assert result.stop == "epochs"
    meta = checkpoint.load(tmp_path / "run").meta
    board = meta["metrics"]["val"]
    assert result.best_cer is not None and result.best_cer < 0.2 * board["cer_before"], board


def test_clean_copies_are_train_targets_given_as_their_own_input(data: Path):
    vocab = Vocab.default()
    examples, _ = load_split(data / "train.jsonl", vocab, config(data, data))  # 100 rows, 20 texts
    targets = {e.target: e.tgt for e in examples}
    few = clean_copies(examples, 0.1, vocab, seed=0)
    assert len(few) == 10 and len({e.target for e in few}) == 10
    for copy in few:
        assert copy.input == copy.target and copy.src == vocab.encode(copy.target)
        assert copy.tgt == targets[copy.target]
    many = clean_copies(examples, 0.5, vocab, seed=0)  # 50 copies of 20 texts: 2 or 3 each
    counts = [sum(e.target == t for e in many) for t in targets]
    assert len(many) == 50 and min(counts) == 2 and max(counts) == 3
    assert clean_copies(examples, 0.1, vocab, seed=0) == few  # a resumed run finds the same rows
    assert clean_copies(examples, 0.1, vocab, seed=1) != few
    assert clean_copies(examples, 0.0, vocab, seed=0) == []


def test_validation_every_few_minutes_comes_back_to_the_same_batch(data: Path, tmp_path: Path):
    """A validation mid-epoch (here: after every step) neither skips nor repeats a batch."""
    result = train(config(data, tmp_path / "run", epochs=1, val_every_minutes=1e-6, patience=0))
    with (tmp_path / "run" / "metrics.csv").open() as f:
        validated = [int(r["step"]) for r in csv.DictReader(f) if r["val_cer"]]
    steps_per_epoch = len(train_losses(tmp_path / "run"))
    assert result.steps == steps_per_epoch == 8  # 100 rows and 15 clean copies
    assert validated == [1, 2, 3, 4, 5, 6, 7, 8]  # after each step, the last one the epoch's end


def test_validation_every_few_minutes_counts_the_budget_clock(
    data: Path, tmp_path: Path, monkeypatch
):
    """On the CPU clock, wall time that passes while the run does not (paused, or waiting for
    a shared core) makes no validation due: runs compared at equal CPU time are validated at
    equal CPU time. Here an hour of wall time passes at every look at the clock."""
    real, looks = time.monotonic, itertools.count()
    monkeypatch.setattr(time, "monotonic", lambda: real() + 3600 * next(looks))
    cfg = config(data, tmp_path / "run", epochs=1, val_every_minutes=1, patience=0)
    train(replace(cfg, budget_clock="cpu"))
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    validated = [int(r["step"]) for r in rows if r["val_cer"]]
    assert validated == [8]  # the epoch's end only: the run took far less than a CPU minute
    # metrics.csv gives every row on both clocks, so curves can be drawn at equal CPU time.
    assert all(float(r["budget_s"]) < 60 < float(r["elapsed_s"]) for r in rows)


def test_resume_continues_exactly(data: Path, tmp_path: Path):
    """Stopped after 7 steps (mid-epoch: 5 steps an epoch), resumed to 16: the same losses as
    one uninterrupted run. Dropout is on, so the RNG states must come back too."""
    changes = dict(epochs=4, dropout=0.2, save_every=3)
    whole = train(config(data, tmp_path / "whole", max_steps=16, **changes))
    train(config(data, tmp_path / "cut", max_steps=7, **changes))
    meta = checkpoint.load(tmp_path / "cut", "last").meta
    assert meta["progress"]["step"] == 7 and meta["progress"]["batch_index"] > 0
    resumed = train(config(data, tmp_path / "cut", max_steps=16, resume=True, **changes))
    assert whole.steps == resumed.steps == 16
    expected, got = train_losses(tmp_path / "whole"), train_losses(tmp_path / "cut")
    assert sorted(got) == list(range(1, 17))
    assert [got[s] for s in range(8, 17)] == pytest.approx([expected[s] for s in range(8, 17)])
    assert got[16] == expected[16]  # exactly, in fact


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_a_resumed_run_keeps_what_is_left_of_its_time_budget(data: Path, tmp_path: Path, clock):
    """A run that spent its budget, resumed with the same one, stops at once: resuming a killed
    run continues its budget (and its learning-rate schedule) instead of starting a new one."""
    budget = config(data, tmp_path / "run", epochs=10_000, patience=0, max_minutes=0.01)
    budget = replace(budget, budget_clock=clock)
    first = train(budget)
    assert first.stop == "max_minutes" and first.steps > 0
    progress = checkpoint.load(tmp_path / "run", "last").meta["progress"]
    assert progress["budget_used_s"] >= 0.6
    again = train(replace(budget, resume=True))
    assert again.stop == "max_minutes" and again.steps == first.steps


def test_resume_refuses_other_settings(data: Path, tmp_path: Path):
    train(config(data, tmp_path / "run", max_steps=2))
    with pytest.raises(UserError, match="lr="):
        train(config(data, tmp_path / "run", max_steps=4, lr=5e-3, resume=True))
    with pytest.raises(UserError, match="cannot be resumed as char_lstm"):
        train(config(data, tmp_path / "run", model="char_lstm", resume=True))
    with pytest.raises(UserError, match="--resume"):
        train(config(data, tmp_path / "run", max_steps=4))


def test_a_run_saved_before_clean_copies_resumes_without_them(data: Path, tmp_path: Path):
    train(config(data, tmp_path / "run", max_steps=2, clean_copies=0.0))
    last = tmp_path / "run" / "checkpoints" / "last.json"
    meta = json.loads(last.read_text(encoding="utf-8"))
    del meta["train_config"]["clean_copies"]  # as the trainer wrote it before the setting
    last.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(UserError, match=r"clean_copies=0\.0, not 0\.15"):
        train(config(data, tmp_path / "run", max_steps=4, resume=True))
    assert (
        train(config(data, tmp_path / "run", max_steps=4, clean_copies=0.0, resume=True)).steps == 4
    )


def test_negative_clean_copies_are_refused(data: Path, tmp_path: Path):
    with pytest.raises(UserError, match="--clean-copies must not be negative"):
        train(config(data, tmp_path / "run", clean_copies=-0.1))


def test_checkpoints_round_trip(data: Path, tmp_path: Path):
    result = train(config(data, tmp_path / "run", epochs=2, save_every=2))
    vocab = Vocab.default()
    cfg = config(data, tmp_path / "run")
    val_set, _ = load_split(data / "val.jsonl", vocab, cfg)
    for tag in ("best", "last"):
        ck = checkpoint.load(tmp_path / "run", tag)
        assert ck.model_name == "hybrid" and ck.vocab == vocab
        assert {"train_config", "progress", "metrics", "optimizer", "schedule"} <= set(ck.meta)
        assert any(k.startswith("optim.") for k in ck.tensors)
        assert "rng.cpu.0" in ck.tensors
        # The weights that were validated give the recorded CER and loss again.
        val_loss, board = validate(ck.model, val_set, vocab, cfg, torch.device("cpu"), None)
        assert board.cer_after == ck.meta["metrics"]["val_cer"]
        assert val_loss == pytest.approx(ck.meta["metrics"]["val_loss"], rel=1e-5)
    assert checkpoint.load(tmp_path / "run", "best").meta["progress"]["best_cer"] == result.best_cer
    written = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.json", "metrics.csv", "checkpoints"} <= written
    assert any(name.startswith("events.out.tfevents") for name in written)


# --------------------------------------------------------------------------- batches


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(0, 50), st.integers(2, 50)), min_size=1, max_size=300),
    max_rows=st.integers(1, 40),
    seed=st.integers(0, 3),
    epoch=st.integers(0, 3),
)
def test_bucketed_batches_cover_every_row_once_within_budget(lengths, max_rows, seed, epoch):
    budget = 150
    batches = bucketed_batches(
        lengths, max_tokens=budget, max_rows=max_rows, seed=seed, epoch=epoch, pool_batches=4
    )
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= max_rows
        assert padded_tokens(lengths, b) <= budget
    again = bucketed_batches(
        lengths, max_tokens=budget, max_rows=max_rows, seed=seed, epoch=epoch, pool_batches=4
    )
    assert again == batches


def test_bucketed_batches_keep_padding_small():
    rng = random.Random(0)
    lengths = [(n, n + rng.randint(-5, 5) + 2) for n in (rng.randint(10, 300) for _ in range(2000))]
    batches = bucketed_batches(lengths, max_tokens=4000, max_rows=64, seed=0, epoch=0)
    real = sum(s + t for s, t in lengths)
    padded = sum(padded_tokens(lengths, b) for b in batches)
    assert padded < 1.1 * real
    assert batches != bucketed_batches(lengths, max_tokens=4000, max_rows=64, seed=0, epoch=1)


# --------------------------------------------------------------------------- errors


def test_cuda_without_cuda_names_the_fallback(data, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="use --device cpu or auto"):
        train(config(data, tmp_path / "run", device="cuda"))


def test_missing_or_empty_data(tmp_path: Path):
    with pytest.raises(UserError, match=r"no training data at .*nowhere: run `make data` first"):
        train(config(tmp_path / "nowhere", tmp_path / "run"))
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty / "train.jsonl", [])
    write(empty / "val.jsonl", [{"input": "ក", "target": "ក"}])
    with pytest.raises(UserError, match=r"train\.jsonl: no rows"):
        train(config(empty, tmp_path / "run"))
    write(empty / "train.jsonl", [{"input": "ក" * 99, "target": "ក"}])  # all too long
    with pytest.raises(UserError, match="1 longer than"):
        train(config(empty, tmp_path / "run"))


def test_unknown_model_or_preset(data: Path, tmp_path: Path):
    with pytest.raises(UserError, match="unknown model 'gpt'"):
        train(config(data, tmp_path / "run", model="gpt"))
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        train(config(data, tmp_path / "run", preset="huge"))


def test_corrupt_or_foreign_checkpoint_on_resume(data: Path, tmp_path: Path):
    with pytest.raises(UserError, match="nothing to resume"):
        train(config(data, tmp_path / "run", resume=True))
    train(config(data, tmp_path / "run", max_steps=1))
    weights = checkpoint.tensors_path(tmp_path / "run" / "checkpoints" / "last.json")
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(UserError, match="corrupt"):
        train(config(data, tmp_path / "run", max_steps=2, resume=True))
    (tmp_path / "run" / "checkpoints" / "last.json").write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not a khmer-correct checkpoint"):
        train(config(data, tmp_path / "run", max_steps=2, resume=True))


# --------------------------------------------------------------------------- the CLI verb


def test_cli_trains_and_reports(data: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--data", str(data), "--run-dir", str(run)]
    argv += ["--max-steps", "3", "--eval-rows", "4", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and f"best checkpoint: {run / 'checkpoints' / 'best.json'}" in out
    assert main(["train", "--data", str(tmp_path / "nowhere")]) == 2
    assert "no training data at" in capsys.readouterr().err
