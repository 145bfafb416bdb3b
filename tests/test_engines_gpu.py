"""GPU engines: the native TensorRT engine and onnxruntime's CUDA provider with IO binding.

The GPU tests need an NVIDIA GPU and tensorrt / onnxruntime-gpu with cuda-python; elsewhere they
skip, saying what is missing. The rest runs everywhere: the device-side cache (`DeviceArray`)
in host memory against numpy, IO binding on the CPU, the TensorRT engine's own code over a
stand-in for TensorRT that runs each "plan" (an ONNX graph) with onnxruntime, and the errors
without TensorRT.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tiny import corrupt, pad

import runtime.engines.tensorrt as native
from runtime.artifact import ENGINE_INFO, load_artifact, sha256_file
from runtime.config import ServeConfig
from runtime.decoding import aggressive_decode, greedy_decode
from runtime.engines import CacheOps
from runtime.engines.cuda_memory import DeviceArray, HostMemory, require_cudart
from runtime.engines.onnx import OnnxEngine
from runtime.engines.tensorrt import Gpu, TensorRTEngine, require_tensorrt_runtime
from runtime.errors import UserError
from runtime.server import load_corrector
from tests.conftest import KHMER_SENTENCES


def _cuda_python_missing() -> str | None:
    """Why cuda-python cannot reach a GPU here (it counts the devices), or None."""
    try:
        require_cudart()
    except UserError as exc:
        return str(exc)
    return None


def _tensorrt_missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install tensorrt cuda-python)"
    return _cuda_python_missing()


def _onnxruntime_cuda_missing() -> str | None:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return f"this onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu): {available}"
    return _cuda_python_missing()


TENSORRT_MISSING = _tensorrt_missing()
ORT_CUDA_MISSING = _onnxruntime_cuda_missing()


def texts(seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [*(corrupt(s, rng) for s in KHMER_SENTENCES), *KHMER_SENTENCES[:4], "ក"]


def batch(vocab, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    return pad([vocab.encode(t) for t in texts(seed)])


def assert_same_decoding(got, want, atol: float = 1e-4) -> None:
    assert [d.ids for d in got] == [d.ids for d in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.probs, w.probs, atol=atol)


# --- without TensorRT (everywhere) -------------------------------------------------------------


def test_runtime_modules_import_without_tensorrt_or_cuda_python():
    blocked = "import sys; sys.modules.update(tensorrt=None, cuda=None); "
    code = blocked + (
        "import runtime.engines.cuda_memory, runtime.engines.tensorrt, runtime.engines.onnx, "
        "runtime.corrector"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_without_tensorrt_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(UserError, match="pip install tensorrt cuda-python") as raised:
        require_tensorrt_runtime()
    assert "needs an NVIDIA GPU" in str(raised.value)


def test_tensorrt_native_device_without_tensorrt_is_a_user_error(artifact, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    config = ServeConfig(artifact=str(artifact.path), device="tensorrt-native")
    with pytest.raises(UserError, match="pip install tensorrt cuda-python"):
        load_corrector(config)


def test_serve_config_knows_the_native_device():
    assert ServeConfig(device="tensorrt-native").device == "tensorrt-native"
    with pytest.raises(UserError, match="tensorrt-native"):
        ServeConfig(device="trt")


# --- the device-side cache, in host memory ------------------------------------------------------


def test_device_arrays_do_what_the_decoders_do_to_numpy_arrays():
    memory, rng = HostMemory(), np.random.default_rng(0)
    for _ in range(200):
        b, heads, past, n, dim = (int(x) for x in rng.integers(1, [6, 4, 12, 9, 5]))
        past -= 1  # 0 ..
        array = rng.standard_normal((b, heads, past + n, dim)).astype(np.float32)
        handle = DeviceArray.from_numpy(memory, array)
        assert handle.shape == array.shape
        np.testing.assert_array_equal(handle.numpy(), array)
        mask = rng.random(b) < 0.5
        np.testing.assert_array_equal(handle[mask].numpy(), array[mask])
        rows = rng.integers(-b, b, 3)
        np.testing.assert_array_equal(handle[rows].numpy(), array[rows])
        assert handle[:, :, :0].shape == array[:, :, :0].shape
        start, stop = sorted(int(x) for x in rng.integers(0, past + n + 1, 2))
        np.testing.assert_array_equal(handle[:, :, start:stop].numpy(), array[:, :, start:stop])
        index = rng.integers(0, past + n, (b, 1, 7, 1))
        np.testing.assert_array_equal(
            np.take_along_axis(handle, index, 2).numpy(), np.take_along_axis(array, index, 2)
        )
        # Aggressive decoding's compaction: runs of old slots, new slots, one repeated slot.
        cached, kept = rng.integers(0, past + 1, b), rng.integers(1, n + 1, b)
        ops = CacheOps()
        want = ops.compact([(array, array)], past, cached, kept)[0][0]
        got = ops.compact([(handle, handle)], past, cached, kept)[0][0]
        np.testing.assert_array_equal(got.numpy(), want)
        for row in range(b):  # each row: its old slots, then its kept new ones, left-aligned
            c, k = int(cached[row]), int(kept[row])
            np.testing.assert_array_equal(want[row, :, :c], array[row, :, :c])
            np.testing.assert_array_equal(want[row, :, c : c + k], array[row, :, past : past + k])


def test_cache_ops_defaults():
    rng = np.random.default_rng(1)
    cross = [tuple(rng.standard_normal((3, 2, 5, 4)).astype(np.float32) for _ in "kv")]
    ops = CacheOps()
    for k, v in ops.empty_cache(cross):
        assert k.shape == v.shape == (3, 2, 0, 4)
    running = np.array([True, False, True])
    (k, v), ((ck, cv),) = ops.select_rows(cross, running)[0], cross
    np.testing.assert_array_equal(k, ck[running])
    np.testing.assert_array_equal(v, cv[running])


def test_device_arrays_refuse_what_they_cannot_do_on_a_device():
    handle = DeviceArray.from_numpy(HostMemory(), np.zeros((2, 3, 4), np.float32))
    with pytest.raises(TypeError, match="DeviceArray supports"):
        handle[0]
    with pytest.raises(IndexError, match="step 1"):
        handle[:, ::2]
    with pytest.raises(TypeError):
        np.concatenate([handle, handle])  # no silent trip through the host


# --- IO binding, on the CPU ---------------------------------------------------------------------


def test_io_binding_keeps_the_cache_bound_and_decodes_the_same(artifact, vocab):
    plain = OnnxEngine(artifact, "fp32", threads=1)
    bound = OnnxEngine(artifact, "fp32", threads=1, io_binding=True)
    assert plain.memory is None  # the CPU default is the unbound path
    ids, mask = batch(vocab)
    cross = bound.encode(ids, mask)
    assert all(isinstance(t, DeviceArray) for pair in cross for t in pair)
    assert_same_decoding(greedy_decode(bound, ids, mask, 80), greedy_decode(plain, ids, mask, 80))
    assert_same_decoding(
        aggressive_decode(bound, ids, mask, 80, max_draft=8),
        aggressive_decode(plain, ids, mask, 80, max_draft=8),
    )


# --- the TensorRT engine's own code, over a stand-in for TensorRT ------------------------------


ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


class _StandInEngine:
    """An ICudaEngine whose plan is an ONNX graph, run by onnxruntime on host addresses."""

    def __init__(self, plan: bytes) -> None:
        self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
        values = [*self.session.get_inputs(), *self.session.get_outputs()]
        inputs = {v.name for v in self.session.get_inputs()}
        self.modes = {v.name: "input" if v.name in inputs else "output" for v in values}
        self.dtypes = {v.name: np.dtype(ONNX_TYPES[v.type]) for v in values}
        self.names = list(self.modes)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return self.modes[name]

    def get_tensor_dtype(self, name: str) -> np.dtype:
        return self.dtypes[name]

    def create_execution_context(self) -> _StandInContext:
        return _StandInContext(self)


class _StandInContext:
    def __init__(self, engine: _StandInEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.results: dict[str, np.ndarray] | None = None

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name], self.results = tuple(shape), None
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        if self.engine.modes[name] == "input":
            self.results = None
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._run()[name].shape

    def execute_async_v3(self, stream_handle: int) -> bool:
        for name, value in self._run().items():
            value = np.ascontiguousarray(value)
            ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
        self.results = None
        return True

    def _run(self) -> dict[str, np.ndarray]:
        if self.results is None:
            feeds = {}
            for name, mode in self.engine.modes.items():
                if mode != "input":
                    continue
                shape, dtype = self.shapes[name], self.engine.dtypes[name]
                nbytes = math.prod(shape) * dtype.itemsize
                feeds[name] = np.zeros(shape, dtype)
                if nbytes:
                    raw = (ctypes.c_char * nbytes).from_address(self.addresses[name])
                    feeds[name] = np.frombuffer(raw, dtype).reshape(shape).copy()
            outputs = self.engine.session.run(None, feeds)
            names = [v.name for v in self.engine.session.get_outputs()]
            self.results = dict(zip(names, outputs, strict=True))
        return self.results


class StandInTensorRT:
    """The part of the tensorrt module that TensorRTEngine uses."""

    __version__ = "0.0-stand-in"

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            pass

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> _StandInEngine:
            return _StandInEngine(plan)

    @staticmethod
    def nptype(dtype: np.dtype) -> np.dtype:
        return dtype


STAND_IN_GPU = Gpu("Stand-in GPU 9000")


@pytest.fixture
def stand_in(artifact, tmp_path, monkeypatch):
    """A copy of the tiny artifact with engines/<stand-in gpu>/ (plans: the fp32 graphs),
    loaded with TensorRT, the GPU and device memory replaced by the stand-ins."""
    directory = tmp_path / "artifact"
    shutil.copytree(artifact.path, directory)
    out = directory / "engines" / STAND_IN_GPU.slug
    out.mkdir(parents=True)
    files = {}
    for graph in artifact.graphs:
        shutil.copyfile(artifact.graph_path(graph, "fp32"), out / f"{graph}.plan")
        files[f"{graph}.plan"] = sha256_file(out / f"{graph}.plan")
    info = {
        "tensorrt": StandInTensorRT.__version__,
        "gpu": STAND_IN_GPU.name,
        "built_from": "fp32",
        "profiles": artifact.manifest["profiles"],
        "files": files,
    }
    (out / ENGINE_INFO).write_text(json.dumps(info), encoding="utf-8")
    monkeypatch.setattr(native, "require_tensorrt_runtime", lambda: (StandInTensorRT, None))
    monkeypatch.setattr(native, "current_gpu", lambda cudart, device=0: STAND_IN_GPU)
    monkeypatch.setattr(native, "cuda_memory", lambda cudart=None, device=0: HostMemory())
    return load_artifact(directory)


def test_tensorrt_engine_decodes_like_onnxruntime(stand_in, vocab):
    engine, reference = TensorRTEngine(stand_in), OnnxEngine(stand_in, "fp32", threads=1)
    assert engine.gpu == STAND_IN_GPU.slug and set(engine.plans) == set(stand_in.graphs)
    ids, mask = batch(vocab)
    cross = engine.encode(ids, mask)
    assert all(isinstance(t, DeviceArray) for pair in cross for t in pair)
    assert_same_decoding(
        greedy_decode(engine, ids, mask, 80), greedy_decode(reference, ids, mask, 80)
    )
    assert_same_decoding(
        aggressive_decode(engine, ids, mask, 80, max_draft=8),
        aggressive_decode(reference, ids, mask, 80, max_draft=8),
    )
    np.testing.assert_allclose(
        engine.substitution_logits(ids, mask), reference.substitution_logits(ids, mask), atol=1e-5
    )


def test_tensorrt_native_device_serves_through_the_engine(stand_in):
    config = ServeConfig(artifact=str(stand_in.path), device="tensorrt-native")
    corrector = load_corrector(config)
    assert isinstance(corrector.engine, TensorRTEngine)
    reference = load_corrector(ServeConfig(artifact=str(stand_in.path), variant="fp32"))
    inputs = texts(3)[:6]
    for mode in ("full", "substitution"):
        got = corrector.correct(inputs, mode=mode)
        want = reference.correct(inputs, mode=mode)
        assert [c.text for c in got] == [c.text for c in want]


def test_tensorrt_engine_without_plans_for_this_gpu_lists_those_it_has(stand_in, monkeypatch):
    monkeypatch.setattr(native, "current_gpu", lambda cudart, device=0: Gpu("NVIDIA H100"))
    with pytest.raises(UserError, match=r"no TensorRT engines for nvidia-h100.*stand-in-gpu-9000"):
        TensorRTEngine(stand_in)
    assert TensorRTEngine(stand_in, gpu=STAND_IN_GPU.slug).gpu == STAND_IN_GPU.slug


def test_tensorrt_engine_refuses_plans_of_another_tensorrt_version(stand_in, monkeypatch):
    monkeypatch.setattr(StandInTensorRT, "__version__", "99.0")
    with pytest.raises(UserError, match=r"built with TensorRT 0\.0-stand-in"):
        TensorRTEngine(stand_in)


# --- on a GPU ---------------------------------------------------------------------------------


@pytest.mark.skipif(TENSORRT_MISSING is not None, reason=f"needs TensorRT: {TENSORRT_MISSING}")
def test_tensorrt_engine_on_the_gpu_matches_onnxruntime_on_the_cpu(artifact, vocab, tmp_path):
    from export.tensorrt import build_engines

    directory = tmp_path / "artifact"
    shutil.copytree(artifact.path, directory)
    built = build_engines(load_artifact(directory), "fp16", timing_cache_dir=tmp_path / "cache")
    copy = load_artifact(directory)
    engine, cpu = TensorRTEngine(copy), OnnxEngine(copy, "fp32", threads=1)
    assert engine.gpu == built.name and engine.memory.device_type == "cuda"

    ids, mask = batch(vocab)
    # One prefill of 5 tokens over an empty cache: logits within fp16 tolerance.
    tokens = np.concatenate([np.full((len(ids), 1), cpu.bos_id), ids[:, :4]], 1)
    positions = np.broadcast_to(np.arange(5), tokens.shape).copy()
    key_mask = np.ones(tokens.shape, dtype=bool)
    results = []
    for e in (engine, cpu):
        cross = e.encode(ids, mask)
        logits, present = e.decode(tokens, positions, mask, key_mask, cross, e.empty_cache(cross))
        assert present[0][0].shape[2] == 5
        results.append(logits)
    got, want = results
    assert got.dtype == np.float32 and got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 2e-2 * max(1.0, float(np.abs(want).max()))
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.97

    # max_len and max_draft keep past + n inside the plans' profiles (max_tgt_len, max_n).
    max_len, max_draft = 60, copy.limits["max_n"] - 2
    greedy = greedy_decode(engine, ids, mask, max_len)
    assert [d.ids for d in greedy] == [d.ids for d in greedy_decode(cpu, ids, mask, max_len)]
    fast = aggressive_decode(engine, ids, mask, max_len, max_draft=max_draft)
    assert [d.ids for d in fast] == [d.ids for d in greedy]


@pytest.mark.skipif(ORT_CUDA_MISSING is not None, reason=f"needs CUDA: {ORT_CUDA_MISSING}")
def test_onnxruntime_cuda_keeps_the_cache_on_the_gpu_and_decodes_like_the_cpu(artifact, vocab):
    gpu, cpu = OnnxEngine(artifact, "fp32", ["cuda"]), OnnxEngine(artifact, "fp32", threads=1)
    assert "CUDAExecutionProvider" in gpu.providers
    assert gpu.memory is not None and gpu.memory.device_type == "cuda"
    ids, mask = batch(vocab)
    cross = gpu.encode(ids, mask)
    assert all(isinstance(t, DeviceArray) for pair in cross for t in pair)
    want = greedy_decode(cpu, ids, mask, 80)
    assert_same_decoding(greedy_decode(gpu, ids, mask, 80), want, atol=1e-3)
    fast = aggressive_decode(gpu, ids, mask, 80, max_draft=8)
    assert [d.ids for d in fast] == [d.ids for d in want]
