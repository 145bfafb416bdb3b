"""The onnxruntime engine: an artifact's graphs in one variant, on CPU, CUDA or TensorRT.

``OnnxEngine(load_artifact(dir), "int8")`` runs on the CPU; ``providers=["tensorrt", "cuda"]``
asks for GPU execution providers (onnxruntime-gpu), in preference order, with the CPU kept
last for any node they do not take. A provider that this onnxruntime lacks is an error, not
a silent fallback. The TensorRT provider gets the manifest's optimization profiles, so it
builds one engine per graph for the whole range instead of one per new input shape.

On a GPU provider the engine runs with IO binding: the cross keys/values and the decoder's
self-attention cache stay on the device between decoder calls, as
`runtime.engines.cuda_memory.DeviceArray` handles (row selection and compaction are device
copies through cuda-python), and only the logits come back to the host. Without cuda-python
it warns and runs as on the CPU, the cache going through the host every step.
``io_binding=True`` asks for the same path on the CPU (tests); the CPU default is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from runtime.artifact import Artifact
from runtime.engines import KV, CacheOps
from runtime.engines.cuda_memory import DeviceArray, HostMemory, cuda_memory
from runtime.errors import UserError

log = logging.getLogger("kmcorrect.engine")

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class OnnxEngine(CacheOps):
    """The `runtime.engines` interfaces over onnxruntime sessions: `edit` for an editor
    artifact, `Engine` (encode, decode, cache operations) for a sequence-to-sequence one.

    ``sessions`` holds the raw ``InferenceSession`` of every graph (editor; or encoder, decoder
    and, for the hybrid, mapper) for callers that want every output by name: export verification and
    benchmarks. ``io_binding``: None (default) binds on GPU providers only; True requires it;
    False never. ``memory`` is where bound caches live (None when not binding, and for the
    editor, which has no cache).
    """

    def __init__(
        self,
        artifact: Artifact,
        variant: str = "fp32",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        io_binding: bool | None = None,
    ) -> None:
        config = artifact.model_config
        self.pad_id, self.bos_id, self.eos_id = config["pad_id"], config["bos_id"], config["eos_id"]
        self.variant = variant
        self.sessions = {
            graph: session(
                artifact.graph_path(graph, variant),
                providers,
                threads,
                profile=artifact.manifest["profiles"][graph],
            )
            for graph in artifact.graphs
        }
        self.memory = None
        if "decoder" in artifact.graphs:  # a sequence-to-sequence model
            encoder_outputs = artifact.graphs["encoder"]["outputs"]
            self._cross_names = [n for n in encoder_outputs if n != "memory"]
            self._decoder_inputs = artifact.graphs["decoder"]["inputs"]
            self._decoder_outputs = artifact.graphs["decoder"]["outputs"]  # logits, present K/V
            self.memory = _binding_memory(self.providers, io_binding)

    @property
    def providers(self) -> list[str]:
        """The execution providers the sessions actually got."""
        return next(iter(self.sessions.values())).get_providers()

    def edit(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The editor's one pass: every frame's best label and its probability."""
        if "editor" not in self.sessions:
            raise UserError("this artifact has no editor graph (only editor models have one)")
        labels, probs = self.sessions["editor"].run(
            None, {"src_ids": src_ids, "src_mask": src_mask}
        )
        return labels, probs.astype(np.float32, copy=False)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[KV]:
        if self.memory is not None:
            return self._encode_bound(src_ids, src_mask)
        flat = self.sessions["encoder"].run(
            self._cross_names, {"src_ids": src_ids, "src_mask": src_mask}
        )
        return list(zip(flat[0::2], flat[1::2], strict=True))

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: np.ndarray,
        tgt_key_mask: np.ndarray,
        cross: list[KV],
        past: list[KV],
    ) -> tuple[np.ndarray, list[KV]]:
        if self.memory is not None:
            return self._decode_bound(tokens, positions, src_mask, tgt_key_mask, cross, past)
        values = (tokens, positions, src_mask, tgt_key_mask, *_flat(cross), *_flat(past))
        feeds = dict(zip(self._decoder_inputs, values, strict=True))
        logits, *present = self.sessions["decoder"].run(None, feeds)
        return logits, list(zip(present[0::2], present[1::2], strict=True))

    def _encode_bound(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list:
        """`encode` with the cross keys/values left in ``memory`` (IO binding)."""
        memory, session = self.memory, self.sessions["encoder"]
        binding = session.io_binding()
        binding.bind_cpu_input("src_ids", np.ascontiguousarray(src_ids))
        binding.bind_cpu_input("src_mask", np.ascontiguousarray(src_mask))
        for name in self._cross_names:
            binding.bind_output(name, memory.device_type, memory.device_id)
        session.run_with_iobinding(binding)
        flat = [DeviceArray.from_ortvalue(memory, value) for value in binding.get_outputs()]
        return list(zip(flat[0::2], flat[1::2], strict=True))

    def _decode_bound(self, tokens, positions, src_mask, tgt_key_mask, cross, past):
        """`decode` with IO binding: the cache is bound where it lies (a host array is uploaded
        first), the new cache is left in ``memory``, the logits come back to the host."""
        memory, session = self.memory, self.sessions["decoder"]
        binding = session.io_binding()
        host_names, cache_names = self._decoder_inputs[:4], self._decoder_inputs[4:]
        for name, value in zip(
            host_names, (tokens, positions, src_mask, tgt_key_mask), strict=True
        ):
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        bound = [DeviceArray.of(memory, value) for value in (*_flat(cross), *_flat(past))]
        for name, array in zip(cache_names, bound, strict=True):
            binding.bind_input(
                name,
                memory.device_type,
                memory.device_id,
                array.dtype.type,
                list(array.shape),
                array.ptr,
            )
        logits_name, *present_names = self._decoder_outputs
        binding.bind_output(logits_name)  # to the host: the one copy back per step
        for name in present_names:
            binding.bind_output(name, memory.device_type, memory.device_id)
        # Our stream's copies are done: those that made the bound cache, and those that read
        # earlier outputs, whose memory onnxruntime may reuse in this run once they are dropped.
        memory.synchronize()
        session.run_with_iobinding(binding)  # returns once the provider's stream is done
        logits, *present = binding.get_outputs()
        flat = [DeviceArray.from_ortvalue(memory, value) for value in present]
        return logits.numpy(), list(zip(flat[0::2], flat[1::2], strict=True))

    def substitution_logits(self, src_ids: np.ndarray, src_mask: np.ndarray) -> np.ndarray:
        """The hybrid's AtomicMapper alone, ``[b, src, vocab]``: substitutions in one pass."""
        if "mapper" not in self.sessions:
            raise UserError("this artifact has no mapper graph (only hybrid models have one)")
        return self.sessions["mapper"].run(None, {"src_ids": src_ids, "src_mask": src_mask})[0]


def _binding_memory(providers: list[str], io_binding: bool | None):
    """Where an engine on ``providers`` keeps its bound cache, or None to run unbound."""
    on_gpu = any(name in providers for name in GPU_PROVIDERS)
    if io_binding is False or (io_binding is None and not on_gpu):
        return None
    if not on_gpu:
        return HostMemory()
    try:
        return cuda_memory()
    except UserError as exc:
        if io_binding:
            raise
        log.warning(
            "onnxruntime on %s without IO binding: the decoder cache goes through the host "
            "every step (%s)",
            providers[0],
            exc,
        )
        return None


def session(
    path,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    profile: dict[str, dict[str, list[int]]] | None = None,
) -> ort.InferenceSession:
    """An ``InferenceSession`` on the named providers (default: CPU); ``profile`` (per input:
    min/opt/max shape) is handed to the TensorRT provider."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        str(path), options, providers=_provider_list(providers or ["cpu"], profile)
    )


def _provider_list(asked: Sequence[str], profile: dict | None) -> list:
    unknown = [name for name in asked if name not in PROVIDERS]
    if unknown:
        raise UserError(f"unknown execution provider(s) {unknown}; valid: {sorted(PROVIDERS)}")
    available = ort.get_available_providers()
    missing = [name for name in asked if PROVIDERS[name] not in available]
    if missing:
        raise UserError(
            f"this onnxruntime has no {', '.join(missing)} execution provider "
            f"(available: {', '.join(available)}); GPU providers need onnxruntime-gpu "
            "and an NVIDIA GPU"
        )
    chosen: list = [PROVIDERS[name] for name in asked if name != "cpu"]
    if "TensorrtExecutionProvider" in chosen and profile:
        shapes = {
            f"trt_profile_{key}_shapes": ",".join(
                f"{name}:{'x'.join(map(str, dims[key]))}" for name, dims in profile.items()
            )
            for key in ("min", "opt", "max")
        }
        chosen[chosen.index("TensorrtExecutionProvider")] = ("TensorrtExecutionProvider", shapes)
    return [*chosen, "CPUExecutionProvider"]


def _flat(pairs: list[KV]) -> list[np.ndarray]:
    return [array for pair in pairs for array in pair]
