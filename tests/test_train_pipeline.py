"""`kmcorrect pipeline` (`make pipeline`): corpus to verified artifact and engine benchmarks,
each step once, one log, stopping at the first failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_train import pairs, write

from runtime.artifact import load_artifact

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    *("--model", "hybrid", "--preset", "tiny", "--device", "cpu", "--no-progress"),
    *("--max-src-len", "60", "--max-tgt-len", "60", "--batch-tokens", "600", "--lr", "1e-2"),
    *("--max-steps", "30", "--epochs", "1000", "--patience", "0", "--eval-rows", "10"),
    "--data-args=--no-progress --workers 1 --seed 3",  # 3 test and 2 val targets of the 29
    "--eval-args=--limit 10",
    "--export-args=--variants fp32 --verify-rows 10",
]
# The engines suite takes minutes on a CPU even for the tiny model, so the test skips it.


def pipeline(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kmcorrect", "pipeline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_pipeline_ends_with_a_verified_artifact_then_skips_what_is_done(tmp_path, khmer_sentences):
    corpus = tmp_path / "pairs.jsonl"
    write(corpus, pairs(khmer_sentences, 29) * 5)  # pairs pass the data step through, split
    args = ["--corpus", str(corpus), "--data", "data/tiny", *TINY, "--skip", "bench"]
    done = pipeline(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run, artifact = tmp_path / "runs" / "hybrid-tiny", tmp_path / "artifacts" / "hybrid-tiny"
    load_artifact(artifact)  # every file as its manifest says
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["verification"]["variants"]["fp32"]["verified"]
    assert json.loads((run / "run.json").read_text())["state"] == "finished"
    assert (run / "eval" / "test" / "report.json").is_file()
    log = (run / "pipeline.log").read_text()
    for step in ("data", "train", "eval", "export"):
        assert f"] {step}: kmcorrect {step} " in log, step
    assert "] bench: skipped (--skip)" in log
    assert "stopped (max_steps) after 30 steps" in log  # the steps' own output, in the one log
    assert f"done: artifact {Path('artifacts/hybrid-tiny')} (fp32 verified" in done.stdout

    again = pipeline(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    skipped = [line for line in again.stdout.splitlines() if ": skipped, " in line]
    assert len(skipped) == 4, again.stdout  # and bench, by --skip


def test_the_first_failing_step_stops_the_pipeline_with_one_line(tmp_path):
    done = pipeline("--corpus", "missing.txt", "--data", "data/x", *TINY, cwd=tmp_path)
    assert done.returncode == 2
    assert "corpus not found" in done.stdout
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("kmcorrect pipeline: error: step data failed (exit status 2)"), error
    assert "train:" not in done.stdout
    assert (
        "data: failed with exit status 2" in (tmp_path / "runs/hybrid-x/pipeline.log").read_text()
    )


def test_make_pipeline_runs_the_verb() -> None:
    dry = subprocess.run(
        ["make", "-n", "pipeline", "PYTHON=python3"], cwd=ROOT, capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "-m kmcorrect pipeline --model editor --data data/default" in dry.stdout
