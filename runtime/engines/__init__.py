"""Engines: one encoder pass, then decoder calls over an explicit self-attention cache, in numpy.

Every backend (onnxruntime here; native TensorRT and torch later) offers the same small
surface, so that decoders (`runtime/decoding.py`) and the batcher never know which one runs:

* ``encode(src_ids [b, src] int64, src_mask [b, src] bool) -> cross``: the cross-attention
  keys/values of every decoder layer, ``[(k, v), ...]`` each ``[b, heads, src, head_dim]``.
* ``decode(tokens [b, n], positions [b, n], src_mask [b, src], tgt_key_mask [b, past + n],
  cross, past) -> (logits [b, n, vocab], present)``: ``past``/``present`` are the per-layer
  self-attention ``(k, v)``, ``[b, heads, past_len, head_dim]`` in and ``past_len + n`` out.
  The n new tokens are causal among themselves and see every past slot marked True in
  ``tgt_key_mask``, so n = 1 is a greedy step and n > 1 a prefill or a batch of draft tokens
  to verify; a rejected draft is dropped by slicing ``present`` back.
* ``pad_id``, ``bos_id``, ``eos_id``: the special ids of the model's vocabulary.

Float arrays are float32 at this boundary whatever precision runs inside.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

KV = tuple[np.ndarray, np.ndarray]


class Engine(Protocol):
    pad_id: int
    bos_id: int
    eos_id: int

    def encode(self, src_ids: np.ndarray, src_mask: np.ndarray) -> list[KV]: ...

    def decode(
        self,
        tokens: np.ndarray,
        positions: np.ndarray,
        src_mask: np.ndarray,
        tgt_key_mask: np.ndarray,
        cross: list[KV],
        past: list[KV],
    ) -> tuple[np.ndarray, list[KV]]: ...
