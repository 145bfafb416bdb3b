"""The onnxruntime engine: an artifact's graphs in one variant, on CPU, CUDA or TensorRT.

``OnnxEngine(load_artifact(dir), "int8")`` runs on the CPU; ``providers=["tensorrt", "cuda"]``
asks for GPU execution providers (onnxruntime-gpu), in preference order, with the CPU kept
last for any node they do not take. A provider that this onnxruntime lacks is an error, not
a silent fallback. The TensorRT provider gets the manifest's optimization profiles, so it
builds one engine per graph for the whole range instead of one per new input shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from runtime.artifact import Artifact
from runtime.engines import KV
from runtime.errors import UserError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxEngine:
    """The `runtime.engines.Engine` interface over onnxruntime sessions.

    ``sessions`` holds the raw ``InferenceSession`` of every graph (encoder, decoder and, for
    the hybrid, mapper) for callers that want every output by name: export verification and
    benchmarks.
    """

    def __init__(
        self,
        artifact: Artifact,
        variant: str = "fp32",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
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
        self._cross_names = [n for n in artifact.graphs["encoder"]["outputs"] if n != "memory"]
        self._decoder_inputs = artifact.graphs["decoder"]["inputs"]

    @property
    def providers(self) -> list[str]:
        """The execution providers the sessions actually got."""
        return self.sessions["decoder"].get_providers()

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[KV]:
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
        values = (tokens, positions, src_mask, tgt_key_mask, *_flat(cross), *_flat(past))
        feeds = dict(zip(self._decoder_inputs, values, strict=True))
        logits, *present = self.sessions["decoder"].run(None, feeds)
        return logits, list(zip(present[0::2], present[1::2], strict=True))

    def substitution_logits(self, src_ids: np.ndarray, src_mask: np.ndarray) -> np.ndarray:
        """The hybrid's AtomicMapper alone, ``[b, src, vocab]``: substitutions in one pass."""
        if "mapper" not in self.sessions:
            raise UserError("this artifact has no mapper graph (only hybrid models have one)")
        return self.sessions["mapper"].run(None, {"src_ids": src_ids, "src_mask": src_mask})[0]


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
