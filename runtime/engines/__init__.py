"""Engines: the model's graphs behind one small numpy surface, whatever runs them.

Every backend (onnxruntime, native TensorRT, torch for development) offers the same surface,
so that decoders (`runtime/decoding.py`, `runtime/editing.py`) and the batcher never know which
one runs. An editor artifact (one pass, no decoder) has one call:

* ``edit(src_ids [b, src] int64, src_mask [b, src] bool) -> (labels [b, src * k] int64,
  probs [b, src * k] float32)``: the best label of every frame and its probability.

The sequence-to-sequence models (hybrid, char_transformer) have an encoder pass, then decoder
calls over an explicit self-attention cache:

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


class CacheOps:
    """What the decoders do to a cache (a list of per-layer ``(k, v)``, ``[b, heads, slots,
    head_dim]``), as engine methods, so the cache can stay where the engine keeps it.

    The defaults are written against the array interface that numpy arrays and the GPU
    engines' device handles (`runtime.engines.cuda_memory.DeviceArray`) both offer; an engine can
    override them (a fused gather kernel, say).
    """

    def empty_cache(self, cross: list) -> list:
        """A zero-length self-attention cache shaped after the cross keys/values
        (self- and cross-attention share heads and head_dim)."""
        return [(k[:, :, :0], v[:, :, :0]) for k, v in cross]

    def select_rows(self, cache: list, rows: np.ndarray) -> list:
        """The rows ``rows`` (a boolean mask or indices over the batch) of every tensor."""
        return [(k[rows], v[rows]) for k, v in cache]

    def compact(self, present: list, past_len: int, cached: np.ndarray, kept: np.ndarray) -> list:
        """Keep each row's ``cached`` old slots and its ``kept`` new ones (the first of the
        ``n`` slots after ``past_len``), left-aligned, ``max(cached + kept)`` wide; slots past
        a row's own ``cached + kept`` are padding the decoder masks out."""
        width = int((cached + kept).max())
        slots = np.arange(width)[None]
        # Slot s of a row comes from its old cache while s < cached, else from the new tokens.
        source = np.where(slots < cached[:, None], slots, past_len + slots - cached[:, None])
        source = np.minimum(source, past_len + kept.max() - 1)[:, None, :, None]
        return [
            (np.take_along_axis(k, source, 2), np.take_along_axis(v, source, 2)) for k, v in present
        ]


class EditEngine(Protocol):
    def edit(self, src_ids: np.ndarray, src_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


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

    def empty_cache(self, cross: list[KV]) -> list[KV]: ...

    def select_rows(self, cache: list[KV], rows: np.ndarray) -> list[KV]: ...

    def compact(
        self, present: list[KV], past_len: int, cached: np.ndarray, kept: np.ndarray
    ) -> list[KV]: ...
