"""Fuzzing with hostile Unicode: the in-process pipeline and every RPC, over real gRPC.

Each generated case must get exactly one answer, in valid UTF-8, with every character outside
the vocabulary kept in order (after the one documented normalization, whose removals of control
characters, ZWSP and BOM come back as spans), and spans that rebuild the answer from the input.
KMCORRECT_FUZZ_EXAMPLES sets the cases per test (`make soak` runs 2,000 per test).
"""

import os

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import Running, config
from strategies import hostile_text

from proto import corrector_pb2, corrector_pb2_grpc, kserve_pb2, kserve_pb2_grpc
from runtime.kserve_codec import pack_bytes, unpack_bytes
from runtime.server import load_corrector
from runtime.text import apply_spans, normalize
from runtime.text.spans import Span

EXAMPLES = int(os.environ.get("KMCORRECT_FUZZ_EXAMPLES", "60"))
TIMEOUT = 60  # seconds per RPC: a hang fails the case instead of the whole run
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
texts = st.lists(hostile_text(), min_size=1, max_size=6)


def check(vocab, text: str, answer: str, spans: list[Span] | None = None) -> None:
    answer.encode("utf-8")  # valid UTF-8: no lone surrogates
    foreign = [ch for ch in normalize(text) if ch not in vocab]
    assert [ch for ch in answer if ch not in vocab] == foreign
    if spans is not None:
        assert apply_spans(text, spans) == answer


def wire_spans(response: corrector_pb2.CorrectResponse) -> list[Span]:
    return [Span(s.start, s.end, s.replacement) for s in response.spans]


@pytest.fixture(scope="module")
def running(artifact):
    server = Running(config(artifact, max_queue_delay_us=1000))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def channel(running):
    with grpc.insecure_channel(running.target) as channel:
        yield channel


@pytest.fixture(scope="module")
def corrector(artifact):
    return load_corrector(config(artifact))


@fuzz
@given(texts)
def test_pipeline_in_process(corrector, batch):
    for text, result in zip(batch, corrector.correct(batch), strict=True):
        check(corrector.vocab, text, result.text, result.spans)


@fuzz
@given(hostile_text(), st.text(max_size=8))
def test_correct(channel, vocab, text, request_id):
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    request = corrector_pb2.CorrectRequest(text=text, id=request_id)
    response = stub.Correct(request, timeout=TIMEOUT)
    assert response.id == request_id
    check(vocab, text, response.text, wire_spans(response))


@fuzz
@given(texts)
def test_correct_batch(channel, vocab, batch):
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    request = corrector_pb2.CorrectBatchRequest(texts=batch)
    results = stub.CorrectBatch(request, timeout=TIMEOUT).results
    assert len(results) == len(batch)
    for text, response in zip(batch, results, strict=True):
        check(vocab, text, response.text, wire_spans(response))


@fuzz
@given(texts)
def test_correct_stream(channel, vocab, batch):
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    requests = [corrector_pb2.CorrectRequest(text=t, id=str(i)) for i, t in enumerate(batch)]
    responses = list(stub.CorrectStream(iter(requests), timeout=TIMEOUT))
    assert [r.id for r in responses] == [r.id for r in requests]  # one each, in order
    for text, response in zip(batch, responses, strict=True):
        check(vocab, text, response.text, wire_spans(response))


@fuzz
@given(texts)
def test_kserve_model_infer(channel, vocab, batch):
    stub = kserve_pb2_grpc.GRPCInferenceServiceStub(channel)
    tensor = kserve_pb2.ModelInferRequest.InferInputTensor(
        name="TEXT", datatype="BYTES", shape=[len(batch)]
    )
    request = kserve_pb2.ModelInferRequest(
        model_name="khmer-correct",
        inputs=[tensor],
        raw_input_contents=[pack_bytes([t.encode() for t in batch])],
    )
    response = stub.ModelInfer(request, timeout=TIMEOUT)
    assert list(response.outputs[0].shape) == [len(batch)]
    answers = [a.decode("utf-8") for a in unpack_bytes(response.raw_output_contents[0])]
    assert len(answers) == len(batch)
    for text, answer in zip(batch, answers, strict=True):
        check(vocab, text, answer)


HUNDRED_KB = {  # each about 100 KB of UTF-8 on one line
    "khmer": "ខ្ញុំស្រឡាញ់ភាសាខ្មែរ ",
    "ascii": "The quick brown fox. ",
    "emoji-nul-khmer": "😀\0ក្រុង👩\u200d👩\u200d👧",
    "combining-marks": "\u0301\u17c6\u17d2",
    "right-to-left": "\u202eשלום عربي\u202c ",
}


@pytest.mark.parametrize("name", HUNDRED_KB)
def test_hundred_kilobyte_lines(channel, vocab, name):
    unit = HUNDRED_KB[name]
    text = unit * (100_000 // len(unit.encode()))
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    response = stub.Correct(corrector_pb2.CorrectRequest(text=text), timeout=120)
    check(vocab, text, response.text, wire_spans(response))


def test_text_over_the_limit_is_refused_cleanly(channel):
    stub = corrector_pb2_grpc.CorrectorStub(channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Correct(corrector_pb2.CorrectRequest(text="ក" * 100_001), timeout=TIMEOUT)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit is 100000" in error.value.details()
