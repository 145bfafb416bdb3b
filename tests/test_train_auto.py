"""`--batch-tokens auto`, the budget's progress bar and `kmcorrect monitor` on a live run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import config, pairs, write

from kmcorrect.cli import main
from training import checkpoint
from training.train import HEADROOM, MEMORY_LIMIT_ENV, row_tokens, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def data(tmp_path: Path, khmer_sentences: list[str]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rows = pairs(khmer_sentences)
    write(folder / "train.jsonl", rows * 5)
    write(folder / "val.jsonl", rows)
    return folder


def test_auto_takes_the_largest_batch_a_memory_cap_holds(data, tmp_path, monkeypatch):
    """The probe measures real steps (peaks grow with the rows); the choice fits the cap with
    headroom, the next larger probe did not; a looser cap gives a larger batch; --resume keeps
    the recorded choice whatever the cap is then."""
    chosen = {}
    for cap_mb in (5, 10_000):
        monkeypatch.setenv(MEMORY_LIMIT_ENV, str(cap_mb))
        run = tmp_path / f"run-{cap_mb}"
        cfg = config(data, run, batch_tokens="auto", epochs=1, max_steps=2)
        train(cfg)
        batch = checkpoint.load(run).meta["batch"]
        assert batch == json.loads((run / "run.json").read_text())["batch"]
        assert batch["method"] == "memory probe" and batch["limit_mb"] == cap_mb
        probes = sorted(batch["probes"], key=lambda p: p["rows"])
        peaks = [p["peak_mb"] for p in probes]
        assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks), probes
        rows = batch["batch_tokens"] // row_tokens(cfg)
        assert batch["batch_tokens"] == rows * row_tokens(cfg)
        for probe in probes:
            fits = probe["peak_mb"] <= HEADROOM * cap_mb
            assert fits == (probe["rows"] <= rows), (probe, rows)
        assert json.loads((run / "config.json").read_text())["batch_tokens"] == rows * 122
        chosen[cap_mb] = rows
    assert 1 <= chosen[5] < chosen[10_000] == 16  # --max-batch-rows bounds the loose cap

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "10000")
    run = tmp_path / "run-5"
    train(config(data, run, batch_tokens="auto", epochs=1, max_steps=4, resume=True))
    assert checkpoint.load(run).meta["train_config"]["batch_tokens"] == chosen[5] * 122


def test_auto_on_a_cpu_without_a_cap_takes_the_fastest_budget(data, tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    train(config(data, tmp_path / "run", batch_tokens="auto", epochs=1, max_steps=1))
    batch = json.loads((tmp_path / "run" / "run.json").read_text())["batch"]
    assert batch["method"] == "speed trial" and len(batch["trials"]) >= 2
    assert all(t["tokens_per_s"] > 0 for t in batch["trials"])
    fastest = max(batch["trials"], key=lambda t: t["tokens_per_s"])
    assert batch["batch_tokens"] == fastest["batch_tokens"]


def test_a_bad_batch_tokens_value_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--batch-tokens", "lots"])
    assert "neither a number nor auto" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_cuda_fits_the_card(data, tmp_path, monkeypatch):
    monkeypatch.delenv(MEMORY_LIMIT_ENV, raising=False)
    run = tmp_path / "run"
    train(config(data, run, batch_tokens="auto", epochs=1, max_steps=2, device="cuda"))
    status = json.loads((run / "run.json").read_text())
    assert status["device"]["type"] == "cuda" and status["batch"]["method"] == "memory probe"
    assert status["peak_mem_mb"] <= status["device"]["memory_mb"]


def test_the_progress_bar_shows_the_time_budget(data, tmp_path, capsys):
    train(config(data, tmp_path / "run", max_minutes=0.02, epochs=1000, progress=True))
    err = capsys.readouterr().err
    assert "budget" in err and "left" in err and "epoch 1/1000" in err, err[-500:]


def kmcorrect(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "kmcorrect", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_monitor_follows_a_live_run_and_exits_when_it_ends(data, tmp_path):
    run = tmp_path / "run"
    monitor = kmcorrect("monitor", str(run), "--watch", "--interval", "0.2")
    trainer = kmcorrect(
        *("train", "--model", "hybrid", "--preset", "tiny", "--data", str(data)),
        *("--run-dir", str(run), "--device", "cpu", "--max-minutes", "0.15", "--epochs", "1000"),
        *("--max-src-len", "60", "--max-tgt-len", "60", "--batch-tokens", "600"),
        *("--log-every", "1", "--val-every-minutes", "0.05", "--patience", "0", "--no-progress"),
    )
    try:
        trained, _ = trainer.communicate(timeout=300)
        watched, _ = monitor.communicate(timeout=60)
    finally:
        trainer.kill()
        monitor.kill()
    assert trainer.returncode == 0, trained
    assert monitor.returncode == 0, watched
    views = watched.split("\n\n")
    assert views[0] == f"{run}: waiting for the run to start"
    running = [v for v in views if v.startswith(f"{run}: running")]
    assert len(running) >= 3, watched  # redrawn while the run wrote
    assert "time budget 0:09" in running[-1] and "ends in ~" in running[-1]
    assert "val CER" in running[-1] and "tokens/s" in running[-1]
    final = [v for v in views if v.strip()][-1]
    assert final.startswith(f"{run}: finished (max_minutes)"), final
    assert "memory: peak" in final and "tokens/s over the run" in final
    steps = [
        int(line.split()[1].replace(",", ""))
        for line in watched.splitlines()
        if line.startswith("step ")
    ]
    assert steps == sorted(steps) and steps[-1] > steps[0]

    png = tmp_path / "run.png"
    started = time.monotonic()
    assert main(["monitor", str(run), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and time.monotonic() - started < 30


def test_monitor_of_no_run_is_one_line(tmp_path, capsys):
    assert main(["monitor", str(tmp_path / "nothing")]) == 2
    assert "no training run there" in capsys.readouterr().err
