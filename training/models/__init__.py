"""The model family: one readable file per model, plain PyTorch, config dataclasses with presets.

    editor            non-autoregressive copy-aware CTC editor, one pass  (editor.py; the default)
    hybrid            HybridCorrector = AtomicMapper ─► ContextRefiner   (~1.65M, hybrid.py)
    char_transformer  plain character encoder-decoder baseline           (~1.49M)
    char_lstm         BiLSTM encoder + attentive LSTM decoder baseline   (~1.52M)

(default presets, vocab_size=270; every model also has a "tiny" preset for tests.)

Common seq2seq interface (what the trainer, the exporter and the decoders use):

* ``forward(src_ids, src_mask, tgt_in_ids) -> logits [b, tgt_len, vocab]`` — teacher forcing.
* ``loss(src_ids, src_mask, tgt_ids, **kw) -> LossOutput(loss, ce, aux, n_tokens)`` — the
  training objective: ``tgt_ids = [bos] + target + [eos]`` right-padded, logits from
  ``tgt_ids[:, :-1]`` predict ``tgt_ids[:, 1:]``, pad ignored. The hybrid adds its substitution
  loss (``aux``); ``forward_with_aux`` returns its sub_logits too.
* ``encode(src_ids, src_mask) -> Memory`` — one encoder pass (cross K/V precomputed per layer;
  ``LSTMMemory`` for the LSTM). ``.select(rows)`` keeps/reorders batch rows.
* ``init_cache(batch, max_len=None, device=None, dtype=None) -> cache`` — list of ``KVCache``
  (one per decoder layer), or an ``LSTMCache``.
* ``decode(tokens [b, n], positions [b, n], memory, cache) -> (logits [b, n, vocab], cache)``
  — prefill, single step, or verification of n draft tokens; causal among the n tokens and
  attending to the cached past of the row. The cache is addressed by position: a query at
  position p sees what was written at positions 0..p of its row, so rows may advance at
  different speeds and rejected drafts are rolled back simply by decoding from an earlier
  position again.
* ``decode_step(...)`` — the same decoder as a pure function of tensors, for export
  (``export_step.DecoderStepExport``; transformers: concatenation-form K/V with a
  ``tgt_key_mask``; LSTM: ``(h, c)`` in and out).

Masks are booleans, True = real token; all sequences are right-padded. Positions are int64.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

from torch import nn

from training.models.char_lstm import LSTM_PRESETS, CharLSTM, CharLSTMConfig
from training.models.char_transformer import (
    TRANSFORMER_PRESETS,
    CharTransformer,
    CharTransformerConfig,
)
from training.models.editor import EDITOR_PRESETS, Editor, EditorConfig
from training.models.hybrid import HYBRID_PRESETS, HybridConfig, HybridCorrector
from training.models.layers import KVCache, LossOutput, Memory


@dataclass(frozen=True)
class ModelSpec:
    model_cls: type[nn.Module]
    config_cls: type
    presets: dict[str, dict]


MODELS: dict[str, ModelSpec] = {
    "editor": ModelSpec(Editor, EditorConfig, EDITOR_PRESETS),
    "hybrid": ModelSpec(HybridCorrector, HybridConfig, HYBRID_PRESETS),
    "char_transformer": ModelSpec(CharTransformer, CharTransformerConfig, TRANSFORMER_PRESETS),
    "char_lstm": ModelSpec(CharLSTM, CharLSTMConfig, LSTM_PRESETS),
}


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    return MODELS[name]


def build_config(name: str, vocab_size: int, preset: str = "default", **overrides):
    """The config dataclass of model ``name`` at ``preset`` with ``overrides`` applied."""
    spec = _spec(name)
    if preset not in spec.presets:
        raise ValueError(f"unknown preset {preset!r} for {name!r}; valid: {sorted(spec.presets)}")
    valid = {f.name for f in dataclasses.fields(spec.config_cls)} - {"vocab_size"}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(
            f"unknown config field(s) {sorted(unknown)} for {name!r}; valid: {sorted(valid)}"
        )
    return replace(spec.config_cls(vocab_size=vocab_size, **spec.presets[preset]), **overrides)


def build_model(name: str, vocab_size: int, preset: str = "default", **overrides) -> nn.Module:
    """E.g. ``build_model("hybrid", len(vocab), "tiny", dropout=0.0)``."""
    return _spec(name).model_cls(build_config(name, vocab_size, preset, **overrides))


def model_from_config(name: str, config: dict) -> nn.Module:
    """Rebuild a model from ``dataclasses.asdict(model.config)`` (e.g. stored with a checkpoint)."""
    config = dict(config)
    return build_model(name, config.pop("vocab_size"), "default", **config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MODELS",
    "CharLSTM",
    "CharLSTMConfig",
    "CharTransformer",
    "CharTransformerConfig",
    "Editor",
    "EditorConfig",
    "HybridConfig",
    "HybridCorrector",
    "KVCache",
    "LossOutput",
    "Memory",
    "ModelSpec",
    "build_config",
    "build_model",
    "count_parameters",
    "model_from_config",
]
