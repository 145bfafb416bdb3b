"""CharTransformer: the plain character-level encoder-decoder baseline (~1.49M parameters).

    src_ids ─► src embedding + positions ─► encoder ─► Memory (+ cross K/V per decoder layer)
    tgt ids ─► tgt embedding + positions ─► decoder ─► head ─► logits

The ContextRefiner's layers and interface with a source embedding of its own and no mapper:
the baseline the hybrid has to beat at about the same size. Everything but the encoder input
is the ContextRefiner's (``context_refiner.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from training.models.context_refiner import REFINER_PRESETS, ContextRefiner, ContextRefinerConfig
from training.models.layers import Memory, default_positions

TRANSFORMER_PRESETS: dict[str, dict] = REFINER_PRESETS


@dataclass(frozen=True)
class CharTransformerConfig(ContextRefinerConfig):
    """The ContextRefiner's settings: the two differ only in the encoder's input."""


class CharTransformer(ContextRefiner):
    def __init__(self, config: CharTransformerConfig) -> None:
        super().__init__(config)
        self.src_embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)

    def encode(self, src_ids: Tensor, src_mask: Tensor, features: Tensor | None = None) -> Memory:
        if features is not None:
            raise ValueError("CharTransformer takes no mapper features")
        x = self.src_embed(src_ids)
        x = x + self.positions(default_positions(src_ids)).to(x.dtype)
        states = self.encoder(self.dropout(x), src_mask)
        return Memory(states, src_mask.bool(), self.decoder.cross_kv(states))
