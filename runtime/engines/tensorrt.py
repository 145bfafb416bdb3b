"""The native TensorRT engine.

``TensorRTEngine(load_artifact(dir))`` runs the plans that ``kmcorrect export --tensorrt`` built
for this GPU (``engines/<gpu>/``, verified against its engine.json by `load_artifact`) on one
CUDA stream, through cuda-python (device memory, copies, the stream: `runtime.engines.cuda_memory`)
and TensorRT's ``execute_async_v3``. Every input shape is set per call from the arrays at hand
(the plans have one optimization profile spanning the manifest's min/opt/max); output shapes
come from the execution context; dtypes from the plan, so fp16 plans are converted at the
boundary.

The decoder's cache stays on the GPU between steps as `DeviceArray` handles (see
`runtime.engines.cuda_memory`); only the logits come back each step.

``tensorrt`` and cuda-python are imported only when an engine starts
(`require_tensorrt_runtime`); this module imports with neither installed.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.artifact import Artifact
from runtime.engines import CacheOps
from runtime.engines.cuda_memory import DeviceArray, check, cuda_memory, missing, require_cudart
from runtime.errors import UserError

log = logging.getLogger("kmcorrect.engine")

INSTALL_HINT = "pip install tensorrt cuda-python"
NATIVE = "the native TensorRT engine needs an NVIDIA GPU with TensorRT and cuda-python"


def require_tensorrt_runtime():
    """``(tensorrt, cudart)`` for running plans on this machine's GPU, or a UserError naming
    what is missing (with the install hint)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise missing("tensorrt is not installed", NATIVE, INSTALL_HINT) from None
    return trt, require_cudart(NATIVE, INSTALL_HINT)


@dataclass(frozen=True)
class Gpu:
    name: str

    @property
    def slug(self) -> str:
        """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``: the engines/<gpu> directory
        name (the same rule as ``export.tensorrt.Gpu.slug``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


def current_gpu(cudart, device: int = 0) -> Gpu:
    prop = check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return Gpu(name.rstrip("\x00").strip())


# --- the engine -----------------------------------------------------------------------------------


class _Plan:
    """One deserialized plan with its execution context, run on ``memory``'s stream."""

    def __init__(self, trt, runtime, path: Path, memory, profile: dict) -> None:
        self.path = path
        self.memory = memory
        self.profile = profile
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise UserError(
                f"{path}: TensorRT cannot load this plan (its log is above): plans run only "
                "with the TensorRT version and GPU model they were built for; rebuild them "
                "with `kmcorrect export --tensorrt` on this machine"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise UserError(f"{path}: TensorRT could not create an execution context")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = trt.TensorIOMode
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == mode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == mode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}

    def run(self, feeds: dict) -> dict[str, DeviceArray]:
        """Enqueue one execution; host arrays are uploaded (in the plan's dtype), device arrays
        bound as they are. Returns every output as a `DeviceArray` (not yet synchronized)."""
        bound = []
        for name in self.inputs:
            if name not in feeds:
                raise KeyError(f"{self.path.name}: no value for input {name}")
            array = DeviceArray.of(self.memory, feeds[name], self.dtypes[name])
            if not self.context.set_input_shape(name, array.shape):
                limits = self.profile.get(name, {})
                raise UserError(
                    f"{self.path.name}: {name} of shape {list(array.shape)} is outside the "
                    f"plan's optimization profile (min {limits.get('min')}, max "
                    f"{limits.get('max')}); re-export with larger limits"
                )
            if not self.context.set_tensor_address(name, array.ptr):
                raise RuntimeError(f"{self.path.name}: TensorRT refused the address of {name}")
            bound.append(array)
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"{self.path.name}: the shape of {name} is unknown: {shape}")
            outputs[name] = DeviceArray.empty(self.memory, shape, self.dtypes[name])
            if not self.context.set_tensor_address(name, outputs[name].ptr):
                raise RuntimeError(f"{self.path.name}: TensorRT refused the address of {name}")
        if not self.context.execute_async_v3(self.memory.stream_handle):
            raise RuntimeError(f"{self.path.name}: TensorRT could not enqueue (its log is above)")
        # The inputs uploaded here are freed in stream order, after this execution.
        return outputs


class TensorRTEngine(CacheOps):
    """The `runtime.engines` interfaces over an artifact's TensorRT plans: `edit` for an
    editor, `Engine` for a sequence-to-sequence model.

    ``gpu`` picks the ``engines/<gpu>`` directory (default: the one named after the GPU this
    runs on). The plans' precision is the graph they were built from (engine.json's
    ``built_from``); float arrays are float32 at the boundary whatever it is. One engine is
    used by one thread at a time (a lock guards each call).
    """

    def __init__(self, artifact: Artifact, gpu: str | None = None, device: int = 0) -> None:
        trt, cudart = require_tensorrt_runtime()
        here = current_gpu(cudart, device)
        slug = gpu or here.slug
        if slug not in artifact.engines:
            have = ", ".join(
                f"{name} ({info.get('gpu', '?')}, TensorRT {info.get('tensorrt', '?')})"
                for name, info in sorted(artifact.engines.items())
            )
            raise UserError(
                f"{artifact.path}: no TensorRT engines for {slug} (this GPU is {here.name}); "
                f"the artifact has {have or 'none'}. Build them on this GPU with "
                "`kmcorrect export --tensorrt`"
            )
        if slug != here.slug:
            log.warning("running plans built for %s on %s", slug, here.name)
        info = artifact.engines[slug]
        if info.get("tensorrt") != trt.__version__:
            raise UserError(
                f"{artifact.path / 'engines' / slug}: built with TensorRT {info.get('tensorrt')}, "
                f"this is TensorRT {trt.__version__}; plans run only with the version that "
                "built them: rebuild with `kmcorrect export --tensorrt`"
            )
        config = artifact.model_config
        self.pad_id, self.bos_id, self.eos_id = config["pad_id"], config["bos_id"], config["eos_id"]
        self.gpu = slug
        self.built_from = info.get("built_from")
        self.memory = cuda_memory(cudart, device)  # cudart: checked above
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        directory = artifact.path / "engines" / slug
        self.plans = {
            graph: _Plan(
                trt,
                self._runtime,
                directory / f"{graph}.plan",
                self.memory,
                info.get("profiles", {}).get(graph, {}),
            )
            for graph in artifact.graphs
            if f"{graph}.plan" in info.get("files", {})
        }
        missing = set(artifact.graphs) - {"mapper"} - set(self.plans)
        if missing:
            raise UserError(f"{directory}: no {' or '.join(sorted(missing))} plan")
        if "decoder" in self.plans:  # a sequence-to-sequence model
            encoder_outputs = artifact.graphs["encoder"]["outputs"]
            self._cross_names = [n for n in encoder_outputs if n != "memory"]
            self._decoder_inputs = artifact.graphs["decoder"]["inputs"]
            self._logits_name, *self._present_names = artifact.graphs["decoder"]["outputs"]
            self._check_cache_dtypes()
        self._lock = threading.Lock()

    def _check_cache_dtypes(self) -> None:
        """The cache goes from one plan's output to another's input untouched: their dtypes
        must agree (a conversion would need a kernel)."""
        encoder, decoder = self.plans["encoder"], self.plans["decoder"]
        cache_inputs, n = self._decoder_inputs[4:], len(self._cross_names)
        links = [(encoder, o, i) for o, i in zip(self._cross_names, cache_inputs[:n], strict=True)]
        links += [
            (decoder, o, i) for o, i in zip(self._present_names, cache_inputs[n:], strict=True)
        ]
        for source, out, inp in links:
            if source.dtypes[out] != decoder.dtypes[inp]:
                raise UserError(
                    f"{source.path.name} gives {out} as {source.dtypes[out]} but "
                    f"{decoder.path.name} takes {inp} as {decoder.dtypes[inp]}; rebuild the plans "
                    "from one variant"
                )

    def edit(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The editor's one pass: every frame's best label and its probability."""
        if "editor" not in self.plans:
            raise UserError("this artifact has no editor plan (only editor models have one)")
        with self._lock:
            outputs = self.plans["editor"].run({"src_ids": src_ids, "src_mask": src_mask})
            labels, probs = outputs["labels"].numpy(), outputs["probs"].numpy()
        return labels.astype(np.int64, copy=False), probs.astype(np.float32, copy=False)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list:
        with self._lock:
            outputs = self.plans["encoder"].run({"src_ids": src_ids, "src_mask": src_mask})
        flat = [outputs[name] for name in self._cross_names]
        return list(zip(flat[0::2], flat[1::2], strict=True))

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: np.ndarray,
        tgt_key_mask: np.ndarray,
        cross: list,
        past: list,
    ) -> tuple[np.ndarray, list]:
        values = (tokens, positions, src_mask, tgt_key_mask, *_flat(cross), *_flat(past))
        feeds = dict(zip(self._decoder_inputs, values, strict=True))
        with self._lock:
            outputs = self.plans["decoder"].run(feeds)
            logits = outputs[self._logits_name].numpy()  # the one copy back per step
        present = [outputs[name] for name in self._present_names]
        pairs = list(zip(present[0::2], present[1::2], strict=True))
        return logits.astype(np.float32, copy=False), pairs

    def substitution_logits(self, src_ids: np.ndarray, src_mask: np.ndarray) -> np.ndarray:
        """The hybrid's AtomicMapper alone, ``[b, src, vocab]``."""
        if "mapper" not in self.plans:
            raise UserError("this artifact has no mapper plan (only hybrid models have one)")
        with self._lock:
            plan = self.plans["mapper"]
            outputs = plan.run({"src_ids": src_ids, "src_mask": src_mask})
            logits = outputs[plan.outputs[0]].numpy()
        return logits.astype(np.float32, copy=False)


def _flat(pairs: list) -> list:
    return [array for pair in pairs for array in pair]
