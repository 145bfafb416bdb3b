"""The gRPC service for real: a server on a loopback port, real clients, the tiny artifact."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving import Running, config
from tiny import corrupt

from runtime import server as server_module
from runtime.client import AsyncClient, Client
from runtime.net import free_port
from runtime.text import apply_spans
from tests.conftest import KHMER_SENTENCES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def running(artifact):
    server = Running(config(artifact, metrics_port=free_port(), max_queue_delay_us=20_000))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(running):
    with Client(running.target) as c:
        yield c


def test_correct_returns_text_and_spans_that_reproduce_it(client):
    damaged = corrupt(KHMER_SENTENCES[0], __import__("random").Random(3))
    result = client.correct(damaged)
    assert result.artifact_id
    assert apply_spans(damaged, result.spans) == result.text
    assert all(0.0 <= s.confidence <= 1.0 for s in result.spans)
    assert client.correct(damaged, spans=False).spans == []


def test_greedy_and_aggressive_give_the_same_text(client):
    rng = __import__("random").Random(4)
    for sentence in KHMER_SENTENCES[:4]:
        damaged = corrupt(sentence, rng)
        assert (
            client.correct(damaged, decoding="greedy").text
            == client.correct(damaged, decoding="aggressive").text
        )


def test_batch_and_stream_answer_in_order(client):
    texts = [corrupt(s, __import__("random").Random(i)) for i, s in enumerate(KHMER_SENTENCES)]
    singles = [client.correct(t).text for t in texts]
    assert [r.text for r in client.correct_batch(texts)] == singles
    assert [r.text for r in client.correct_stream(iter(texts * 3))] == singles * 3


def test_substitution_mode_keeps_length(client):
    text = KHMER_SENTENCES[1]
    assert len(client.correct(text, mode="substitution").text) == len(text)


def test_edge_inputs(client):
    assert client.correct("").text == ""
    assert client.correct("Hello, world 123!").text == "Hello, world 123!"
    emoji = "ភ្នំពេញ 🙂 ไทย"
    result = client.correct(emoji)
    assert "🙂" in result.text and "ไทย" in result.text


def test_text_over_the_limit_is_invalid_argument(client, running):
    limit = running.server.config.max_text_chars
    with pytest.raises(grpc.RpcError) as error:
        client.correct("ក" * (limit + 1))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(limit) in error.value.details()


def test_health_and_reflection(client, running):
    assert client.health() == "SERVING"
    assert client.health("khmer_correct.v1.Corrector") == "SERVING"
    with grpc.insecure_channel(running.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
    assert {"khmer_correct.v1.Corrector", "inference.GRPCInferenceService"} <= names
    assert "grpc.health.v1.Health" in names


def test_concurrent_load_forms_batches_seen_in_metrics(running):
    texts = [corrupt(s, __import__("random").Random(i)) for i, s in enumerate(KHMER_SENTENCES * 4)]

    async def burst():
        async with AsyncClient(running.target) as c:
            return await asyncio.gather(*(c.correct(t, decoding="greedy") for t in texts))

    results = asyncio.run(burst())
    assert len(results) == len(texts)
    port = running.server.config.metrics_port
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    count = _metric(page, 'khmer_correct_batch_size_count{model="khmer-correct"}')
    total = _metric(page, 'khmer_correct_batch_size_sum{model="khmer-correct"}')
    assert total / count > 1.0  # batches larger than 1 formed
    assert _metric(page, 'nv_inference_request_success_total{model="khmer-correct"}') >= len(texts)


def _metric(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException
client = tc.InferenceServerClient(sys.argv[1])
texts = json.loads(sys.argv[2])
out = {"live": client.is_server_live(), "ready": client.is_server_ready(),
       "model_ready": client.is_model_ready("khmer-correct"),
       "server": client.get_server_metadata(as_json=True),
       "model": client.get_model_metadata("khmer-correct", as_json=True)}
tensor = tc.InferInput("TEXT", [len(texts)], "BYTES")
tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
result = client.infer("khmer-correct", [tensor], outputs=[tc.InferRequestedOutput("CORRECTED")])
out["corrected"] = [b.decode() for b in result.as_numpy("CORRECTED")]
try:
    client.infer("no-such-model", [tensor])
except InferenceServerException as exc:
    out["unknown_model"] = exc.status()
print(json.dumps(out))
"""


def test_kserve_v2_through_the_real_triton_client(running, client):
    texts = [corrupt(s, __import__("random").Random(i)) for i, s in enumerate(KHMER_SENTENCES)]
    # tritonclient runs in its own interpreter: its protobuf descriptors and ours share names.
    done = subprocess.run(
        [sys.executable, "-c", TRITON_CLIENT, running.target, json.dumps(texts)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["live"] and out["ready"] and out["model_ready"]
    assert out["server"]["name"] == "khmer-correct"
    assert out["model"]["inputs"][0] == {"name": "TEXT", "datatype": "BYTES", "shape": ["-1"]}
    expected = [r.text for r in client.correct_batch(texts)]
    assert out["corrected"] == expected
    assert out["unknown_model"] == "StatusCode.NOT_FOUND"


def test_health_is_not_serving_until_the_model_is_loaded(artifact, monkeypatch):
    release = threading.Event()
    real_load = server_module.load_corrector

    def held_load(cfg):
        release.wait(30)
        return real_load(cfg)

    monkeypatch.setattr(server_module, "load_corrector", held_load)
    server = Running(config(artifact), wait=False)
    try:
        with Client(server.target) as c:
            assert c.health() == "NOT_SERVING"
            with pytest.raises(grpc.RpcError) as error:
                c.correct("ភ្នំពេញ")
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            release.set()
            server.started.result(60)
            assert c.health() == "SERVING"
    finally:
        release.set()
        server.stop()


def test_deadline_and_cancellation_leave_the_server_healthy(artifact):
    server = Running(config(artifact, max_batch_size=1))
    try:
        long_text = " ".join(KHMER_SENTENCES) * 3

        async def scenario():
            async with AsyncClient(server.target, timeout=None) as c:
                busy = [
                    asyncio.ensure_future(c.correct(long_text, decoding="greedy")) for _ in range(4)
                ]
                await asyncio.sleep(0.05)
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await AsyncClient(server.target, timeout=0.05).correct(long_text)
                assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                cancelled = asyncio.ensure_future(c.correct(long_text))
                await asyncio.sleep(0.05)
                cancelled.cancel()
                await asyncio.gather(*busy)
                return await c.correct(KHMER_SENTENCES[2])

        assert asyncio.run(scenario()).text
        deadline = time.monotonic() + 30
        while server.server.batcher.queued and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.server.batcher.queued == 0  # nothing left holding a queue place
    finally:
        server.stop()


def test_full_queue_is_resource_exhausted(artifact):
    server = Running(config(artifact, max_batch_size=1, max_queue_size=2))
    try:

        async def flood():
            async with AsyncClient(server.target) as c:
                calls = [
                    c.correct(KHMER_SENTENCES[i % 12] * 2, decoding="greedy") for i in range(24)
                ]
                return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = asyncio.run(flood())
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert refused and all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
        assert any(not isinstance(o, Exception) for o in outcomes)
    finally:
        server.stop()


def test_sigterm_drains_every_accepted_request(artifact):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kmcorrect",
            "serve",
            "--artifact",
            str(artifact.path),
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--variant",
            "fp32",
            "--max-batch-size",
            "4",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        target = f"127.0.0.1:{port}"
        with Client(target) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if c.health() == "SERVING":
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "server never became SERVING"
                time.sleep(0.1)
        texts = [
            corrupt(s, __import__("random").Random(i)) for i, s in enumerate(KHMER_SENTENCES * 3)
        ]

        async def load_then_term():
            async with AsyncClient(target) as c:
                calls = [asyncio.ensure_future(c.correct(t, decoding="greedy")) for t in texts]
                await asyncio.sleep(0.2)  # all sent and accepted, most still queued
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = asyncio.run(load_then_term())
        assert all(not isinstance(o, Exception) for o in outcomes), outcomes
        assert process.wait(60) == 0
        assert "draining" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
