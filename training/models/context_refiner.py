"""ContextRefiner: transformer encoder-decoder with cross-attention (~1.44M parameters by default).

    src_ids ─► embed (+ mapper features) + positions ─► encoder ─► Memory (+ cross K/V per layer)
    tgt ids ─► embed + positions ─► decoder (causal self-attn, cross-attn, FFN) ─► head ─► logits

One character embedding table serves both sides (same vocabulary). Output length is free, so the
refiner handles insertions, deletions and reorders. Used alone it is a plain character-level
transformer; inside HybridCorrector its encoder also receives AtomicMapper features.

Interface (shared with the other seq2seq models, see ``training/models/__init__.py``):
``forward``, ``loss``, ``encode``, ``decode``, ``decode_step``, ``init_cache``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.models.layers import (
    KV,
    KVCache,
    LossOutput,
    Memory,
    SinusoidalPositions,
    TransformerDecoder,
    TransformerEncoder,
    default_positions,
    sequence_loss,
)


@dataclass(frozen=True)
class ContextRefinerConfig:
    vocab_size: int = 270
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    d_model: int = 128
    n_heads: int = 4
    n_enc_layers: int = 3
    n_dec_layers: int = 3
    ffn_dim: int = 512
    dropout: float = 0.1
    max_len: int = 512  # default length of a decoding cache; positions themselves are unbounded


REFINER_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": {
        "d_model": 32,
        "n_heads": 2,
        "n_enc_layers": 1,
        "n_dec_layers": 1,
        "ffn_dim": 64,
        "dropout": 0.0,
    },
}


class ContextRefiner(nn.Module):
    def __init__(self, config: ContextRefinerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.positions = SinusoidalPositions(c.d_model)
        self.encoder = TransformerEncoder(
            c.n_enc_layers, c.d_model, c.n_heads, c.ffn_dim, c.dropout
        )
        self.decoder = TransformerDecoder(
            c.n_dec_layers, c.d_model, c.n_heads, c.ffn_dim, c.dropout
        )
        self.head = nn.Linear(c.d_model, c.vocab_size)
        self.dropout = nn.Dropout(c.dropout)

    # ---------------------------------------------------------------- encoder

    def encode(self, src_ids: Tensor, src_mask: Tensor, features: Tensor | None = None) -> Memory:
        """One encoder pass. ``features [b, src, d_model]`` (optional, e.g. AtomicMapper output)
        is added to the character embedding."""
        x = self.embed(src_ids)
        x = x + self.positions(default_positions(src_ids)).to(x.dtype)
        if features is not None:
            x = x + features
        states = self.encoder(self.dropout(x), src_mask)
        return Memory(states, src_mask.bool(), self.decoder.cross_kv(states))

    # ---------------------------------------------------------------- decoder

    def _embed_tgt(self, tokens: Tensor, positions: Tensor) -> Tensor:
        x = self.embed(tokens)
        return self.dropout(x + self.positions(positions).to(x.dtype))

    def forward(
        self, src_ids: Tensor, src_mask: Tensor, tgt_in_ids: Tensor, features: Tensor | None = None
    ) -> Tensor:
        """Teacher forcing: ``tgt_in_ids = tgt_ids[:, :-1]`` -> logits ``[b, tgt_len, vocab]``."""
        memory = self.encode(src_ids, src_mask, features)
        x = self._embed_tgt(tgt_in_ids, default_positions(tgt_in_ids))
        return self.head(self.decoder(x, memory.cross_kv, memory.src_mask))

    def loss(self, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor, **kw) -> LossOutput:
        """``tgt_ids = [bos] + target + [eos]`` right-padded. Keyword: ``label_smoothing``."""
        logits = self(src_ids, src_mask, tgt_ids[:, :-1])
        ce, n = sequence_loss(logits, tgt_ids, self.config.pad_id, kw.get("label_smoothing", 0.0))
        return LossOutput(ce, ce, None, n)

    def init_cache(
        self,
        batch: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[KVCache]:
        """One preallocated :class:`KVCache` per decoder layer."""
        w = self.head.weight
        return self.decoder.init_cache(
            batch, max_len or self.config.max_len, device or w.device, dtype or w.dtype
        )

    def decode(
        self, tokens: Tensor, positions: Tensor, memory: Memory, cache: list[KVCache]
    ) -> tuple[Tensor, list[KVCache]]:
        """Cached decoding of ``tokens [b, n]`` at ``positions [b, n]`` (prefill, one step, or n
        draft tokens to verify) -> ``(logits [b, n, vocab], cache)``; the cache is updated in
        place and returned."""
        x = self._embed_tgt(tokens, positions)
        h = self.decoder.forward_cached(x, positions, memory.cross_kv, memory.src_mask, cache)
        return self.head(h), cache

    def decode_step(
        self,
        tokens: Tensor,
        positions: Tensor,
        src_mask: Tensor,
        cross_kv: list[KV],
        past_kv: list[KV],
        tgt_key_mask: Tensor,
    ) -> tuple[Tensor, list[KV]]:
        """Pure-tensor decoder step for export (concatenation form).

        ``tokens, positions [b, n]``; ``src_mask [b, src]``; ``cross_kv``/``past_kv``: per layer
        ``(k, v)`` of ``[b, heads, src, hd]`` / ``[b, heads, past_len, hd]`` (past_len may be 0);
        ``tgt_key_mask [b, past_len + n]``: True where a self-attention key slot is real.
        -> ``(logits [b, n, vocab], present_kv [(k, v) [b, heads, past_len + n, hd]])``.
        """
        x = self._embed_tgt(tokens, positions)
        h, present = self.decoder.forward_functional(
            x, tokens, cross_kv, src_mask, past_kv, tgt_key_mask
        )
        return self.head(h), present
