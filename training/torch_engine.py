"""The torch engine: a trained model behind the runtime's `Engine` interface.

``TorchEngine(model)`` offers exactly what ``runtime.engines.onnx.OnnxEngine`` offers (numpy in,
float32 numpy out), computed by the model's own ``encode`` (cross K/V) and functional
``decode_step`` (concatenation-form self-attention cache with a ``tgt_key_mask``), which are
the functions the exported graphs were traced from. So the runtime's decoders,
``runtime.decoding.greedy_decode`` and ``aggressive_decode``, run unchanged on torch: that is
the torch path of input-guided aggressive decoding, and its parity with the exported graphs is
a comparison of two engines under one decoder.

Only the transformer models (hybrid, char_transformer) have this interface; the LSTM's state is
an ``(h, c)`` pair, not a key/value cache, so ``TorchEngine`` refuses it.

This module lives in ``training/`` because it imports torch; ``runtime/`` never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from runtime.engines import KV, CacheOps
from runtime.errors import UserError
from training.models import CharTransformer, HybridCorrector

TransformerModels = (HybridCorrector, CharTransformer)


class TorchEngine(CacheOps):
    """The `runtime.engines.Engine` interface over a torch transformer model, in eval mode."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        if not isinstance(model, TransformerModels):
            raise ValueError(
                f"TorchEngine needs a transformer model (hybrid or char_transformer), not "
                f"{type(model).__name__}: the runtime decoders drive a key/value cache, and "
                "the LSTM's decoder state is not one"
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
        from training import checkpoint

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

    # ------------------------------------------------------------------ the Engine interface

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
