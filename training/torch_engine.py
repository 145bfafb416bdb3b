"""The torch engine: a trained model behind the runtime's `Engine` interface.

``TorchEngine(model)`` offers exactly what ``runtime.engines.onnx.OnnxEngine`` offers (numpy in,
float32 numpy out), computed by the model's own ``encode`` (cross K/V) and functional
``decode_step`` (concatenation-form self-attention cache with a ``tgt_key_mask``), which are
the functions the exported graphs were traced from. So the runtime's decoders,
``runtime.decoding.greedy_decode`` and ``aggressive_decode``, run unchanged on torch: that is
the torch path of input-guided aggressive decoding, and its parity with the exported graphs is
a comparison of two engines under one decoder.

The editor has the one-pass interface instead (``edit``: the best label of every frame, as
its exported graph computes it), which ``runtime.editing`` turns into text. The LSTM's state is
an ``(h, c)`` pair, not a key/value cache, so ``TorchEngine`` refuses it.

This module lives in ``training/`` because it imports torch; ``runtime/`` never does.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from runtime.corrector import Corrector, ModelInfo
from runtime.engines import KV, CacheOps
from runtime.errors import UserError
from training import checkpoint
from training.models import CharTransformer, Editor, HybridCorrector

EngineModels = (Editor, HybridCorrector, CharTransformer)


class TorchEngine(CacheOps):
    """The `runtime.engines` interfaces over a torch model, in eval mode: `edit` for the
    editor, `Engine` for the transformer sequence-to-sequence models."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        if not isinstance(model, EngineModels):
            raise ValueError(
                f"TorchEngine needs the editor or a transformer model (hybrid or "
                f"char_transformer), not {type(model).__name__}: the runtime decoders drive a "
                "key/value cache, and the LSTM's decoder state is not one"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = next(model.parameters()).dtype
        config = model.config
        self.pad_id, self.bos_id, self.eos_id = config.pad_id, config.bos_id, config.eos_id

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", tag: str = "best"
    ) -> TorchEngine:
        """The engine of a run directory's (or checkpoint file's) model."""
        return cls(checkpoint.load(Path(path), tag).model, device)

    # ------------------------------------------------------------------ conversions

    def _ids(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)

    def _mask(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=bool)).to(self.device)

    def _floats(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        return tensor.to(self.device, self.dtype)

    @staticmethod
    def _numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float32).numpy()

    def _pairs_in(self, pairs: list[KV]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self._floats(k), self._floats(v)) for k, v in pairs]

    def _pairs_out(self, pairs) -> list[KV]:
        return [(self._numpy(k), self._numpy(v)) for k, v in pairs]

    # ------------------------------------------------------------------ the interfaces

    def edit(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The editor's one pass: every frame's best label and its probability."""
        if not isinstance(self.model, Editor):
            raise UserError(f"{type(self.model).__name__} is not an editor; it has no `edit`")
        with torch.inference_mode():
            labels, probs = self.model.best_path(self._ids(src_ids), self._mask(src_mask))
            return labels.cpu().numpy(), self._numpy(probs)

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[KV]:
        with torch.inference_mode():
            memory = self.model.encode(self._ids(src_ids), self._mask(src_mask))
            return self._pairs_out(memory.cross_kv)

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: np.ndarray,
        tgt_key_mask: np.ndarray,
        cross: list[KV],
        past: list[KV],
    ) -> tuple[np.ndarray, list[KV]]:
        with torch.inference_mode():
            logits, present = self.model.decode_step(
                self._ids(tokens),
                self._ids(positions),
                self._mask(src_mask),
                self._pairs_in(cross),
                self._pairs_in(past),
                self._mask(tgt_key_mask),
            )
            return self._numpy(logits), self._pairs_out(present)

    def substitution_logits(self, src_ids: np.ndarray, src_mask: np.ndarray) -> np.ndarray:
        """The hybrid's AtomicMapper alone, ``[b, src, vocab]``: substitutions in one pass."""
        if not isinstance(self.model, HybridCorrector):
            raise UserError(
                f"{type(self.model).__name__} has no AtomicMapper (only hybrid models have one)"
            )
        with torch.inference_mode():
            return self._numpy(self.model.mapper(self._ids(src_ids), self._mask(src_mask))[1])


def checkpoint_corrector(
    ckpt: checkpoint.Checkpoint, device: str | torch.device = "cpu", min_confidence: float = 0.0
) -> Corrector:
    """The serving `Corrector` over a checkpoint's model in torch: the same pipeline, batching,
    decoders and gate as an exported artifact, so what `kmcorrect eval` reports of a run is what
    its artifact will answer. ``min_confidence``: the editor's gate (export calibrates it)."""
    config = asdict(ckpt.model.config)
    train = ckpt.meta.get("train_config") or {}
    max_tgt_len = int(train.get("max_tgt_len", 256)) + 1  # bos + target, as export sets it
    info = ModelInfo(
        name=ckpt.model_name,
        config=config,
        vocab=ckpt.vocab,
        max_src_len=int(train.get("max_src_len", 256)),
        max_tgt_len=max_tgt_len,
        max_n=min(64, max_tgt_len),
        model_id=str(ckpt.meta.get("sha256", ""))[:16],
        has_mapper=isinstance(ckpt.model, HybridCorrector),
        min_confidence=min_confidence,
    )
    return Corrector(info, TorchEngine(ckpt.model, device))
