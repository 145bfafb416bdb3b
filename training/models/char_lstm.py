"""CharLSTM: BiLSTM encoder + LSTM decoder with attention over the encoder (~1.5M parameters).

    src_ids ─► embed ─► [fwd LSTM ‖ bwd LSTM] × n_enc_layers ─► states [b, src, 2·enc_hidden]
                                         └► masked mean ─► bridge ─► initial decoder (h, c)
    tgt ids ─► embed ─► LSTM ─► h_t ─► attention(h_t, keys, states) ─► tanh(W [h_t; ctx]) ─► head

Luong-style attention, keys projected once per source in ``encode`` (the LSTM's counterpart of
the transformers' precomputed cross K/V). The decoder's cache is its LSTM state instead of K/V:

* cached path (``init_cache``/``decode``): :class:`LSTMCache` keeps the state *after* every
  position, ``[layers, batch, max_len, hidden]``, so it is addressed by ``positions`` exactly like
  a KVCache: decoding at position ``p`` starts from the state stored at ``p - 1`` (or the
  encoder's initial state at ``p = 0``). Rows at different positions and rollback of rejected
  draft tokens work as for the transformers.
* functional path (``decode_step``): ``(h, c) [layers, b, hidden]`` in, the state after all n
  tokens out.

The backward direction runs on each row's valid prefix reversed in place, so right padding never
reaches a real position (no packing needed, and it stays traceable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.models.layers import LossOutput, key_padding_mask, sequence_loss

State = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class CharLSTMConfig:
    vocab_size: int = 270
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    embed_dim: int = 128
    enc_hidden: int = 128  # per direction
    n_enc_layers: int = 2
    dec_hidden: int = 256
    n_dec_layers: int = 1
    dropout: float = 0.1
    max_len: int = 512  # default length of a decoding cache


LSTM_PRESETS: dict[str, dict] = {
    "default": {},
    "tiny": {
        "embed_dim": 24,
        "enc_hidden": 24,
        "n_enc_layers": 1,
        "dec_hidden": 32,
        "n_dec_layers": 1,
        "dropout": 0.0,
    },
}


@dataclass
class LSTMMemory:
    """``states [b, src, 2·enc_hidden]``; ``keys [b, src, dec_hidden]`` (projected once);
    ``src_mask [b, src]`` bool; ``init_state``: the decoder's ``(h, c)`` before position 0,
    each ``[layers, b, dec_hidden]``."""

    states: Tensor
    keys: Tensor
    src_mask: Tensor
    init_state: State

    def select(self, rows: Tensor) -> LSTMMemory:
        h, c = self.init_state
        return LSTMMemory(
            self.states.index_select(0, rows),
            self.keys.index_select(0, rows),
            self.src_mask.index_select(0, rows),
            (h.index_select(1, rows), c.index_select(1, rows)),
        )


class LSTMCache:
    """Decoder LSTM state after each position: ``h, c [layers, batch, max_len, hidden]``."""

    def __init__(
        self,
        layers: int,
        batch: int,
        max_len: int,
        hidden: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (layers, batch, max_len, hidden)
        self.h = torch.zeros(shape, device=device, dtype=dtype)
        self.c = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def max_len(self) -> int:
        return self.h.shape[2]

    def state_before(self, positions: Tensor, init_state: State) -> State:
        """State to start from for a row whose next token sits at ``positions [b]``."""
        idx = (positions - 1).clamp(min=0)[None, :, None, None]
        idx = idx.expand(self.h.shape[0], -1, 1, self.h.shape[3])
        first = (positions == 0)[None, :, None]
        h = torch.where(first, init_state[0], self.h.gather(2, idx).squeeze(2))
        c = torch.where(first, init_state[1], self.c.gather(2, idx).squeeze(2))
        return h, c

    def update(self, positions: Tensor, h: Tensor, c: Tensor) -> None:
        """``positions [b, n]``; ``h, c [layers, b, n, hidden]``: the state after each token."""
        idx = positions[None, :, :, None].expand(h.shape[0], -1, -1, h.shape[3])
        self.h.scatter_(2, idx, h.to(self.h.dtype))
        self.c.scatter_(2, idx, c.to(self.c.dtype))

    def select(self, rows: Tensor) -> LSTMCache:
        self.h = self.h.index_select(1, rows)
        self.c = self.c.index_select(1, rows)
        return self


def _reverse_valid(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first ``lengths[b]`` steps, leave its padding where it is (an
    involution: applying it twice gives ``x`` back)."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]
    idx = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[2]))


class CharLSTM(nn.Module):
    def __init__(self, config: CharLSTMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.src_embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=c.pad_id)
        self.enc_fwd = nn.ModuleList()
        self.enc_bwd = nn.ModuleList()
        for i in range(c.n_enc_layers):
            d_in = c.embed_dim if i == 0 else 2 * c.enc_hidden
            self.enc_fwd.append(nn.LSTM(d_in, c.enc_hidden, batch_first=True))
            self.enc_bwd.append(nn.LSTM(d_in, c.enc_hidden, batch_first=True))
        d_enc = 2 * c.enc_hidden
        self.bridge = nn.Linear(d_enc, 2 * c.n_dec_layers * c.dec_hidden)
        self.attn_key = nn.Linear(d_enc, c.dec_hidden, bias=False)
        self.decoder = nn.LSTM(
            c.embed_dim,
            c.dec_hidden,
            num_layers=c.n_dec_layers,
            batch_first=True,
            dropout=c.dropout if c.n_dec_layers > 1 else 0.0,
        )
        self.combine = nn.Linear(c.dec_hidden + d_enc, c.dec_hidden)
        self.head = nn.Linear(c.dec_hidden, c.vocab_size)
        self.dropout = nn.Dropout(c.dropout)

    # ---------------------------------------------------------------- encoder

    def encode(self, src_ids: Tensor, src_mask: Tensor) -> LSTMMemory:
        c = self.config
        src_mask = src_mask.bool()
        lengths = src_mask.sum(1)
        x = self.dropout(self.src_embed(src_ids))
        for fwd, bwd in zip(self.enc_fwd, self.enc_bwd, strict=True):
            out_f, _ = fwd(x)
            out_b, _ = bwd(_reverse_valid(x, lengths))
            x = self.dropout(torch.cat([out_f, _reverse_valid(out_b, lengths)], dim=-1))
        m = src_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
        hc = self.bridge(pooled).view(-1, 2, c.n_dec_layers, c.dec_hidden)  # [b, 2, L, H]
        h0 = torch.tanh(hc[:, 0]).transpose(0, 1).contiguous()
        c0 = hc[:, 1].transpose(0, 1).contiguous()
        return LSTMMemory(x, self.attn_key(x), src_mask, (h0, c0))

    # ---------------------------------------------------------------- decoder

    def _output(self, h: Tensor, keys: Tensor, states: Tensor, src_mask: Tensor) -> Tensor:
        """Decoder outputs ``h [b, n, H]`` -> logits, attending over the encoder states."""
        ctx = F.scaled_dot_product_attention(
            h[:, None], keys[:, None], states[:, None], attn_mask=key_padding_mask(src_mask)
        )[:, 0]
        out = torch.tanh(self.combine(torch.cat([h, ctx], dim=-1)))
        return self.head(self.dropout(out))

    def forward(self, src_ids: Tensor, src_mask: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """Teacher forcing: ``tgt_in_ids = tgt_ids[:, :-1]`` -> logits ``[b, tgt_len, vocab]``."""
        memory = self.encode(src_ids, src_mask)
        h, _ = self.decoder(self.dropout(self.tgt_embed(tgt_in_ids)), memory.init_state)
        return self._output(h, memory.keys, memory.states, memory.src_mask)

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
    ) -> LSTMCache:
        c, w = self.config, self.head.weight
        return LSTMCache(
            c.n_dec_layers,
            batch,
            max_len or c.max_len,
            c.dec_hidden,
            device or w.device,
            dtype or w.dtype,
        )

    def decode(
        self, tokens: Tensor, positions: Tensor, memory: LSTMMemory, cache: LSTMCache
    ) -> tuple[Tensor, LSTMCache]:
        """Cached decoding of ``tokens [b, n]`` at ``positions [b, n]`` (each row's positions
        consecutive). Runs the LSTM one token at a time to store the state after each."""
        state = cache.state_before(positions[:, 0], memory.init_state)
        x = self.dropout(self.tgt_embed(tokens))
        outs, hs, cs = [], [], []
        for i in range(tokens.shape[1]):
            out, state = self.decoder(x[:, i : i + 1], state)
            outs.append(out)
            hs.append(state[0])
            cs.append(state[1])
        cache.update(positions, torch.stack(hs, 2), torch.stack(cs, 2))
        h = torch.cat(outs, dim=1)
        return self._output(h, memory.keys, memory.states, memory.src_mask), cache

    def decode_step(
        self,
        tokens: Tensor,
        positions: Tensor,
        src_mask: Tensor,
        cross: tuple[Tensor, Tensor],
        state: State,
    ) -> tuple[Tensor, State]:
        """Pure-tensor step: ``cross = (keys, states)`` from :class:`LSTMMemory`, ``state = (h, c)``
        ``[layers, b, hidden]`` before ``tokens [b, n]`` -> ``(logits [b, n, vocab], state after
        the n tokens)``. ``positions`` is unused (an LSTM has no positions) but kept so that the
        step has the transformers' shape."""
        del positions
        h, state = self.decoder(self.dropout(self.tgt_embed(tokens)), state)
        keys, states = cross
        return self._output(h, keys, states, src_mask), state
