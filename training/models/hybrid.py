"""HybridCorrector: AtomicMapper feeding ContextRefiner (~1.63M parameters by default).

    src_ids ─► AtomicMapper ─► features [b, src, 128] ──┐        sub_logits ─► substitution loss
    src_ids ─► refiner char embedding + positions ──────(+)─► refiner encoder ─► decoder ─► logits

How the mapper feeds the refiner (``encoder_input``):

* ``"sum"`` (default): the refiner encoder reads ``embedding(src) + positions + features``. The
  refiner keeps a direct path to the raw characters, so it is never bottlenecked by what the
  small mapper chose to keep, and the mapper's features act as a learned, local correction
  on top. It costs no parameters: the refiner's embedding table exists anyway for the decoder.
* ``"features"``: the encoder reads ``features + positions`` only (the refiner's embedding is
  then used by the decoder alone).

Training objective (:meth:`HybridCorrector.loss`): decoder cross-entropy plus ``aux_weight`` ×
the mapper's substitution loss on rows whose input and target have the same length.
Decoding (``encode``/``decode``/``decode_step``/``init_cache``) is the refiner's, with the
mapper run once inside ``encode``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.models.atomic_mapper import (
    AtomicMapper,
    AtomicMapperConfig,
    substitution_loss,
    substitution_targets,
)
from training.models.context_refiner import ContextRefiner, ContextRefinerConfig
from training.models.layers import (
    KV,
    KVCache,
    LossOutput,
    Memory,
    default_positions,
    sequence_loss,
)


@dataclass(frozen=True)
class HybridConfig:
    vocab_size: int = 270
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    d_model: int = 128
    dropout: float = 0.1
    max_len: int = 512
    # AtomicMapper
    mapper_layers: int = 3
    mapper_kernel: int = 5
    mapper_ffn_dim: int = 160
    # ContextRefiner
    n_heads: int = 4
    n_enc_layers: int = 3
    n_dec_layers: int = 3
    ffn_dim: int = 512
    # How they are joined and trained
    encoder_input: str = "sum"  # "sum" | "features"
    aux_weight: float = 0.5
    src_has_specials: bool = False  # whether src_ids are wrapped in bos/eos (for the aux targets)

    def __post_init__(self) -> None:
        if self.encoder_input not in ("sum", "features"):
            raise ValueError(
                f"encoder_input must be 'sum' or 'features', not {self.encoder_input!r}"
            )

    def mapper_config(self) -> AtomicMapperConfig:
        return AtomicMapperConfig(
            vocab_size=self.vocab_size,
            pad_id=self.pad_id,
            d_model=self.d_model,
            n_layers=self.mapper_layers,
            kernel=self.mapper_kernel,
            ffn_dim=self.mapper_ffn_dim,
            dropout=self.dropout,
        )

    def refiner_config(self) -> ContextRefinerConfig:
        return ContextRefinerConfig(
            vocab_size=self.vocab_size,
            pad_id=self.pad_id,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_enc_layers=self.n_enc_layers,
            n_dec_layers=self.n_dec_layers,
            ffn_dim=self.ffn_dim,
            dropout=self.dropout,
            max_len=self.max_len,
        )


HYBRID_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": {
        "d_model": 24,
        "dropout": 0.0,
        "mapper_layers": 1,
        "mapper_kernel": 3,
        "mapper_ffn_dim": 48,
        "n_heads": 2,
        "n_enc_layers": 1,
        "n_dec_layers": 1,
        "ffn_dim": 48,
    },
}


class HybridCorrector(nn.Module):
    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.config = config
        self.mapper = AtomicMapper(config.mapper_config())
        self.refiner = ContextRefiner(config.refiner_config())

    # ---------------------------------------------------------------- encoder

    def _encode(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Memory, Tensor]:
        features, sub_logits = self.mapper(src_ids, src_mask)
        r = self.refiner
        if self.config.encoder_input == "sum":
            memory = r.encode(src_ids, src_mask, features)
        else:
            x = features + r.positions(default_positions(src_ids)).to(features.dtype)
            states = r.encoder(r.dropout(x), src_mask)
            memory = Memory(states, src_mask.bool(), r.decoder.cross_kv(states))
        return memory, sub_logits

    def encode(self, src_ids: Tensor, src_mask: Tensor) -> Memory:
        return self._encode(src_ids, src_mask)[0]

    # ---------------------------------------------------------------- training

    def forward_with_aux(
        self, src_ids: Tensor, src_mask: Tensor, tgt_in_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        """-> ``(logits [b, tgt_len, vocab], sub_logits [b, src_len, vocab])``."""
        memory, sub_logits = self._encode(src_ids, src_mask)
        r = self.refiner
        x = r._embed_tgt(tgt_in_ids, default_positions(tgt_in_ids))
        return r.head(r.decoder(x, memory.cross_kv, memory.src_mask)), sub_logits

    def forward(self, src_ids: Tensor, src_mask: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """Teacher forcing -> logits ``[b, tgt_len, vocab]`` (the aux head: forward_with_aux)."""
        return self.forward_with_aux(src_ids, src_mask, tgt_in_ids)[0]

    def loss(
        self,
        src_ids: Tensor,
        src_mask: Tensor,
        tgt_ids: Tensor,
        *,
        sub_targets: Tensor | None = None,
        sub_mask: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> LossOutput:
        """``ce + aux_weight * substitution_loss``. ``sub_targets/sub_mask [b, src]`` default to
        :func:`substitution_targets` (same-length rows, position by position)."""
        c = self.config
        logits, sub_logits = self.forward_with_aux(src_ids, src_mask, tgt_ids[:, :-1])
        ce, n = sequence_loss(logits, tgt_ids, c.pad_id, label_smoothing)
        if sub_targets is None or sub_mask is None:
            sub_targets, sub_mask = substitution_targets(
                src_mask, tgt_ids, c.pad_id, c.src_has_specials
            )
        aux = substitution_loss(sub_logits, sub_targets, sub_mask)
        return LossOutput(ce + c.aux_weight * aux, ce, aux, n)

    # ---------------------------------------------------------------- decoding (the refiner's)

    def init_cache(
        self,
        batch: int,
        max_len: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[KVCache]:
        return self.refiner.init_cache(batch, max_len, device, dtype)

    def decode(
        self, tokens: Tensor, positions: Tensor, memory: Memory, cache: list[KVCache]
    ) -> tuple[Tensor, list[KVCache]]:
        return self.refiner.decode(tokens, positions, memory, cache)

    def decode_step(
        self,
        tokens: Tensor,
        positions: Tensor,
        src_mask: Tensor,
        cross_kv: list[KV],
        past_kv: list[KV],
        tgt_key_mask: Tensor,
    ) -> tuple[Tensor, list[KV]]:
        return self.refiner.decode_step(
            tokens, positions, src_mask, cross_kv, past_kv, tgt_key_mask
        )
