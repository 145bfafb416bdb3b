"""`kmcorrect export` on a tiny trained hybrid: graphs, variants, manifest, verification, parity.

One module-scoped export (a few seconds) serves most tests; tests that export again use one
variant and few verification rows.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil

import numpy as np
import onnx
import pytest
import torch
from tiny import EXPORT_CONFIG, corrupt, pad, torch_greedy_decode

from export import cli
from export.build import export_artifact
from export.config import ExportConfig
from export.graphs import graph_wrappers
from runtime.decoding import greedy_decode
from runtime.engines import CacheOps
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from tests.conftest import KHMER_SENTENCES
from training import checkpoint
from training.models import build_model

CONFIG = EXPORT_CONFIG


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a busy 2-core machine: a second intra-op thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model(run_dir):
    return checkpoint.load(run_dir).model


# --------------------------------------------------------------------------- the artifact


def test_manifest_describes_the_artifact(artifact, vocab):
    m = artifact.manifest
    assert set(m["packages"]) >= {"torch", "onnx", "onnxruntime", "khmer-correct"}
    assert artifact.vocab == vocab and m["model"]["name"] == "hybrid"
    assert m["model"]["config"]["d_model"] == 24
    assert m["checkpoint"]["metrics"]["val_cer"] == 0.05
    assert m["limits"] == {"max_batch": 32, "max_src_len": 300, "max_tgt_len": 80, "max_n": 16}
    expected = {f"{g}{v}.onnx" for g in ("encoder", "decoder", "mapper") for v in ("", ".opt")}
    expected |= {
        f"{g}.{v}.onnx" for g in ("encoder", "decoder", "mapper") for v in ("int8", "fp16")
    }
    assert set(m["files"]) == expected
    assert set(m["graphs"]) == {"encoder", "decoder", "mapper"}
    encoder, decoder = m["graphs"]["encoder"], m["graphs"]["decoder"]
    assert encoder["outputs"] == ["memory", "cross_k_0", "cross_v_0"]
    assert decoder["inputs"][:4] == ["tokens", "positions", "src_mask", "tgt_key_mask"]
    assert decoder["outputs"] == ["logits", "present_k_0", "present_v_0"]
    assert decoder["dynamic_axes"]["past_k_0"] == {"0": "batch", "2": "past_len"}
    assert decoder["dynamic_axes"]["tokens"] == {"0": "batch", "1": "n"}
    # Profiles: named axes take the config's ranges, heads and head_dim stay fixed.
    past = m["profiles"]["decoder"]["past_k_0"]
    assert past == {"min": [1, 2, 0, 12], "opt": [8, 2, 64, 12], "max": [32, 2, 79, 12]}
    assert m["profiles"]["encoder"]["src_ids"] == {"min": [1, 1], "opt": [8, 64], "max": [32, 300]}
    assert m["profiles"]["decoder"]["tokens"]["max"] == [32, 16]


def test_graphs_are_valid_onnx_with_dynamic_axes(artifact, vocab):
    for graph in ("encoder", "decoder", "mapper"):
        for variant in ("fp32", "int8", "fp16"):
            model = onnx.load(artifact.graph_path(graph, variant))
            onnx.checker.check_model(model, full_check=True)
            assert model.opset_import[0].version >= 17
    decoder = onnx.load(artifact.graph_path("decoder"))
    tokens = decoder.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in tokens] == ["batch", "n"]
    logits = decoder.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in logits] == ["batch", "n", len(vocab)]


def test_verification_passed_and_is_recorded(artifact):
    report = artifact.manifest["verification"]
    print("\nverification:", json.dumps(report["variants"], indent=1))
    assert report["rows"] == 200 and report["failures"] == []
    for variant in ("fp32", "opt"):
        result = report["variants"][variant]
        assert max(result["max_abs_diff"].values()) <= 1e-4
        assert result["greedy_identical"] == 200
    for variant in ("int8", "fp16"):
        result = report["variants"][variant]
        if result["verified"]:
            assert result["cer_change"] <= CONFIG.max_cer_change and "cer_vs_fp32" in result
        else:
            assert result["reason"].startswith("not verified on this machine")


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("src_len", [1, 7, 300])
def test_dynamic_shapes_match_torch(artifact, model, vocab, src_len):
    """Encoder and decoder at lengths never traced; decoder with past_len 0 and > 0, n 1 and 4."""
    wrappers = graph_wrappers("hybrid", model)
    sessions = OnnxEngine(artifact).sessions
    gen = torch.Generator().manual_seed(src_len)
    ids = torch.randint(4, len(vocab), (2, src_len), generator=gen)
    mask = torch.ones(2, src_len, dtype=torch.bool)
    mask[1, max(1, src_len - 3) :] = False
    cases = [("encoder", (ids, mask)), ("mapper", (ids, mask))]
    decoder = wrappers["decoder"]
    for past_len, n in [(0, 1), (0, 4), (src_len, 1), (src_len, 4)]:
        torch.manual_seed(past_len + n)
        args = list(decoder.example_inputs(2, src_len, past_len, n))
        args[2] = mask
        args[3][1, 0] = False  # a padded key slot
        cases.append(("decoder", tuple(args)))
    for graph, args in cases:
        with torch.no_grad():
            want = wrappers[graph](*args)
        want = want if isinstance(want, tuple) else (want,)
        feeds = {name: a.numpy() for name, a in zip(wrappers[graph].input_names, args, strict=True)}
        got = sessions[graph].run(None, feeds)
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.numpy(), atol=1e-4, rtol=0)


def test_runtime_greedy_equals_torch_greedy(artifact, model, vocab):
    rng = random.Random(5)
    inputs = [corrupt(s, rng) for s in KHMER_SENTENCES]
    ids, mask = pad([vocab.encode(t) for t in inputs])
    want = torch_greedy_decode(model, torch.from_numpy(ids), torch.from_numpy(mask), 80)
    got = [d.ids for d in greedy_decode(OnnxEngine(artifact), ids, mask, 80)]
    assert got == want
    repaired = sum(vocab.decode(o) == s for o, s in zip(got, KHMER_SENTENCES, strict=True))
    assert repaired >= len(inputs) // 2  # the model works, so parity is not on trivial output


def test_int8_and_mapper_run(artifact, vocab):
    engine = OnnxEngine(artifact, "int8", threads=1)
    ids, mask = pad([vocab.encode(s) for s in KHMER_SENTENCES[:3]])
    outputs = greedy_decode(engine, ids, mask, 80)
    assert len(outputs) == 3 and all(o.ids for o in outputs)
    logits = engine.substitution_logits(ids, mask)
    assert logits.shape == (*ids.shape, len(vocab)) and np.isfinite(logits).all()


# --------------------------------------------------------------------------- runtime decoding


class ScriptedEngine(CacheOps):
    """Emits a fixed token sequence per row, whatever it is fed, counting decoder rows."""

    pad_id, bos_id, eos_id = 0, 1, 2

    def __init__(self, scripts: list[list[int]]) -> None:
        self.scripts = scripts
        self.rows_decoded = 0

    def encode(self, src_ids, src_mask):
        row = np.arange(len(src_ids), dtype=np.float32)[:, None, None, None]
        return [(np.broadcast_to(row, (len(src_ids), 1, 3, 2)).copy(),) * 2]

    def decode(self, tokens, positions, src_mask, tgt_key_mask, cross, past):
        assert tgt_key_mask.shape[1] == past[0][0].shape[2] + tokens.shape[1]
        rows = cross[0][0][:, 0, 0, 0].astype(int)  # which original rows are still here
        self.rows_decoded += len(rows)
        logits = np.zeros((len(rows), 1, 5), dtype=np.float32)
        for i, (row, step) in enumerate(zip(rows, positions[:, 0], strict=True)):
            script = self.scripts[row]
            logits[i, 0, script[step] if step < len(script) else 3] = 1.0
        k = np.zeros((len(rows), 1, tokens.shape[1], 2), dtype=np.float32)
        return logits, [(np.concatenate([past[0][0], k], 2), np.concatenate([past[0][1], k], 2))]


def test_greedy_rows_finish_independently():
    engine = ScriptedEngine([[4, 2], [4, 4, 4, 4, 4, 4], [2], [3, 4, 2]])
    ids, mask = pad([[5], [5, 6], [5], [7]])
    decoded = greedy_decode(engine, ids, mask, max_len=4)
    assert [d.ids for d in decoded] == [[4], [4, 4, 4, 4], [], [3, 4]]
    assert engine.rows_decoded == 4 + 3 + 2 + 1  # finished rows leave the batch


# --------------------------------------------------------------------------- the command


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_existing_artifact_is_refused_without_force(run_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "artifact"
    args = ["--run-dir", str(run_dir), "--out", str(out), "--data", str(data_dir)]
    args += ["--variants", "fp32", "--verify-rows", "16", "--max-tgt-len", "80"]
    assert cli.run(parse(*args)) == 0
    assert "greedy identical 16/16" in capsys.readouterr().out
    with pytest.raises(UserError, match="already exists; pass --force"):
        cli.run(parse(*args))
    assert cli.run(parse(*args, "--force")) == 0
    (out / "manifest.json").unlink()
    with pytest.raises(UserError, match="not an artifact directory"):
        cli.run(parse(*args, "--force"))


def test_default_out_is_named_after_the_run(run_dir):
    for model in (run_dir, run_dir / "checkpoints", run_dir / "checkpoints" / "best.json"):
        assert cli._run_name(model) == "tiny-hybrid"


def test_failed_verification_fails_the_export_and_leaves_nothing(run_dir, tmp_path):
    out = tmp_path / "artifacts" / "x"
    config = ExportConfig(
        variants=("fp32", "int8"),
        verify_rows=8,
        max_tgt_len=40,
        max_logit_diff=0.0,
        max_cer_change=0.0,  # on random strings int8 changes some output
    )
    with pytest.raises(UserError, match=r"verification failed:\n  fp32: max .*\n  int8: CER"):
        export_artifact(run_dir, out, config, log=lambda _: None)
    assert list(out.parent.iterdir()) == []


def test_a_variant_onnxruntime_cannot_run_is_recorded_not_fatal(run_dir, tmp_path, monkeypatch):
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    import export.verify

    def engine(artifact, variant="fp32", **kw):
        if variant == "fp16":
            raise ort_state.NotImplemented("Could not find an implementation for MatMul(13)")
        return OnnxEngine(artifact, variant, **kw)

    monkeypatch.setattr(export.verify, "OnnxEngine", engine)
    config = ExportConfig(variants=("fp32", "fp16"), verify_rows=8, max_tgt_len=40)
    artifact = export_artifact(run_dir, tmp_path / "a", config, log=lambda _: None)
    result = artifact.manifest["verification"]["variants"]["fp16"]
    assert result == {
        "verified": False,
        "reason": "not verified on this machine: NotImplemented: "
        "Could not find an implementation for MatMul(13)",
    }


def test_the_fp16_variant_keeps_norms_in_float32(tmp_path):
    """A norm over a residual stream of magnitude 1000 squares past float16's range (65504):
    the fp16 graph must compute it in float32 throughout, not round-trip its values through
    float16 between the float32 nodes (what the converter does by itself)."""
    import onnxruntime as ort
    from torch import nn

    from export.variants import write_variant
    from training.models.layers import RMSNorm

    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.proj = RMSNorm(16), nn.Linear(16, 16)

        def forward(self, x):
            return self.proj(self.norm(x))

    x = torch.randn(2, 5, 16) * 1000
    torch.onnx.export(
        Normed().eval(),
        (x,),
        tmp_path / "g.onnx",
        input_names=["x"],
        opset_version=17,
        dynamo=False,
    )
    outputs = {
        variant: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"x": x.numpy()}
        )[0]
        for variant, path in (
            ("fp32", tmp_path / "g.onnx"),
            ("fp16", write_variant(tmp_path, "g", "fp16")),
        )
    }
    assert np.isfinite(outputs["fp16"]).all()
    np.testing.assert_allclose(outputs["fp16"], outputs["fp32"], atol=2e-2, rtol=2e-2)


def test_bad_inputs_are_user_errors(run_dir, tmp_path, vocab):
    with pytest.raises(UserError, match="checkpoint not found"):
        export_artifact(tmp_path / "nope.json", tmp_path / "a", log=lambda _: None)
    broken = tmp_path / "broken"
    shutil.copytree(run_dir / "checkpoints", broken)
    weights = checkpoint.tensors_path(broken / "best.json")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        export_artifact(broken, tmp_path / "a", log=lambda _: None)
    lstm = tmp_path / "lstm"
    model = build_model("char_lstm", len(vocab), "tiny")
    checkpoint.save(lstm, "best", model_name="char_lstm", model=model, vocab=vocab, meta={})
    with pytest.raises(UserError, match="char_lstm is not exportable"):
        export_artifact(lstm, tmp_path / "a", log=lambda _: None)
    with pytest.raises(UserError, match="no such file"):
        export_artifact(run_dir, tmp_path / "a", data=tmp_path / "nowhere", log=lambda _: None)
