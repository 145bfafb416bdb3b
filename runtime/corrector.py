"""The corrector: texts in, corrections out, the same way wherever it runs.

`Corrector.load(artifact)` opens an exported artifact, and `.correct(texts)` answers in this
process exactly as the service answers over gRPC: the same text pipeline, engine, decoding and
gate, batched shortest first instead of by a queue (in the spirit of CTranslate2's
``translate_batch``). A training run is served through the same class with the torch engine
(``training.torch_engine``), injected from the training side: this module never imports it.

`Corrector.run_batch` is what the dynamic batcher calls on its worker thread. For the editor
it is one engine call for the whole batch, then the collapse and each job's confidence gate
(`runtime.editing`); mode and decoding do not apply to a one-pass model. For the
sequence-to-sequence models it groups the batch by (mode, decoding), encodes each group once,
runs the chosen decoder (or, for the substitution mode, the AtomicMapper's single pass). Ids
become text with each character's probability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.artifact import Artifact, load_artifact
from runtime.decoding import Decoded, aggressive_decode, greedy_decode, output_limits
from runtime.editing import Gate, Plan, apply_edits, plan_edits
from runtime.engines import Engine
from runtime.engines.onnx import OnnxEngine
from runtime.engines.tensorrt import TensorRTEngine
from runtime.pipeline import Correction, ModelOutput, assemble, prepare
from runtime.service import Job
from runtime.text import Vocab

# The execution providers each --device asks onnxruntime for, in preference order;
# --device tensorrt-native runs the artifact's own TensorRT plans instead (TensorRTEngine).
DEVICE_PROVIDERS = {"cpu": ["cpu"], "cuda": ["cuda"], "tensorrt": ["tensorrt", "cuda"]}
NATIVE_TENSORRT = "tensorrt-native"


@dataclass(frozen=True)
class ModelInfo:
    """What the Corrector needs to know of a model, whichever engine runs it: an artifact
    (`of_artifact`), or a checkpoint in training (``training.torch_engine``)."""

    name: str  # editor, hybrid, char_transformer
    config: dict  # the model's config as exported (ids, sizes, upsample)
    vocab: Vocab
    max_src_len: int  # longest model piece; longer text is chunked
    max_tgt_len: int  # sequence-to-sequence: bos + output, at most
    max_n: int  # sequence-to-sequence: most tokens one decoder call takes
    model_id: str  # answers name it (the artifact's manifest checksum)
    has_mapper: bool  # the hybrid's AtomicMapper, for the substitution mode
    gate: dict = field(default_factory=dict)  # the editor's gate (`Gate.SETTINGS`), from export

    @property
    def is_editor(self) -> bool:
        return self.name == "editor"

    @classmethod
    def of_artifact(cls, artifact: Artifact) -> ModelInfo:
        limits = artifact.limits
        gate = artifact.manifest.get("gate", {})
        return cls(
            name=artifact.model_name,
            config=artifact.model_config,
            vocab=artifact.vocab,
            max_src_len=limits["max_src_len"],
            max_tgt_len=limits["max_tgt_len"],
            max_n=limits["max_n"],
            model_id=artifact.manifest["checksum"][:16],
            has_mapper="mapper" in artifact.graphs,
            gate={k: gate[k] for k in Gate.SETTINGS if k in gate},
        )


def pad_ids(rows: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token-id rows as one right-padded array ``[b, longest]`` and its mask (True on tokens)."""
    ids = np.full((len(rows), max(map(len, rows))), pad_id, dtype=np.int64)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = tokens
    return ids, ids != pad_id


class Corrector:
    def __init__(self, info: ModelInfo, engine: Engine) -> None:
        self.info = info
        self.engine = engine
        self.vocab = info.vocab
        self.max_src_len = info.max_src_len
        self.max_tgt_len = info.max_tgt_len
        self.max_n = info.max_n
        self.artifact_id = info.model_id
        self.has_mapper = info.has_mapper
        self.is_editor = info.is_editor
        # The editor's gate: edits it turns down are not applied (calibrated at export).
        self.gate = Gate.of_settings(info.gate, self._space_id())

    @classmethod
    def load(
        cls,
        artifact: str | Path,
        *,
        variant: str = "opt",
        device: str = "cpu",
        threads: int | None = None,
    ) -> Corrector:
        """The artifact's corrector on ``device``: onnxruntime on its execution providers, or
        (tensorrt-native) the TensorRT plans built for this GPU, whose precision is the variant
        they were built from rather than ``variant``. ``threads``: onnxruntime's intra-op
        threads (None: its default)."""
        artifact = load_artifact(artifact)
        info = ModelInfo.of_artifact(artifact)
        if device == NATIVE_TENSORRT:
            return cls(info, TensorRTEngine(artifact))
        providers = DEVICE_PROVIDERS[device]
        return cls(info, OnnxEngine(artifact, variant, providers=providers, threads=threads))

    def correct(
        self,
        texts: list[str],
        *,
        mode: str = "full",
        decoding: str = "aggressive",
        min_confidence: float | None = None,
        batch_size: int = 32,
    ) -> list[Correction]:
        """The service's answer for each text, computed in this process without a server. A
        text's answer never depends on the texts beside it."""
        prepared = [prepare(t, self.vocab, self.max_src_len) for t in texts]
        jobs = [
            Job(piece, mode, decoding, min_confidence) for p in prepared for piece in p.model_inputs
        ]
        order = sorted(range(len(jobs)), key=lambda i: len(jobs[i].text))
        corrected: list[ModelOutput] = [ModelOutput("", [])] * len(jobs)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            for i, result in zip(batch, self.run_batch([jobs[i] for i in batch]), strict=True):
                corrected[i] = result
        answers = iter(corrected)
        return [assemble(p, [next(answers) for _ in p.model_inputs]) for p in prepared]

    def run_batch(self, jobs: list[Job]) -> list[ModelOutput]:
        if self.is_editor:
            return self._edit(jobs)
        results: list[ModelOutput | None] = [None] * len(jobs)
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

    def _decode(self, texts: list[str], decoding: str) -> list[ModelOutput]:
        ids, mask = pad_ids([self.vocab.encode(t) for t in texts], self.vocab.pad_id)
        # Within the exported profiles: past + new tokens ≤ max_tgt_len + 1, new tokens ≤ max_n.
        max_len = output_limits(mask, self.max_tgt_len - 1)
        if decoding == "greedy":
            decoded = greedy_decode(self.engine, ids, mask, max_len)
        else:
            decoded = aggressive_decode(self.engine, ids, mask, max_len, max_draft=self.max_n - 1)
        return [self._text(d) for d in decoded]

    def plan(self, texts: list[str]) -> list[Plan]:
        """The editor's edits of each text (one pass for all), before the gate."""
        ids, mask = pad_ids([self.vocab.encode(t) for t in texts], self.vocab.pad_id)
        labels, probs = self.engine.edit(ids, mask)
        config = self.info.config
        # The editor's labels: vocabulary ids, then blank (= vocab_size), then KEEP.
        return plan_edits(
            labels, probs, ids, mask, upsample=config["upsample"], blank_id=config["vocab_size"]
        )

    def _space_id(self) -> int | None:
        ids = self.vocab.encode(" ")
        return ids[0] if len(ids) == 1 else None

    def gated(self, text: str, plan: Plan, gate: Gate | float | None = None) -> ModelOutput:
        """``text`` with the planned edits that pass the gate: the calibrated one, or a
        request's ``min_confidence``, one threshold for every edit."""
        edited = apply_edits(plan, self.gate if gate is None else gate)
        chars, confidence = [], []
        for token, origin, prob in zip(edited.ids, edited.origin, edited.confidence, strict=True):
            # A copy is the source character itself, so one outside the vocabulary passes
            # through; a new id is its character (specials are none).
            ch = text[origin] if origin >= 0 else self.vocab.decode([token])
            if ch:
                chars.append(ch)
                confidence.append(prob)
        return ModelOutput("".join(chars), confidence)

    def _edit(self, jobs: list[Job]) -> list[ModelOutput]:
        """One pass for the whole batch; each row gated at its job's threshold."""
        plans = self.plan([job.text for job in jobs])
        return [
            self.gated(job.text, plan, job.min_confidence)
            for plan, job in zip(plans, jobs, strict=True)
        ]

    def _substitute(self, texts: list[str]) -> list[ModelOutput]:
        """One mapper pass: each character replaced by the model's choice for its position."""
        ids, mask = pad_ids([self.vocab.encode(t) for t in texts], self.vocab.pad_id)
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
            results.append(ModelOutput("".join(chars), probs[row, : len(text)].tolist()))
        return results

    def _text(self, decoded: Decoded) -> ModelOutput:
        chars, confidence = [], []
        for token, prob in zip(decoded.ids, decoded.probs, strict=True):
            ch = self.vocab.decode([token])  # specials decode to nothing
            if ch:
                chars.append(ch)
                confidence.append(prob)
        return ModelOutput("".join(chars), confidence)
