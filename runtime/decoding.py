"""Decoding over any `runtime.engines.Engine`, in numpy.

Two decoders with one result type and identical outputs:

* `greedy_decode`: one decoder call per output token, the reference (export verifies the
  artifact against torch with it).
* `aggressive_decode`: input-guided aggressive decoding (Sun et al., ACL 2021; Ge et al.,
  2022). A corrector's output is mostly a copy of its input, so the input itself is the draft:
  one decoder call verifies the whole draft in parallel, the longest prefix the model agrees
  with is kept, the model's own token is taken at the first disagreement, the draft is
  re-aligned to the input, and the loop repeats. Every kept token is the model's greedy choice
  given the tokens before it, so the output is the greedy output; only the number of decoder
  calls changes. Rows advance at different speeds: each row's cache keeps its accepted tokens
  and drops the slots of rejected draft tokens.

Both return, per row, the output ids (no bos/eos) and each token's probability, which the
service reports as the confidence of its edits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.engines import Engine

# How far ahead in the input a mismatching model token is looked for: finding it there means
# the model deleted the input tokens in between (spaces inside clusters, duplicated clusters).
REALIGN_WINDOW = 8


@dataclass
class Decoded:
    ids: list[int]
    probs: list[float]
    passes: int = 0  # decoder calls this row took part in


def output_limits(src_mask: np.ndarray, cap: int) -> np.ndarray:
    """Each row's output limit, from its own input length: 1.5 × + 10 (corrections mostly
    shorten text; the margin leaves room for restored subscripts and vowels), at most `cap`."""
    return np.minimum(cap, (1.5 * np.asarray(src_mask).sum(1)).astype(np.int64) + 10)


def _chosen(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax ids and their softmax probabilities, over the last axis."""
    ids = logits.argmax(-1)
    top = np.take_along_axis(logits, ids[..., None], -1)
    probs = 1.0 / np.exp(logits - top).sum(-1)
    return ids, probs


def _prepare(
    src_ids: np.ndarray, src_mask: np.ndarray, max_len: int | Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous ids and mask, and the output limit of each row (one int applies to all).
    Limits are per row so that a row's output never depends on which rows share its batch."""
    limits = np.broadcast_to(np.asarray(max_len, dtype=np.int64), (src_ids.shape[0],))
    return (
        np.ascontiguousarray(src_ids, dtype=np.int64),
        np.ascontiguousarray(src_mask, bool),
        limits,
    )


def greedy_decode(
    engine: Engine, src_ids: np.ndarray, src_mask: np.ndarray, max_len: int | Sequence[int]
) -> list[Decoded]:
    """One encoder pass, then one decoder call per step for the rows still running; a row
    leaves the batch at its eos or its `max_len` tokens, so finished rows cost nothing."""
    src_ids, src_mask, limits = _prepare(src_ids, src_mask, max_len)
    cross = engine.encode(src_ids, src_mask)
    past = engine.empty_cache(cross)
    live = np.arange(src_ids.shape[0])
    tokens = np.full((len(live), 1), engine.bos_id, dtype=np.int64)
    out = [Decoded([], []) for _ in live]
    for step in range(int(limits.max(initial=0))):
        positions = np.full((len(live), 1), step, dtype=np.int64)
        key_mask = np.ones((len(live), step + 1), dtype=bool)
        logits, past = engine.decode(tokens, positions, src_mask, key_mask, cross, past)
        nxt, prob = _chosen(logits[:, -1])
        running = nxt != engine.eos_id
        for row in live:
            out[row].passes += 1
        for row, token, p in zip(live[running], nxt[running], prob[running], strict=True):
            out[row].ids.append(int(token))
            out[row].probs.append(float(p))
        running &= limits[live] > step + 1
        if not running.all():
            live, nxt, src_mask = live[running], nxt[running], src_mask[running]
            cross = engine.select_rows(cross, running)
            past = engine.select_rows(past, running)
            if not len(live):
                break
        tokens = nxt[:, None].astype(np.int64)
    return out


@dataclass
class _Row:
    """One row's progress through aggressive decoding."""

    index: int  # in the caller's batch
    source: list[int]  # the input ids: the draft to copy from
    cursor: int = 0  # next input position the draft starts at
    pending: int = -1  # the last chosen token, not yet in the cache (bos at first)
    cached: int = 0  # slots of the cache this row fills (bos + accepted tokens)
    done: bool = False


def aggressive_decode(
    engine: Engine,
    src_ids: np.ndarray,
    src_mask: np.ndarray,
    max_len: int | Sequence[int],
    *,
    max_draft: int = 64,
) -> list[Decoded]:
    """The greedy output in far fewer decoder calls when output and input mostly agree.

    Each call feeds every live row its pending token followed by up to `max_draft` draft
    tokens: the input from its cursor, then eos once the input ends. A call therefore carries
    at most 1 + max_draft new tokens, and pending + draft never reach past max_len + 2.
    """
    src_ids, src_mask, limits = _prepare(src_ids, src_mask, max_len)
    cross = engine.encode(src_ids, src_mask)
    past = engine.empty_cache(cross)
    rows = [
        _Row(i, [int(t) for t in src_ids[i][src_mask[i]]], pending=engine.bos_id)
        for i in range(src_ids.shape[0])
    ]
    out = [Decoded([], []) for _ in rows]
    live = np.arange(len(rows))
    while len(live):
        drafts = []
        for i in live:
            row = rows[i]
            # No use drafting past max_len; a draft that ends the input also proposes eos.
            room = max(1, min(max_draft, limits[i] - len(out[i].ids)))
            draft = row.source[row.cursor : row.cursor + room]
            drafts.append([*draft, engine.eos_id] if len(draft) < room else draft)
        n = 1 + max(len(d) for d in drafts)
        tokens = np.full((len(live), n), engine.pad_id, dtype=np.int64)
        new_mask = np.zeros((len(live), n), dtype=bool)
        positions = np.zeros((len(live), n), dtype=np.int64)
        for r, (i, draft) in enumerate(zip(live, drafts, strict=True)):
            tokens[r, : 1 + len(draft)] = [rows[i].pending, *draft]
            new_mask[r, : 1 + len(draft)] = True
            positions[r] = rows[i].cached + np.arange(n)
        cached = np.array([rows[i].cached for i in live])
        past_len = past[0][0].shape[2]
        key_mask = np.concatenate([np.arange(past_len)[None] < cached[:, None], new_mask], 1)
        logits, present = engine.decode(tokens, positions, src_mask, key_mask, cross, past)
        chosen, probs = _chosen(logits)

        kept = []
        for r, (i, draft) in enumerate(zip(live, drafts, strict=True)):
            row, result = rows[i], out[i]
            result.passes += 1
            agreed = 0
            while agreed < len(draft) and chosen[r, agreed] == draft[agreed]:
                agreed += 1
            # The model's tokens this call: the agreed draft, then its own next token.
            for token, p in zip(chosen[r, : agreed + 1], probs[r, : agreed + 1], strict=True):
                if token == engine.eos_id or len(result.ids) == limits[i]:
                    row.done = True
                    break
                result.ids.append(int(token))
                result.probs.append(float(p))
            if len(result.ids) == limits[i]:
                row.done = True
            kept.append(agreed + 1)  # pending + agreed draft tokens enter the cache
            row.cached += agreed + 1
            row.pending = int(chosen[r, agreed])
            row.cursor = _realign(row, agreed)

        past = engine.compact(present, past_len, cached, np.array(kept))
        running = np.array([not rows[i].done for i in live])
        if not running.all():
            live, src_mask = live[running], src_mask[running]
            cross = engine.select_rows(cross, running)
            past = engine.select_rows(past, running)
    return out


def _realign(row: _Row, agreed: int) -> int:
    """Where the next draft starts in the input, after `agreed` draft tokens were accepted and
    the model chose `row.pending` to follow them.

    If the pending token is the next input token, the copy goes on after it. If it appears a
    little further on, the model deleted what lies between (a space inside a cluster, a
    duplicated cluster), and the draft resumes after that occurrence. Otherwise the model
    inserted it, and the draft resumes where it was; a substitution shows up as an insertion
    whose next call finds the following input token one position ahead.
    """
    cursor = row.cursor + agreed
    if cursor < len(row.source) and row.source[cursor] == row.pending:
        return cursor + 1
    ahead = row.source[cursor + 1 : cursor + 1 + REALIGN_WINDOW]
    if row.pending in ahead:
        return cursor + 2 + ahead.index(row.pending)
    return cursor
