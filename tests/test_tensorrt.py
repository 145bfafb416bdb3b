"""TensorRT engines: built from the fp16 graphs, they match onnxruntime within fp16 tolerance.

Needs tensorrt, cuda-python, a CUDA build of torch and an NVIDIA GPU; skipped (with the
reason) elsewhere, where `--tensorrt` must instead fail with a message naming what is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.build import export_artifact
from export.config import ExportConfig
from export.tensorrt import build_engines, require_tensorrt
from runtime.artifact import load_artifact
from runtime.engines.onnx import OnnxEngine
from runtime.errors import UserError
from runtime.text import Vocab
from training import checkpoint
from training.models import build_model


def _tensorrt_missing() -> str | None:
    try:
        require_tensorrt()
    except UserError as exc:
        return str(exc)
    return None if torch.cuda.is_available() else "torch has no CUDA device"


MISSING = _tensorrt_missing()


@pytest.mark.skipif(MISSING is None, reason="TensorRT and a GPU are present")
def test_without_tensorrt_or_gpu_the_error_names_what_is_missing():
    with pytest.raises(UserError, match=r"pip install tensorrt cuda-python|no CUDA device|cuda"):
        require_tensorrt()


@pytest.mark.skipif(MISSING is not None, reason=f"needs TensorRT and a GPU: {MISSING}")
def test_engines_match_onnxruntime(tmp_path):
    import tensorrt as trt

    vocab = Vocab.default()
    torch.manual_seed(0)
    model = build_model("hybrid", len(vocab), "tiny").eval()
    checkpoint.save(
        tmp_path / "run", "best", model_name="hybrid", model=model, vocab=vocab, meta={}
    )
    config = ExportConfig(
        max_src_len=64, max_tgt_len=64, max_n=16, variants=("fp32", "fp16"), max_cer_change=1.0
    )
    artifact = export_artifact(tmp_path / "run", tmp_path / "art", config, log=lambda _: None)
    engines = build_engines(artifact, "fp16", timing_cache_dir=tmp_path / "cache")
    info = load_artifact(artifact.path).engines[engines.name]  # verified like the graphs
    assert info["built_from"] == "fp16" and set(info["files"]) == {
        "encoder.plan",
        "decoder.plan",
        "mapper.plan",
    }
    assert list((tmp_path / "cache").glob("*.timing"))

    fp32 = OnnxEngine(artifact, "fp32")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, len(vocab), (3, 37), generator=gen).numpy()
    mask = np.ones(ids.shape, dtype=bool)
    mask[2, 20:] = False
    encoder_feeds = {"src_ids": ids, "src_mask": mask}
    cases = [("encoder", encoder_feeds), ("mapper", encoder_feeds)]
    cross = fp32.encode(ids, mask)
    for past_len, n in [(0, 5), (9, 1), (9, 4)]:
        tokens = np.random.default_rng(n).integers(4, len(vocab), (3, n))
        positions = np.broadcast_to(np.arange(past_len, past_len + n), (3, n)).copy()
        past = [(k[:, :, :past_len] + 0.1, v[:, :, :past_len] - 0.1) for k, v in cross]
        values = [tokens, positions, mask, np.ones((3, past_len + n), dtype=bool)]
        values += [a for pair in [*cross, *past] for a in pair]
        cases.append(
            ("decoder", dict(zip(artifact.graphs["decoder"]["inputs"], values, strict=True)))
        )

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    for graph, feeds in cases:
        plan = runtime.deserialize_cuda_engine((engines / f"{graph}.plan").read_bytes())
        got = _run_plan(trt, plan, feeds)
        want = fp32.sessions[graph].run(None, feeds)
        for name, w in zip(artifact.graphs[graph]["outputs"], want, strict=True):
            g = got[name]
            assert g.shape == w.shape, (graph, name)
            scale = max(1.0, float(np.abs(w).max()))
            assert float(np.abs(g - w).max()) <= 2e-2 * scale, (graph, name)
            if name in ("logits", "sub_logits"):
                assert (g.argmax(-1) == w.argmax(-1)).mean() >= 0.97, (graph, name)


def _run_plan(trt, engine, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One synchronous run of a deserialized engine on torch CUDA buffers."""
    context = engine.create_execution_context()
    keep = []
    for name, array in feeds.items():
        tensor = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        keep.append(tensor)
        context.set_input_shape(name, tuple(tensor.shape))
        context.set_tensor_address(name, tensor.data_ptr())
    outputs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name))))
        outputs[name] = torch.empty(
            tuple(context.get_tensor_shape(name)), dtype=dtype.dtype, device="cuda"
        )
        context.set_tensor_address(name, outputs[name].data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}
