"""The editor served for real: a server on a loopback port, the tiny editor artifact, real
clients (ours and tritonclient), and the per-request confidence gate (`min_confidence`)."""

import asyncio
import json
import logging
import math
import os
import random
import subprocess
import sys

import grpc
import pytest
from serving import Running, config
from tiny import corrupt

from kmcorrect.cli import main
from proto import corrector_pb2, corrector_pb2_grpc, kserve_pb2, kserve_pb2_grpc
from runtime.client import AsyncClient, Client
from runtime.editing import Gate
from runtime.kserve_codec import pack_bytes, unpack_bytes
from runtime.pipeline import prepare
from runtime.server import load_corrector
from runtime.text import apply_spans, normalize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def running(editor_artifact):
    server = Running(config(editor_artifact, max_queue_delay_us=20_000))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(running):
    with Client(running.target) as c:
        yield c


@pytest.fixture(scope="module")
def corrector(editor_artifact):
    """The same artifact and variant in this process: what every answer must equal."""
    return load_corrector(config(editor_artifact))


@pytest.fixture(scope="module")
def texts(khmer_sentences):
    """Damaged sentences (two kinds of damage each), and the clean ones."""
    rng = random.Random(7)
    damaged = [corrupt(s, rng) for s in khmer_sentences for _ in range(2)]
    return [*damaged, *khmer_sentences]


def local(corrector, texts, min_confidence=None) -> list[str]:
    return [c.text for c in corrector.correct(texts, min_confidence=min_confidence)]


def strongest_edit(corrector, text: str) -> float:
    """The highest confidence of any edit the editor proposes in ``text`` (0 when none)."""
    pieces = prepare(text, corrector.vocab, corrector.max_src_len).model_inputs
    plans = corrector.plan(pieces) if pieces else []
    return max((r.confidence for plan in plans for r in plan.regions), default=0.0)


def test_the_gate_matters_on_these_texts(corrector, texts):
    """The premise of the tests below: the tiny editor edits some of these texts, and whether
    it does depends on the threshold."""
    assert corrector.is_editor
    ungated, closed = local(corrector, texts, 0.0), local(corrector, texts, 1.0)
    assert ungated != closed
    assert any(a != normalize(t) for a, t in zip(ungated, texts, strict=True))
    # At 1.0 an edit survives only at confidence exactly 1.0: elsewhere the input stands.
    for text, answer in zip(texts, closed, strict=True):
        if strongest_edit(corrector, text) < 1.0:
            assert answer == normalize(text)


def test_every_rpc_answers_what_the_artifact_answers_in_process(client, corrector, texts):
    for gate in (None, 0.0, 1.0):
        expected = local(corrector, texts, gate)
        assert [client.correct(t, min_confidence=gate).text for t in texts] == expected
        assert [r.text for r in client.correct_batch(texts, min_confidence=gate)] == expected
        stream = client.correct_stream(iter(texts), min_confidence=gate)
        assert [r.text for r in stream] == expected


def test_default_is_the_calibrated_gate(client, corrector, editor_artifact, texts):
    calibrated = Gate.of_settings(editor_artifact.manifest["gate"], corrector.gate.space_id)
    assert corrector.gate == calibrated
    expected = local(corrector, texts)  # unset: the corrector's gate, the calibrated one
    # Unset is not 0 (proto3 optional): at 0 the tiny editor applies edits the calibrated gate
    # turns down, so a server reading an unset field as 0 would fail here.
    assert expected != local(corrector, texts, 0.0)
    assert [r.text for r in client.correct_batch(texts)] == expected
    assert [client.correct(t).text for t in texts] == expected


def test_gated_answers_keep_their_spans_consistent(client, texts):
    for gate in (0.0, 1.0):
        for text in texts[:6]:
            result = client.correct(text, min_confidence=gate)
            assert apply_spans(text, result.spans) == result.text
            assert all(0.0 <= s.confidence <= 1.0 for s in result.spans)


def test_async_client_takes_the_gate(running, corrector, texts):
    async def calls(gate):
        async with AsyncClient(running.target) as c:
            singles = await asyncio.gather(*(c.correct(t, min_confidence=gate) for t in texts))
            batch = await c.correct_batch(texts, min_confidence=gate)
            stream = [r async for r in c.correct_stream(iter(texts), min_confidence=gate)]
        return [[r.text for r in results] for results in (singles, batch, stream)]

    for gate in (0.0, 1.0):
        expected = local(corrector, texts, gate)
        assert asyncio.run(calls(gate)) == [expected] * 3


@pytest.mark.parametrize("gate", [1.5, -0.1, math.nan, math.inf])
def test_out_of_range_gate_is_invalid_argument(client, texts, gate):
    calls = [
        lambda: client.correct(texts[0], min_confidence=gate),
        lambda: client.correct_batch(texts[:2], min_confidence=gate),
        lambda: list(client.correct_stream(iter(texts[:2]), min_confidence=gate)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "min_confidence" in error.value.details()


def test_unset_differs_from_zero_on_the_wire():
    assert not corrector_pb2.Options().HasField("min_confidence")
    assert corrector_pb2.Options(min_confidence=0.0).HasField("min_confidence")


TRITON_CLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException
client = tc.InferenceServerClient(sys.argv[1])
texts = json.loads(sys.argv[2])
tensor = tc.InferInput("TEXT", [len(texts)], "BYTES")
tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
out = {"model": client.get_model_metadata("khmer-correct", as_json=True)}
def infer(name, **parameters):
    try:
        result = client.infer("khmer-correct", [tensor], parameters=parameters or None)
        out[name] = [b.decode() for b in result.as_numpy("CORRECTED")]
    except InferenceServerException as exc:
        out[name] = {"status": exc.status(), "message": exc.message()}
infer("default")
infer("zero", min_confidence=0.0)
infer("one", min_confidence=1.0)
infer("int_zero", min_confidence=0)
infer("int_one", min_confidence=1)
infer("above", min_confidence=1.5)
infer("below", min_confidence=-0.1)
infer("string", min_confidence="0.5")
infer("bool", min_confidence=True)
print(json.dumps(out))
"""


def test_kserve_model_infer_takes_the_gate_through_tritonclient(running, corrector, texts):
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
    assert out["default"] == local(corrector, texts)
    assert out["zero"] == out["int_zero"] == local(corrector, texts, 0.0)
    assert out["one"] == out["int_one"] == local(corrector, texts, 1.0)
    assert out["zero"] != out["one"]
    for name in ("above", "below", "string", "bool"):
        assert out[name]["status"] == "StatusCode.INVALID_ARGUMENT", out[name]
        assert "min_confidence" in out[name]["message"]
    assert out["model"]["inputs"][0]["name"] == "TEXT"


def _infer_request(texts, parameter: kserve_pb2.InferParameter | None):
    tensor = kserve_pb2.ModelInferRequest.InferInputTensor(
        name="TEXT", datatype="BYTES", shape=[len(texts)]
    )
    request = kserve_pb2.ModelInferRequest(
        model_name="khmer-correct",
        inputs=[tensor],
        raw_input_contents=[pack_bytes([t.encode() for t in texts])],
    )
    if parameter is not None:
        request.parameters["min_confidence"].CopyFrom(parameter)
    return request


def test_kserve_parameter_types_on_our_stub(running, corrector, texts):
    with grpc.insecure_channel(running.target) as channel:
        stub = kserve_pb2_grpc.GRPCInferenceServiceStub(channel)

        def infer(parameter):
            response = stub.ModelInfer(_infer_request(texts, parameter), timeout=60)
            return [e.decode() for e in unpack_bytes(response.raw_output_contents[0])]

        assert infer(kserve_pb2.InferParameter(double_param=1.0)) == local(corrector, texts, 1.0)
        assert infer(None) == local(corrector, texts)
        for bad in (
            kserve_pb2.InferParameter(double_param=1.5),
            kserve_pb2.InferParameter(double_param=-0.1),
            kserve_pb2.InferParameter(double_param=math.nan),
            kserve_pb2.InferParameter(int64_param=2),
            kserve_pb2.InferParameter(uint64_param=1),
            kserve_pb2.InferParameter(),  # no value at all
        ):
            with pytest.raises(grpc.RpcError) as error:
                infer(bad)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert "min_confidence" in error.value.details()


def test_domain_stub_without_options_uses_the_calibrated_gate(running, corrector, texts):
    with grpc.insecure_channel(running.target) as channel:
        stub = corrector_pb2_grpc.CorrectorStub(channel)
        response = stub.CorrectBatch(corrector_pb2.CorrectBatchRequest(texts=texts), timeout=60)
    assert [r.text for r in response.results] == local(corrector, texts)


def test_cli_in_process_takes_the_gate(editor_artifact, corrector, texts):
    artifact = str(editor_artifact.path)
    command = [sys.executable, "-m", "kmcorrect", "correct", "--artifact", artifact]

    def kmcorrect(*flags):
        return subprocess.run(
            [*command, "--variant", "fp32", *flags],
            input="\n".join(texts) + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )

    done = kmcorrect("--min-confidence", "1.0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == local(corrector, texts, 1.0)
    refused = kmcorrect("--min-confidence", "1.5")
    assert refused.returncode == 2
    assert "--min-confidence must be between 0 and 1" in refused.stderr


def test_cli_against_the_server_takes_the_gate(running, corrector, texts, tmp_path, capsys):
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    for gate in ("0", "1"):
        argv = ["--server", running.target, "--input", str(lines), "--min-confidence", gate]
        code = main(["correct", *argv])
        out = capsys.readouterr().out
        assert code == 0
        assert out.split("\n")[:-1] == local(corrector, texts, float(gate))
    assert main(["correct", "--server", running.target, "--min-confidence", "nan"]) == 2
    assert "--min-confidence" in capsys.readouterr().err


def test_cli_on_an_editor_run_directory_takes_the_gate(editor_run_dir, texts, tmp_path, capsys):
    from training import checkpoint
    from training.torch_engine import checkpoint_corrector

    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(texts) + "\n", encoding="utf-8")
    expected = checkpoint_corrector(checkpoint.load(editor_run_dir), min_confidence=1.0)
    run_dir, gate = ["--run-dir", str(editor_run_dir)], ["--min-confidence", "1"]
    code = main(["correct", *run_dir, "--input", str(lines), *gate])
    assert code == 0
    assert capsys.readouterr().out.split("\n")[:-1] == local(expected, texts)


def test_startup_log_names_the_calibrated_gate(editor_artifact, caplog):
    calibrated = Gate.of_settings(editor_artifact.manifest["gate"], None)
    with caplog.at_level(logging.INFO, logger="kmcorrect.server"):
        server = Running(config(editor_artifact))
        server.stop()
    [line] = [r for r in caplog.records if r.getMessage().startswith("serving artifact")]
    assert f"gate: {calibrated.describe()}" in line.getMessage()
    assert line.gate == calibrated.settings() and line.model == "editor"
