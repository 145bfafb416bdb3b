"""The CTranslate2 peer on a tiny trained CharTransformer: the converter is exact (CTranslate2's
greedy output is ours, torch and onnxruntime alike), and the suite reports both contenders."""

import json
import random
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import KHMER_SENTENCES
from tiny import EXPORT_CONFIG, corrupt, pad

from benchmarks import ctranslate2_peer as peer
from benchmarks.common import BenchContext
from runtime.decoding import greedy_decode
from runtime.engines.onnx import OnnxEngine
from training import checkpoint
from training.torch_engine import TorchEngine

# The `bench` extra (pip install -e '.[bench]').
ctranslate2 = pytest.importorskip("ctranslate2")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def ct_run(char_transformer_run_dir):
    return char_transformer_run_dir


@pytest.fixture(scope="module")
def ct_artifact(ct_run, data_dir, tmp_path_factory):
    from export.build import export_artifact

    out = tmp_path_factory.mktemp("artifacts") / "tiny-char-transformer"
    config = replace(EXPORT_CONFIG, variants=("fp32",), verify_rows=40)
    return export_artifact(ct_run, out, config, data=data_dir, log=lambda _: None)


def test_ctranslate2_greedy_is_ours(ct_run, ct_artifact, vocab, tmp_path):
    model_dir = peer.convert(ct_run, tmp_path / "ct2", max_positions=400)
    translator = ctranslate2.Translator(str(model_dir), intra_threads=1)
    engines = {
        "torch": TorchEngine.from_checkpoint(ct_run),
        "onnx": OnnxEngine(ct_artifact, "fp32", threads=1),
    }
    tokens = peer.tokens_of(vocab)
    index = {token: i for i, token in enumerate(tokens)}
    inputs = [corrupt(s, random.Random(i)) for i, s in enumerate(KHMER_SENTENCES)]
    inputs += ["ខ្ញុំ", "ភ្នំពេ ញ", "ក"]
    # Batches of one and of several (padded sources); the service's max_len lets the rows the
    # model repairs end at their eos, a short one cuts every row at max_len.
    ended = 0
    for size, max_len in ((1, None), (5, None), (4, 6)):
        for start in range(0, len(inputs), size):
            chunk = [vocab.encode(text) for text in inputs[start : start + size]]
            src, mask = pad(chunk)
            limit = max_len or int(1.5 * src.shape[1]) + 10
            results = translator.translate_batch(
                [[tokens[t] for t in ids] for ids in chunk],
                beam_size=1,
                max_decoding_length=limit,
                min_decoding_length=0,
                max_input_length=0,
            )
            theirs = [[index[t] for t in r.hypotheses[0]] for r in results]
            for name, engine in engines.items():
                ours = [d.ids for d in greedy_decode(engine, src, mask, limit)]
                assert theirs == ours, (name, size, max_len, start)
            ended += sum(len(ids) < limit for ids in theirs)
    assert ended >= len(KHMER_SENTENCES)


def test_suite_reports_both_contenders(ct_run, ct_artifact, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(peer, "CACHE", tmp_path / "cache")
    ctx = BenchContext(ct_artifact.path, data_dir, ct_run, threads=1, log=lambda _: None)
    section = peer.run(ctx, rows=12, repeats=2, batch_sizes=(1, 4), warmup=1)

    json.dumps(section)  # JSON-able, as the orchestrator writes it
    assert section["config"]["rows"] == 12 and section["conversion"]["cached"] is False
    for batch in ("1", "4"):
        identity = section["identity"][batch]
        assert identity["identical_rows"] == identity["rows"] == 12
        assert identity["aggressive_differs_from_greedy"] == 0
        for name in peer.CONTENDERS:
            speed = section["speed"][batch][name]
            assert 0 < speed["chars_per_s"]["min"] <= speed["chars_per_s"]["max"]
            assert speed["latency_ms"]["p50"]["median"] > 0
    targets = section["targets"]
    assert [t["target"].split(" ")[0] for t in targets] == ["CTranslate2", "ours", "ours"]
    assert targets[0]["met"] is True and all(isinstance(t["met"], bool) for t in targets)

    text = peer.markdown(section)
    assert "CTranslate2 greedy" in text and "| 1 | 12/12 (100.0%)" in text
    assert peer.plots(section, tmp_path / "plots") == ["ctranslate2.png"]
    assert (tmp_path / "plots" / "ctranslate2.png").stat().st_size > 0
    info = ct_run / "checkpoints" / "best.json"
    sha = json.loads(info.read_text("utf-8"))["sha256"]
    positions = section["conversion"]["max_positions"]
    assert peer._converted(info, sha, positions, print)[1]["cached"] is True


def test_suite_without_a_char_transformer_says_so(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(peer, "load_artifact", lambda _: SimpleNamespace(model_name="hybrid"))
    ctx = BenchContext(tmp_path, data_dir, None, threads=1, log=lambda _: None)
    section = peer.run(ctx)
    assert section == {"suite": "ctranslate2", "not_run": peer.NOT_RUN, "targets": []}
    assert peer.NOT_RUN in peer.markdown(section)
    assert peer.plots(section, tmp_path) == []


def test_position_table_is_our_sinusoid(ct_run, vocab):
    """The one thing written as a table rather than a flag: our positions, row for row."""
    model = checkpoint.load(ct_run).model
    spec = peer.model_spec(model, vocab, max_positions=64)
    table = spec.encoder.position_encodings.encodings
    positions = np.array([0, 1, 7, 63])
    expected = model.positions(torch.from_numpy(positions)[None])[0].numpy()
    np.testing.assert_array_equal(table[positions], expected)
