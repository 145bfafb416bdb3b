"""`load_artifact` trusts nothing it cannot verify; `OnnxEngine` picks providers explicitly."""

from __future__ import annotations

import json
import shutil

import onnxruntime as ort
import pytest
import torch

from export.build import export_artifact
from export.config import ExportConfig
from runtime.artifact import load_artifact, sha256_file
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.text import Vocab
from training import checkpoint
from training.models import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A randomly initialised tiny char_transformer, exported fp32 + int8 (short and quick)."""
    vocab = Vocab.default()
    torch.manual_seed(0)
    model = build_model("char_transformer", len(vocab), "tiny").eval()
    run = tmp_path_factory.mktemp("runs") / "tiny-transformer"
    checkpoint.save(run, "best", model_name="char_transformer", model=model, vocab=vocab, meta={})
    config = ExportConfig(
        max_src_len=24,
        max_tgt_len=24,
        variants=("fp32", "int8"),
        verify_rows=24,
        max_cer_change=1.0,  # random weights on random strings: int8 parity is not the point
    )
    out = tmp_path_factory.mktemp("artifacts") / "tiny-transformer"
    return export_artifact(run, out, config, log=lambda _: None).path


@pytest.fixture
def artifact_dir(exported, tmp_path):
    """A private copy to tamper with."""
    return shutil.copytree(exported, tmp_path / "artifact")


def test_loads_a_verified_artifact(artifact_dir):
    artifact = load_artifact(artifact_dir)
    assert artifact.model_name == "char_transformer"
    assert artifact.vocab == Vocab.default()
    assert set(artifact.graphs) == {"encoder", "decoder"}  # no mapper outside the hybrid
    assert artifact.variants == ["fp32", "int8"]
    assert artifact.graph_path("decoder", "int8").name == "decoder.int8.onnx"
    with pytest.raises(UserError, match="no fp16 decoder graph"):
        artifact.graph_path("decoder", "fp16")
    with pytest.raises(UserError, match="no mapper graph"):
        OnnxEngine(artifact).substitution_logits(None, None)


def test_flipped_byte_is_refused_naming_the_file(artifact_dir):
    path = artifact_dir / "decoder.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"decoder\.onnx: sha256 does not match manifest\.json"):
        load_artifact(artifact_dir)


def test_missing_file_is_refused(artifact_dir):
    (artifact_dir / "encoder.int8.onnx").unlink()
    with pytest.raises(UserError, match=r"encoder\.int8\.onnx: missing"):
        load_artifact(artifact_dir)


def test_edited_manifest_is_refused(artifact_dir):
    path = artifact_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["limits"]["max_src_len"] = 4096
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(UserError, match="edited after export"):
        load_artifact(artifact_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not a khmer-correct artifact"),
        ("{not json", "unreadable JSON"),
        ('{"format": "something-else"}', "not a khmer-correct artifact manifest"),
    ],
)
def test_missing_or_foreign_manifest_is_refused(artifact_dir, content, message):
    path = artifact_dir / "manifest.json"
    if content is None:
        path.unlink()
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_artifact(artifact_dir)


def test_engine_plans_are_verified_too(artifact_dir):
    engines = artifact_dir / "engines" / "some-gpu"
    engines.mkdir(parents=True)
    (engines / "decoder.plan").write_bytes(b"plan")
    info = {"tensorrt": "11.4", "files": {"decoder.plan": sha256_file(engines / "decoder.plan")}}
    (engines / "engine.json").write_text(json.dumps(info), encoding="utf-8")
    assert load_artifact(artifact_dir).engines["some-gpu"]["tensorrt"] == "11.4"
    (engines / "decoder.plan").write_bytes(b"other plan")
    with pytest.raises(UserError, match=r"some-gpu/decoder\.plan: sha256 does not match"):
        load_artifact(artifact_dir)


def test_providers_are_explicit(exported):
    artifact = load_artifact(exported)
    assert OnnxEngine(artifact, threads=1).providers == ["CPUExecutionProvider"]
    with pytest.raises(UserError, match="unknown execution provider"):
        OnnxEngine(artifact, providers=["rocm"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UserError, match="no cuda execution provider"):
            OnnxEngine(artifact, providers=["cuda"])
