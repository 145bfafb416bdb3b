"""AtomicMapper: a fast, position-wise character mapper (~195K parameters at the default preset).

    src_ids ─► embedding ─► [block] × n_layers ─► norm ─► features [b, src, d_model]
                                                    └──► sub_head ─► sub_logits [b, src, vocab]

A block is ``x + FFN(DepthwiseConv_k(norm(x) · mask))``: each output position sees only a small
window of its neighbours (``kernel`` per block), so the mapper cannot insert or delete, only
rewrite characters in place. Its features feed the ContextRefiner (see ``hybrid.py``); the
auxiliary substitution head predicts the target character at each input position and is trained
only on rows where input and target have the same length (``substitution_targets``).

Padding never changes the outputs of real positions: padded positions are zeroed before every
convolution, which is exactly what the convolution's own zero padding does at a row's end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from training.models.layers import FeedForward, RMSNorm


@dataclass(frozen=True)
class AtomicMapperConfig:
    vocab_size: int = 270
    pad_id: int = 0
    d_model: int = 128
    n_layers: int = 3
    kernel: int = 5
    ffn_dim: int = 160
    dropout: float = 0.1


class MapperBlock(nn.Module):
    def __init__(self, d_model: int, kernel: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (centered window), got {kernel}")
        self.norm = RMSNorm(d_model)
        self.conv = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [b, s, d]``, ``mask [b, s, 1]`` float."""
        h = (self.norm(x) * mask).transpose(1, 2)
        h = self.conv(h).transpose(1, 2)
        return x + self.dropout(self.ffn(h))


class AtomicMapper(nn.Module):
    def __init__(self, config: AtomicMapperConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.blocks = nn.ModuleList(
            MapperBlock(c.d_model, c.kernel, c.ffn_dim, c.dropout) for _ in range(c.n_layers)
        )
        self.norm = RMSNorm(c.d_model)
        self.sub_head = nn.Linear(c.d_model, c.vocab_size)

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> ``features [b, src, d_model]`` (zero at padding), ``sub_logits [b, src, vocab]``."""
        mask = src_mask.to(self.embed.weight.dtype).unsqueeze(-1)
        x = self.embed(src_ids)
        for block in self.blocks:
            x = block(x, mask)
        features = self.norm(x) * mask
        return features, self.sub_head(features)


def substitution_targets(
    src_mask: Tensor, tgt_ids: Tensor, pad_id: int, src_has_specials: bool = False
) -> tuple[Tensor, Tensor]:
    """Per-input-position targets for the substitution head, and where they count.

    ``tgt_ids = [bos] + target + [eos]`` right-padded. A row counts only if input and target have
    the same length; then input position ``i`` should become target character ``i``. With
    ``src_has_specials`` the source is also wrapped in bos/eos (they then map to themselves).
    Returns ``(targets [b, src] long, mask [b, src] bool)``.
    """
    src_mask = src_mask.bool()
    src_len = src_mask.sum(1)
    tgt_len = (tgt_ids != pad_id).sum(1)
    offset, extra = (0, 0) if src_has_specials else (1, 2)
    aligned = src_len + extra == tgt_len
    s = src_mask.shape[1]
    body = tgt_ids[:, offset : offset + s]
    if body.shape[1] < s:
        body = F.pad(body, (0, s - body.shape[1]), value=pad_id)
    return body, src_mask & aligned[:, None]


def substitution_loss(logits: Tensor, target_ids: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of ``logits [b, src, vocab]`` vs ``target_ids [b, src]`` where ``mask``;
    mean over counted positions, and an exact (differentiable) zero when none count."""
    ce = F.cross_entropy(logits.flatten(0, 1).float(), target_ids.flatten(), reduction="none")
    m = mask.flatten().to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp(min=1.0)
