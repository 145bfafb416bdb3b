"""Faults, for real: an engine that fails one batch, callers that give up while their batch
computes, an artifact that is missing or tampered with at start, training killed with SIGKILL."""

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from serving import Running, config

from runtime import server as server_module
from runtime.client import AsyncClient, Client
from runtime.config import ServeConfig
from tests.conftest import KHMER_SENTENCES
from tests.test_train import pairs, write
from training import checkpoint

ROOT = Path(__file__).resolve().parents[1]
POISON = "ពុលពុលពុល"  # a model piece holding this makes the engine raise


class FaultyEngine:
    """The real corrector's batch function, recorded, with two faults to inject: a batch that
    holds POISON raises, and `hold` keeps every batch from finishing until it is cleared."""

    def __init__(self, corrector) -> None:
        self.run_batch = corrector.run_batch
        self.batches: list[list[str]] = []
        self.computing = threading.Event()  # set once a batch is inside the engine
        self.hold = threading.Event()
        self.hold.set()
        corrector.run_batch = self

    def __call__(self, jobs):
        self.batches.append([job.text for job in jobs])
        self.computing.set()
        self.hold.wait(30)
        if any(POISON in job.text for job in jobs):
            raise RuntimeError("injected engine failure")
        return self.run_batch(jobs)


@pytest.fixture
def faulty(artifact, monkeypatch):
    """A server whose engine is wrapped in a FaultyEngine; yields (server, engine)."""
    engines = []
    real_load = server_module.load_corrector

    def load(cfg):
        corrector = real_load(cfg)
        engines.append(FaultyEngine(corrector))
        return corrector

    monkeypatch.setattr(server_module, "load_corrector", load)
    running = Running(config(artifact, max_batch_size=8, max_queue_delay_us=200_000))
    engine = engines[0]
    engine.batches.clear()  # forget the warm-up
    engine.computing.clear()
    yield running, engine
    engine.hold.set()
    running.stop()


def test_an_engine_exception_fails_only_its_batch(faulty):
    running, engine = faulty
    texts = [*KHMER_SENTENCES[:6], f"{KHMER_SENTENCES[6]} {POISON}"]

    async def send():
        async with AsyncClient(running.target) as c:
            return await asyncio.gather(*(c.correct(t) for t in texts), return_exceptions=True)

    outcomes = asyncio.run(send())
    failed_batches = [b for b in engine.batches if any(POISON in t for t in b)]
    assert len(failed_batches) == 1
    for text, outcome in zip(texts, outcomes, strict=True):
        if any(piece in text for piece in failed_batches[0]):
            assert isinstance(outcome, grpc.aio.AioRpcError), text
            assert outcome.code() == grpc.StatusCode.INTERNAL
            assert "injected engine failure" in outcome.details()
        else:
            assert not isinstance(outcome, Exception), outcome
            assert outcome.text
    metrics = running.server.state.metrics
    internal = metrics.failure.labels(metrics.model, "internal")._value.get()
    assert internal == sum(isinstance(o, Exception) for o in outcomes) >= 1
    with Client(running.target) as c:  # still serving, and says so
        assert c.health() == "SERVING"
        assert c.correct(KHMER_SENTENCES[7]).text
        with pytest.raises(grpc.RpcError) as error:
            c.correct(POISON)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert c.correct_batch(KHMER_SENTENCES[8:10])[1].text
        assert c.health() == "SERVING"


def test_callers_giving_up_in_the_middle_of_a_batch(faulty):
    """A batch of three is inside the engine when one caller cancels and another's deadline
    passes: the third still gets its answer, and nothing is left holding a queue place."""
    running, engine = faulty
    engine.hold.clear()

    async def scenario():
        async with AsyncClient(running.target, timeout=None) as c:
            kept = asyncio.ensure_future(c.correct(KHMER_SENTENCES[0]))
            cancelled = asyncio.ensure_future(c.correct(KHMER_SENTENCES[1]))
            async with AsyncClient(running.target, timeout=1.0) as hurried:
                expiring = asyncio.ensure_future(hurried.correct(KHMER_SENTENCES[2]))
                await asyncio.to_thread(engine.computing.wait, 10)
                assert len(engine.batches) == 1 and len(engine.batches[0]) == 3, engine.batches
                cancelled.cancel()
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await expiring
                assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            engine.hold.set()
            with pytest.raises(asyncio.CancelledError):
                await cancelled
            return await kept

    assert asyncio.run(scenario()).text
    deadline = time.monotonic() + 10
    while running.server.batcher.queued and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server.batcher.queued == 0
    with Client(running.target) as c:
        assert c.health() == "SERVING"
        assert c.correct(KHMER_SENTENCES[3]).text


# --------------------------------------------------------------------------- bad artifacts


def _serve(artifact_path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "kmcorrect", "serve", "--artifact", str(artifact_path)]
    command += ["--port", "0", "--metrics-port", "0", "--variant", "fp32"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tampered(artifact, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(artifact.path, copy)
    graph = copy / "decoder.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("which", ["missing", "tampered"])
def test_a_bad_artifact_exits_non_zero_with_a_clear_log(which, tampered, tmp_path):
    path = tmp_path / "nowhere" if which == "missing" else tampered
    result = _serve(path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if '"level": "error"' in line]
    assert len(errors) == 1, result.stderr
    assert "cannot serve" in errors[0]
    assert ("decoder.onnx" if which == "tampered" else "nowhere") in errors[0]


def test_health_stays_not_serving_when_the_artifact_is_tampered(tampered):
    running = Running(ServeConfig(artifact=str(tampered), port=0, metrics_port=0), wait=False)
    try:
        assert "decoder.onnx" in str(running.started.exception(60))
        with Client(running.target) as c:
            assert c.health() == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as error:
                c.correct(KHMER_SENTENCES[0])
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


# --------------------------------------------------------------------------- training


def _train(data: Path, run: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "kmcorrect", "train", "--model", "hybrid"]
    command += ["--preset", "tiny", "--data", str(data), "--run-dir", str(run)]
    command += ["--device", "cpu", "--no-progress", "--save-every", "1", "--log-every", "1"]
    command += ["--batch-tokens", "1200", "--max-batch-rows", "16", "--eval-rows", "4"]
    command += ["--max-src-len", "60", "--max-tgt-len", "60", "--max-minutes", "0", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _saved_step(run: Path) -> int:
    try:
        return checkpoint.load(run, "last").meta["progress"]["step"]
    except Exception:  # not written yet
        return 0


def test_training_killed_with_sigkill_resumes(khmer_sentences, tmp_path):
    """Killed three times at random moments (checkpoints are saved every step, so most kills
    land near or inside a save), each time the last checkpoint loads and --resume goes on."""
    rows = pairs(khmer_sentences)
    data = tmp_path / "data"
    data.mkdir()
    write(data / "train.jsonl", rows * 5)  # 100 rows: a few steps an epoch
    write(data / "val.jsonl", rows)
    run = tmp_path / "run"
    rng = random.Random(0)
    killed_at, mid_epoch = [], []
    for attempt in range(3):
        process = _train(data, run, "--epochs", "100", *(["--resume"] if attempt else []))
        before = killed_at[-1] if killed_at else 0
        deadline = time.monotonic() + 120
        while _saved_step(run) < before + 3:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        last = checkpoint.load(run, "last")  # verified: the JSON names intact tensors
        killed_at.append(last.meta["progress"]["step"])
        mid_epoch.append(last.meta["progress"]["batch_index"] > 0)
        assert killed_at[-1] >= before + 3
        assert len(list((run / "checkpoints").glob("last.*.safetensors"))) <= 2
    assert any(mid_epoch), "no kill landed mid-epoch"
    finish = killed_at[-1] + 4
    process = _train(data, run, "--epochs", "100", "--resume", "--max-steps", str(finish))
    assert process.wait(120) == 0, process.stderr.read()
    assert checkpoint.load(run, "last").meta["progress"]["step"] == finish
    assert [p.name for p in (run / "checkpoints").glob("last.*.safetensors")] == [
        checkpoint.tensors_path(run / "checkpoints" / "last.json").name
    ]
    assert not list((run / "checkpoints").glob(".*.tmp"))
