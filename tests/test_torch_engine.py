"""The torch path: the runtime's decoders over `TorchEngine`, against torch-native greedy decoding
and against the exported graphs under onnxruntime."""

import random

import numpy as np
import pytest
import torch
from tiny import corrupt, pad
from tiny import torch_greedy_decode as torch_greedy

from runtime.decoding import aggressive_decode, greedy_decode
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from tests.conftest import KHMER_SENTENCES
from training import checkpoint
from training.models import build_model
from training.torch_engine import TorchEngine

MAX_LEN = 80


@pytest.fixture(scope="module")
def model(run_dir):
    return checkpoint.load(run_dir).model


@pytest.fixture(scope="module")
def engine(model):
    return TorchEngine(model)


@pytest.fixture(scope="module")
def batch(vocab):
    rng = random.Random(11)
    texts = [corrupt(s, rng) for s in KHMER_SENTENCES for _ in range(2)]
    texts += [*KHMER_SENTENCES[:3], "abc", "ក"]
    return pad([vocab.encode(t) for t in texts])


@pytest.fixture(scope="module")
def torch_greedy_out(engine, batch):
    return greedy_decode(engine, *batch, MAX_LEN)


def test_runtime_greedy_on_torch_is_torch_native_greedy(model, batch, torch_greedy_out):
    ids, mask = batch
    native = torch_greedy(model, torch.from_numpy(ids), torch.from_numpy(mask), MAX_LEN)
    assert [d.ids for d in torch_greedy_out] == native
    assert any(d.ids for d in torch_greedy_out)


@pytest.mark.parametrize("max_draft", [4, 64])
def test_aggressive_on_torch_is_greedy_on_torch(engine, batch, torch_greedy_out, max_draft):
    fast = aggressive_decode(engine, *batch, MAX_LEN, max_draft=max_draft)
    for g, a in zip(torch_greedy_out, fast, strict=True):
        assert a.ids == g.ids
        np.testing.assert_allclose(a.probs, g.probs, atol=1e-4)
    assert sum(d.passes for d in fast) < sum(d.passes for d in torch_greedy_out)


def test_torch_engine_matches_the_exported_fp32_graphs(artifact, engine, batch, torch_greedy_out):
    onnx = OnnxEngine(artifact, "fp32", threads=1)
    exported = greedy_decode(onnx, *batch, MAX_LEN)
    for t, o in zip(torch_greedy_out, exported, strict=True):
        assert t.ids == o.ids
        np.testing.assert_allclose(t.probs, o.probs, atol=1e-4)
    ids, mask = batch
    np.testing.assert_allclose(
        engine.substitution_logits(ids, mask), onnx.substitution_logits(ids, mask), atol=1e-4
    )


def test_engine_outputs_are_float32_numpy(engine, batch):
    ids, mask = batch
    cross = engine.encode(ids, mask)
    assert all(k.dtype == np.float32 and isinstance(v, np.ndarray) for k, v in cross)
    past = [(k[:, :, :0], v[:, :, :0]) for k, v in cross]
    tokens = np.full((len(ids), 1), engine.bos_id)
    logits, present = engine.decode(
        tokens, np.zeros_like(tokens), mask, np.ones_like(tokens, bool), cross, past
    )
    assert logits.dtype == np.float32 and logits.shape[:2] == (len(ids), 1)
    assert present[0][0].shape[2] == 1


@pytest.mark.parametrize("name", ["char_transformer", "char_lstm"])
def test_the_other_sequence_to_sequence_models_decode_as_torch_does(vocab, batch, name):
    """The CharTransformer, and the CharLSTM whose state `LSTMEngine` keeps in cache slots:
    the runtime's greedy and aggressive decoders on them give torch's own greedy output."""
    torch.manual_seed(0)
    model = build_model(name, len(vocab), "tiny").eval()
    engine = TorchEngine.of(model)
    ids, mask = batch
    native = torch_greedy(model, torch.from_numpy(ids), torch.from_numpy(mask), 12)
    assert any(native)
    assert [d.ids for d in greedy_decode(engine, ids, mask, 12)] == native
    assert [d.ids for d in aggressive_decode(engine, ids, mask, 12, max_draft=4)] == native
    with pytest.raises(UserError, match="AtomicMapper"):
        engine.substitution_logits(ids, mask)
