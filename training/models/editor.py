"""Editor: a non-autoregressive, copy-aware CTC corrector that edits a text in one pass.

    src_ids ─► embedding + positions ─► [block] × n_layers            (one position a character)
            ─► upsample × k: each position becomes k frames (+ a slot embedding)
            ─► [block] × n_frame_layers                               (one position a frame)
            ─► head: per frame, a distribution over vocabulary + blank + KEEP

A block is ``x + DepthwiseConv(norm x)`` (errors are local: a cheap window over the
neighbours first), ``x + SelfAttention(norm x)``, ``x + FFN(norm x)``.

Copy-aware CTC (Zhang et al., EMNLP 2023, "Non-autoregressive text editing with copy-aware
latent alignments"): KEEP at a frame means "emit the source character this frame came from".
For the loss, KEEP's probability is added to that character's, giving an ordinary CTC
distribution over vocabulary + blank whose alignments are marginalized as usual. Copying is
then one class that is easy to learn, whatever the character, and a character the model
cannot name passes through by KEEP.

Decoding is one forward pass: the best label of every frame (``best_path``: KEEP already
resolved to the source character), then the CTC collapse, which lives in the runtime
(``runtime.editing``) so that training, export checks and serving turn frames into text the
same way.

With k frames a position, the output is at most k times the input; k = 3 lets one position
emit a consonant, its restored subscript and a vowel moved back into the cluster, while every
doubled letter still fits (a blank between).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.layers import (
    FeedForward,
    LossOutput,
    MultiHeadAttention,
    RMSNorm,
    SinusoidalPositions,
    default_positions,
    key_padding_mask,
)


@dataclass(frozen=True)
class EditorConfig:
    vocab_size: int = 270
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    # The defaults won side by side at equal CPU time (docs/results.md): on 2 cores a narrow
    # model that sees more rows per minute beats a wider one, dropout only slows learning
    # within the hours a CPU gives, and frame layers cost more than they return.
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4  # over characters
    n_frame_layers: int = 0  # over the upsampled frames
    ffn_dim: int = 384
    kernel: int = 5  # depthwise convolution window of every block; odd
    upsample: int = 3  # frames per input character (k)
    dropout: float = 0.0

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    @property
    def keep_id(self) -> int:
        return self.vocab_size + 1


EDITOR_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": {
        "d_model": 32,
        "n_heads": 2,
        "n_layers": 1,
        "n_frame_layers": 1,
        "ffn_dim": 64,
        "kernel": 3,
        "dropout": 0.0,
    },
}


class EditorBlock(nn.Module):
    """Pre-norm ``x + DWConv(norm x)``, ``x + Attn(norm x)``, ``x + FFN(norm x)``.

    Padded positions are zeroed before the convolution, which is what the convolution's own
    zero padding does at a row's end, so padding never changes a real position's output.
    """

    def __init__(self, c: EditorConfig) -> None:
        super().__init__()
        if c.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (a centered window), got {c.kernel}")
        self.conv_norm = RMSNorm(c.d_model)
        self.conv = nn.Conv1d(
            c.d_model, c.d_model, c.kernel, padding=c.kernel // 2, groups=c.d_model
        )
        self.attn_norm = RMSNorm(c.d_model)
        self.attn = MultiHeadAttention(c.d_model, c.n_heads, c.dropout)
        self.ffn_norm = RMSNorm(c.d_model)
        self.ffn = FeedForward(c.d_model, c.ffn_dim, c.dropout)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: Tensor, keep: Tensor, attn_mask: Tensor) -> Tensor:
        """``x [b, s, d]``; ``keep [b, s, 1]`` float validity; ``attn_mask`` from
        :func:`key_padding_mask`."""
        h = (self.conv_norm(x) * keep).transpose(1, 2)
        x = x + self.dropout(self.conv(h).transpose(1, 2))
        x = x + self.dropout(self.attn(self.attn_norm(x), attn_mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class Editor(nn.Module):
    def __init__(self, config: EditorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.positions = SinusoidalPositions(c.d_model)
        self.blocks = nn.ModuleList(EditorBlock(c) for _ in range(c.n_layers))
        self.upsample = nn.Linear(c.d_model, c.upsample * c.d_model)
        self.slot = nn.Parameter(torch.zeros(c.upsample, c.d_model))
        self.frame_blocks = nn.ModuleList(EditorBlock(c) for _ in range(c.n_frame_layers))
        self.norm = RMSNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size + 2)  # + blank + KEEP
        nn.init.normal_(self.slot, std=0.02)

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> Tensor:
        """-> logits ``[b, src * k, vocab + 2]``; frame ``t`` came from source position
        ``t // k``."""
        c = self.config
        src_mask = src_mask.bool()
        x = self.embed(src_ids) * (c.d_model**0.5)
        x = x + self.positions(default_positions(src_ids)).to(x.dtype)
        x = self._run(self.blocks, x, src_mask)
        b, s, d = x.shape
        frames = self.upsample(x).view(b, s, c.upsample, d) + self.slot.to(x.dtype)
        frame_mask = src_mask.repeat_interleave(c.upsample, dim=1)
        x = self._run(self.frame_blocks, frames.view(b, s * c.upsample, d), frame_mask)
        return self.head(self.norm(x))

    @staticmethod
    def _run(blocks: nn.ModuleList, x: Tensor, mask: Tensor) -> Tensor:
        keep = mask.to(x.dtype).unsqueeze(-1)
        attn_mask = key_padding_mask(mask)
        for block in blocks:
            x = block(x, keep, attn_mask)
        return x * keep

    # ------------------------------------------------------------------ loss and decoding

    def loss(self, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor) -> LossOutput:
        """Copy-aware CTC. ``tgt_ids = [bos] + target + [eos]`` right-padded (the trainer's
        layout, shared with the seq2seq models); bos and eos are dropped here. Mean over
        target characters; rows whose target cannot fit in their frames count zero."""
        c = self.config
        body = tgt_ids[:, 1:]
        body = body.masked_fill(body == c.eos_id, c.pad_id)
        target_lengths = (body != c.pad_id).sum(1)
        total = copy_aware_ctc(
            self(src_ids, src_mask), src_ids, src_mask, body, target_lengths, c.upsample, c.blank_id
        )
        n_tokens = int(target_lengths.sum())
        loss = total / max(1, n_tokens)
        return LossOutput(loss, loss.detach(), None, n_tokens)

    def best_path(self, src_ids: Tensor, src_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per frame, the most probable label of the merged distribution (a character id or
        blank) and its probability: ``labels [b, frames] int64``, ``probs [b, frames]``.
        This is what the exported graph computes; ``runtime.editing`` collapses it."""
        return best_path(self(src_ids, src_mask), src_ids, self.config.upsample)


def merge_keep(log_probs: Tensor, src_ids: Tensor, upsample: int) -> Tensor:
    """``log_probs [b, frames, vocab + 2]`` (vocabulary, blank, KEEP) -> ``[b, frames,
    vocab + 1]``: KEEP's probability added to that of each frame's source character."""
    keep = log_probs.shape[-1] - 1
    source = src_ids.repeat_interleave(upsample, dim=1).unsqueeze(-1)
    copied = torch.logaddexp(log_probs.gather(-1, source), log_probs[..., keep:])
    return log_probs[..., :keep].scatter(-1, source, copied)


def copy_aware_ctc(
    logits: Tensor,
    src_ids: Tensor,
    src_mask: Tensor,
    targets: Tensor,
    target_lengths: Tensor,
    upsample: int,
    blank_id: int,
) -> Tensor:
    """Summed CTC loss of ``targets [b, tgt]`` (right-padded) over the merged distribution of
    ``logits [b, src * k, vocab + 2]``; an impossible alignment (target longer than the
    frames allow) counts zero instead of infinity."""
    merged = merge_keep(logits.float().log_softmax(-1), src_ids, upsample)
    return F.ctc_loss(
        merged.transpose(0, 1),
        targets,
        src_mask.sum(1) * upsample,
        target_lengths,
        blank=blank_id,
        reduction="sum",
        zero_infinity=True,
    )


def best_path(logits: Tensor, src_ids: Tensor, upsample: int) -> tuple[Tensor, Tensor]:
    """Every frame's most probable label of the merged distribution and its probability.

    Found without writing the merged distribution out: merging KEEP into the source character
    only raises that character, so the winner is either the source character (merged) or the
    best label overall; where KEEP itself is the best label, the source character wins. Ties
    go to the lower label, as ``max`` over the merged distribution would. The head's output
    is the graph's largest tensor, so this saves two copies of it (a slice and a scatter)."""
    probs = logits.float().softmax(-1)
    keep = probs.shape[-1] - 1
    source = src_ids.repeat_interleave(upsample, dim=1)
    top, top_label = probs.max(-1)
    copied = probs.gather(-1, source.unsqueeze(-1)).squeeze(-1) + probs[..., keep]
    take = (top_label == keep) | (copied > top) | ((copied == top) & (source <= top_label))
    return torch.where(take, source, top_label), torch.where(take, copied, top)
