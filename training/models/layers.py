"""Shared building blocks of the model family: norm, attention + KV cache, FFN, positions, layers.

Conventions used by every model in this package (see also ``training/models/__init__.py``):

* Sequences are **right-padded**. ``src_mask`` / ``tgt_key_mask`` are ``[batch, len]`` booleans
  (ints are accepted and cast), ``True`` = a real token.
* ``positions`` are per row, ``[batch, n]`` int64: the absolute index of each token in its row's
  target sequence (``bos`` is position 0). Rows of a batch may sit at different positions.
* Two equivalent decoder execution paths:

  - **cached** (gpt-fast style, for the torch decoders): a preallocated :class:`KVCache` per
    decoder layer, ``[batch, heads, max_len, head_dim]``; new keys/values are written into the
    slots named by ``positions`` and a query at position ``p`` sees slots ``0..p`` of its row.
    Rolling back rejected draft tokens is free: just decode again from an earlier position.
  - **functional** (for export): ``past_k, past_v [b, heads, past_len, head_dim]`` go in,
    ``present_k, present_v [b, heads, past_len + n, head_dim]`` (concatenation) come out.
    ``tgt_key_mask [b, past_len + n]`` says which of those key slots are real; the n new tokens
    are causal among themselves and see every real past slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KV = tuple[Tensor, Tensor]


# ----------------------------------------------------------------------- norms / FFN / positions


class RMSNorm(nn.Module):
    """Root-mean-square norm. Training runs PyTorch's kernel; in eval mode (validation, export) it
    is written out in plain ONNX ops. The two agree to float rounding."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:  # PyTorch's own kernel: 12% of an editor's CPU training step faster
            return F.rms_norm(x.float(), x.shape[-1:], eps=self.eps).type_as(x) * self.weight
        # Written out, in float32 whatever the model's precision: onnxruntime fuses it into one
        # kernel, and an fp16 graph keeps these nodes in float32 (export.variants), where the
        # squares of a residual stream of magnitude 300 cannot overflow.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """Position-wise ``Linear -> GELU -> Linear``."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(F.gelu(self.up(x))))


class SinusoidalPositions(nn.Module):
    """Fixed sin/cos position encoding computed from explicit positions (no length limit).

    ``forward(positions [b, n]) -> [b, n, d_model]`` in float32 (callers cast to their dtype).
    Being a function of the position value, it works for positions longer than anything seen in
    training (up to the cache's max_len). Computed in float32 even in a half-precision model:
    fp16 angles would be off by a large fraction of a radian at positions in the hundreds.
    """

    def __init__(self, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model must be even for sinusoidal positions, got {d_model}")
        self.d_model = d_model
        self.base = base

    def forward(self, positions: Tensor) -> Tensor:
        half = torch.arange(0, self.d_model, 2, device=positions.device, dtype=torch.float32)
        inv_freq = torch.exp(half * (-math.log(self.base) / self.d_model))
        angles = positions.float().unsqueeze(-1) * inv_freq
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def default_positions(ids: Tensor) -> Tensor:
    """``[b, n]`` positions ``0..n-1`` for right-padded sequences."""
    return torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)


# --------------------------------------------------------------------------- masks


def key_padding_mask(mask: Tensor) -> Tensor:
    """``[b, s]`` validity -> ``[b, 1, 1, s]`` boolean attention mask (True = attend).

    A row with no valid key at all (empty source) attends to every key uniformly instead of
    producing NaN; its output is meaningless but finite and cannot leak into other rows.
    """
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask[:, None, None, :]


def causal_mask(n: int, device: torch.device | None = None) -> Tensor:
    """``[1, 1, n, n]`` lower-triangular boolean mask for teacher forcing."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]


def cached_self_mask(positions: Tensor, max_len: int) -> Tensor:
    """Cached path: a query at position ``p`` sees slots ``0..p`` -> ``[b, 1, n, max_len]``."""
    slots = torch.arange(max_len, device=positions.device)
    return (slots[None, None, :] <= positions[:, :, None])[:, None]


def functional_self_mask(tokens: Tensor, past_k: Tensor, tgt_key_mask: Tensor) -> Tensor:
    """Functional path mask ``[b, 1, n, past_len + n]``, built without Python ints (traceable).

    Query ``i`` of the n new tokens sees every past slot marked valid in ``tgt_key_mask`` and new
    slots ``<= i`` marked valid; it always sees itself (so a padded query never gets an empty row).
    """
    q_ones = torch.ones_like(tokens[0], dtype=torch.bool)  # [n]
    past_ones = torch.ones_like(past_k[0, 0, :, 0], dtype=torch.bool)  # [past_len]
    square = q_ones[:, None] & q_ones[None, :]  # [n, n]
    lower = torch.tril(square)
    diag = lower & torch.triu(square)
    past_block = q_ones[:, None] & past_ones[None, :]  # [n, past_len]
    block = torch.cat([past_block, lower], dim=-1)  # [n, past_len + n]
    self_diag = torch.cat([torch.zeros_like(past_block), diag], dim=-1)
    mask = (block[None] & tgt_key_mask.bool()[:, None, :]) | self_diag[None]
    return mask[:, None]  # [b, 1, n, past_len + n]


# --------------------------------------------------------------------------- attention + cache


class KVCache:
    """Preallocated per-layer self-attention cache (gpt-fast style).

    ``k, v: [batch, heads, max_len, head_dim]``. :meth:`update` writes the new keys/values of each
    row at that row's ``positions`` and returns the whole buffers, which the attention then reads
    with :func:`cached_self_mask` (a query at position p sees slots 0..p).
    """

    def __init__(
        self,
        batch: int,
        n_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, positions: Tensor, k: Tensor, v: Tensor) -> KV:
        """``positions [b, n]``, ``k, v [b, heads, n, head_dim]`` -> full ``(k, v)`` buffers."""
        index = positions[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        self.k.scatter_(2, index, k.to(self.k.dtype))
        self.v.scatter_(2, index, v.to(self.v.dtype))
        return self.k, self.v

    def select(self, rows: Tensor) -> KVCache:
        """Keep (or reorder) batch rows in place, e.g. to drop finished rows. Returns self."""
        self.k = self.k.index_select(0, rows)
        self.v = self.v.index_select(0, rows)
        return self


class MultiHeadAttention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention``; separate q/k/v projections so
    that cross-attention keys/values can be projected once per source (:meth:`project_kv`)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.wq = nn.Linear(d_model, d_model, bias=bias)
        self.wk = nn.Linear(d_model, d_model, bias=bias)
        self.wv = nn.Linear(d_model, d_model, bias=bias)
        self.wo = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: Tensor) -> Tensor:  # [b, s, d] -> [b, h, s, hd]
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def project_q(self, x: Tensor) -> Tensor:
        return self._split(self.wq(x))

    def project_kv(self, x: Tensor) -> KV:
        return self._split(self.wk(x)), self._split(self.wv(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """``q [b,h,n,hd]`` over ``k, v [b,h,s,hd]`` with boolean ``mask`` broadcastable to
        ``[b,h,n,s]`` (True = attend) -> ``[b, n, d]`` after the output projection.

        Every query sees at least one key (:func:`key_padding_mask` and the causal masks see to
        it), so the mask goes in as a bias: a boolean one exports with a guard against rows
        that see nothing, two more passes over every score matrix (10% of the editor's graph)."""
        p = self.dropout if self.training else 0.0
        bias = torch.zeros_like(mask, dtype=q.dtype).masked_fill(~mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        return self.wo(out.transpose(1, 2).flatten(-2))

    def forward(self, x: Tensor, mask: Tensor, source: Tensor | None = None) -> Tensor:
        k, v = self.project_kv(x if source is None else source)
        return self.attend(self.project_q(x), k, v, mask)


# --------------------------------------------------------------------------- layers


class EncoderLayer(nn.Module):
    """Pre-norm ``x + SelfAttn(norm x)``, ``x + FFN(norm x)``."""

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(d_model)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn_norm = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x [b, s, d]``, ``mask``: :func:`key_padding_mask` of the source."""
        x = x + self.dropout(self.attn(self.attn_norm(x), mask))
        return x + self.dropout(self.ffn(self.ffn_norm(x)))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention over the encoder, FFN.

    One :meth:`forward` serves all three modes; the self-attention keys/values are the new ones
    alone (teacher forcing), written into a :class:`KVCache` (cached decoding) or concatenated
    after ``past_kv`` (functional decoding). Returns the output and the full self-attention
    ``(k, v)`` it attended over (the "present" in the functional mode).
    """

    def __init__(self, d_model: int, n_heads: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.self_norm = RMSNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.cross_norm = RMSNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.ffn_norm = RMSNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor,
        cross_kv: KV,
        cross_mask: Tensor,
        *,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        past_kv: KV | None = None,
    ) -> tuple[Tensor, KV]:
        h = self.self_norm(x)
        q = self.self_attn.project_q(h)
        k, v = self.self_attn.project_kv(h)
        if cache is not None:
            assert positions is not None, "cached decoding needs positions"
            k, v = cache.update(positions, k, v)
        elif past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        x = x + self.dropout(self.self_attn.attend(q, k, v, self_mask))
        q = self.cross_attn.project_q(self.cross_norm(x))
        x = x + self.dropout(self.cross_attn.attend(q, cross_kv[0], cross_kv[1], cross_mask))
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x, (k, v)


# --------------------------------------------------------------------------- stacks


@dataclass
class Memory:
    """What one encoder pass leaves for the decoder.

    ``states [b, src, d]`` encoder output; ``src_mask [b, src]`` bool; ``cross_kv``: one
    ``(k, v)`` pair ``[b, heads, src, head_dim]`` per decoder layer, projected once here.
    """

    states: Tensor
    src_mask: Tensor
    cross_kv: list[KV]

    def select(self, rows: Tensor) -> Memory:
        """Keep (or reorder) batch rows; returns a new Memory."""
        return Memory(
            self.states.index_select(0, rows),
            self.src_mask.index_select(0, rows),
            [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.cross_kv],
        )


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` + final norm over already-embedded input."""

    def __init__(self, n_layers: int, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, n_heads, ffn_dim, dropout) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model)

    def forward(self, x: Tensor, src_mask: Tensor) -> Tensor:
        mask = key_padding_mask(src_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class TransformerDecoder(nn.Module):
    """A stack of :class:`DecoderLayer` + final norm over already-embedded target input.

    The three entry points differ only in where self-attention keys come from:
    :meth:`forward` (teacher forcing, causal), :meth:`forward_cached` (:class:`KVCache` list),
    :meth:`forward_functional` (``past_kv`` list in, present list out).
    """

    def __init__(self, n_layers: int, d_model: int, n_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, n_heads, ffn_dim, dropout) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model)

    def cross_kv(self, memory: Tensor) -> list[KV]:
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]

    def init_cache(
        self, batch: int, max_len: int, device=None, dtype: torch.dtype = torch.float32
    ) -> list[KVCache]:
        return [
            KVCache(batch, self.n_heads, max_len, self.head_dim, device, dtype) for _ in self.layers
        ]

    def forward(self, x: Tensor, cross_kv: list[KV], src_mask: Tensor) -> Tensor:
        self_mask = causal_mask(x.shape[1], x.device)
        cross_mask = key_padding_mask(src_mask)
        for layer, ckv in zip(self.layers, cross_kv, strict=True):
            x, _ = layer(x, self_mask, ckv, cross_mask)
        return self.norm(x)

    def forward_cached(
        self,
        x: Tensor,
        positions: Tensor,
        cross_kv: list[KV],
        src_mask: Tensor,
        cache: list[KVCache],
    ) -> Tensor:
        self_mask = cached_self_mask(positions, cache[0].max_len)
        cross_mask = key_padding_mask(src_mask)
        for layer, ckv, c in zip(self.layers, cross_kv, cache, strict=True):
            x, _ = layer(x, self_mask, ckv, cross_mask, positions=positions, cache=c)
        return self.norm(x)

    def forward_functional(
        self,
        x: Tensor,
        tokens: Tensor,
        cross_kv: list[KV],
        src_mask: Tensor,
        past_kv: list[KV],
        tgt_key_mask: Tensor,
    ) -> tuple[Tensor, list[KV]]:
        self_mask = functional_self_mask(tokens, past_kv[0][0], tgt_key_mask)
        cross_mask = key_padding_mask(src_mask)
        present = []
        for layer, ckv, pkv in zip(self.layers, cross_kv, past_kv, strict=True):
            x, kv = layer(x, self_mask, ckv, cross_mask, past_kv=pkv)
            present.append(kv)
        return self.norm(x), present


# --------------------------------------------------------------------------- loss


@dataclass
class LossOutput:
    """``loss``: the scalar to backpropagate; ``ce``: token cross-entropy of the decoder;
    ``aux``: auxiliary loss (hybrid's substitution head) or None; ``n_tokens``: counted targets."""

    loss: Tensor
    ce: Tensor
    aux: Tensor | None
    n_tokens: int


def sequence_loss(
    logits: Tensor, tgt_ids: Tensor, pad_id: int, label_smoothing: float = 0.0
) -> tuple[Tensor, int]:
    """Teacher-forcing cross-entropy. ``tgt_ids = [bos] + target + [eos]`` right-padded with
    ``pad_id``; ``logits`` were computed from ``tgt_ids[:, :-1]`` and predict ``tgt_ids[:, 1:]``.
    Mean over non-pad targets."""
    labels = tgt_ids[:, 1:]
    loss = F.cross_entropy(
        logits.flatten(0, 1).float(),
        labels.flatten(),
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )
    return loss, int((labels != pad_id).sum())
