"""The engine side of serving: a batch of model pieces in, corrected pieces out.

`Corrector.run_batch` is what the dynamic batcher calls on its worker thread. It groups the
batch by (mode, decoding), encodes each group once, runs the chosen decoder (or, for the
substitution mode, the AtomicMapper's single pass) and turns ids back into text with each
character's probability.
"""

from __future__ import annotations

import numpy as np

from runtime.artifact import Artifact, load_artifact
from runtime.config import ServeConfig
from runtime.decoding import Decoded, aggressive_decode, greedy_decode, output_limits
from runtime.engines import Engine
from runtime.engines.onnx import OnnxEngine
from runtime.engines.tensorrt import TensorRTEngine
from runtime.pipeline import Corrected, Correction, assemble, prepare
from runtime.service import Job

# The execution providers each --device asks onnxruntime for, in preference order;
# --device tensorrt-native runs the artifact's own TensorRT plans instead (TensorRTEngine).
DEVICE_PROVIDERS = {"cpu": ["cpu"], "cuda": ["cuda"], "tensorrt": ["tensorrt", "cuda"]}
NATIVE_TENSORRT = "tensorrt-native"


class Corrector:
    def __init__(self, artifact: Artifact, engine: Engine) -> None:
        self.artifact = artifact
        self.engine = engine
        self.vocab = artifact.vocab
        self.max_src_len = artifact.limits["max_src_len"]
        self.max_tgt_len = artifact.limits["max_tgt_len"]
        self.max_n = artifact.limits["max_n"]
        self.artifact_id = artifact.manifest["checksum"][:16]
        self.has_mapper = "mapper" in artifact.graphs

    def run_batch(self, jobs: list[Job]) -> list[Corrected]:
        results: list[Corrected | None] = [None] * len(jobs)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job.mode, job.decoding), []).append(i)
        for (mode, decoding), members in groups.items():
            texts = [jobs[i].text for i in members]
            if mode == "substitution" and self.has_mapper:
                corrected = self._substitute(texts)
            else:
                corrected = self._decode(texts, decoding)
            for i, result in zip(members, corrected, strict=True):
                results[i] = result
        return results

    def _pad(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = [self.vocab.encode(t) for t in texts]
        ids = np.full((len(texts), max(map(len, encoded))), self.vocab.pad_id, dtype=np.int64)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = tokens
        return ids, ids != self.vocab.pad_id

    def _decode(self, texts: list[str], decoding: str) -> list[Corrected]:
        ids, mask = self._pad(texts)
        # Within the exported profiles: past + new tokens ≤ max_tgt_len + 1, new tokens ≤ max_n.
        max_len = output_limits(mask, self.max_tgt_len - 1)
        if decoding == "greedy":
            decoded = greedy_decode(self.engine, ids, mask, max_len)
        else:
            decoded = aggressive_decode(self.engine, ids, mask, max_len, max_draft=self.max_n - 1)
        return [self._text(d) for d in decoded]

    def _substitute(self, texts: list[str]) -> list[Corrected]:
        """One mapper pass: each character replaced by the model's choice for its position."""
        ids, mask = self._pad(texts)
        logits = self.engine.substitution_logits(ids, mask)
        chosen = logits.argmax(-1)
        probs = 1.0 / np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)
        results = []
        for row, text in enumerate(texts):
            # A position the mapper fills with a special token keeps its input character.
            chars = [
                self.vocab.decode([int(c)]) or ch
                for c, ch in zip(chosen[row, : len(text)], text, strict=True)
            ]
            results.append(Corrected("".join(chars), probs[row, : len(text)].tolist()))
        return results

    def _text(self, decoded: Decoded) -> Corrected:
        chars, confidence = [], []
        for token, prob in zip(decoded.ids, decoded.probs, strict=True):
            ch = self.vocab.decode([token])  # specials decode to nothing
            if ch:
                chars.append(ch)
                confidence.append(prob)
        return Corrected("".join(chars), confidence)


def correct_texts(
    corrector: Corrector,
    texts: list[str],
    *,
    mode: str = "full",
    decoding: str = "aggressive",
    batch_size: int = 32,
) -> list[Correction]:
    """The service's answer for each text, computed in this process without a server: the same
    pipeline and engine, batched shortest first instead of by a queue."""
    prepared = [prepare(t, corrector.vocab, corrector.max_src_len) for t in texts]
    jobs = [Job(piece, mode, decoding) for p in prepared for piece in p.model_inputs]
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i].text))
    corrected: list[Corrected] = [Corrected("", [])] * len(jobs)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        for i, result in zip(batch, corrector.run_batch([jobs[i] for i in batch]), strict=True):
            corrected[i] = result
    answers = iter(corrected)
    return [assemble(p, [next(answers) for _ in p.model_inputs]) for p in prepared]


def load_corrector(config: ServeConfig) -> Corrector:
    """The artifact's engine for ``config.device``: onnxruntime on its execution providers, or
    (tensorrt-native) the TensorRT plans built for this GPU, whose precision is the variant
    they were built from rather than ``config.variant``."""
    artifact = load_artifact(config.artifact)
    if config.device == NATIVE_TENSORRT:
        return Corrector(artifact, TensorRTEngine(artifact))
    engine = OnnxEngine(
        artifact,
        config.variant,
        providers=DEVICE_PROVIDERS[config.device],
        threads=config.threads or None,
    )
    return Corrector(artifact, engine)
