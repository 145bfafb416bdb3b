"""Length-bucketed batches: rows of similar length go together, so little of a batch is padding.

One epoch's batches are a pure function of ``(lengths, seed, epoch)``:

1. shuffle the row indices;
2. cut them into pools of ``pool_batches * max_rows`` rows;
3. sort each pool by length (source + target), so neighbours have similar lengths;
4. cut each sorted pool into batches, closing a batch before it would exceed ``max_rows`` rows or
   ``max_tokens`` padded tokens (rows × (longest source + longest target));
5. shuffle the batches, so the epoch does not run from short rows to long ones.

Pools keep the order random at the scale of the epoch while sorting removes padding inside a
batch. Determinism is what lets a resumed run find its place again: the trainer saves
``(epoch, batch index)`` and rebuilds the same list.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def padded_tokens(lengths: Sequence[tuple[int, int]], batch: Sequence[int]) -> int:
    """What ``batch`` costs once padded: rows × (longest source + longest target)."""
    return len(batch) * (max(lengths[i][0] for i in batch) + max(lengths[i][1] for i in batch))


def bucketed_batches(
    lengths: Sequence[tuple[int, int]],
    *,
    max_tokens: int,
    max_rows: int,
    seed: int,
    epoch: int,
    pool_batches: int = 64,
) -> list[list[int]]:
    """Row indices of each batch of ``epoch``; every row appears exactly once.

    ``lengths[i] = (source length, target length)`` of row ``i``, as the tensors will hold them.
    A row that alone exceeds ``max_tokens`` gets a batch of its own (the trainer never lets one
    through).
    """
    rng = random.Random(f"batches/{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool_rows = pool_batches * max_rows
    batches: list[list[int]] = []
    for start in range(0, len(order), pool_rows):
        pool = sorted(order[start : start + pool_rows], key=lambda i: sum(lengths[i]))
        batch: list[int] = []
        longest_src = longest_tgt = 0
        for i in pool:
            src, tgt = max(longest_src, lengths[i][0]), max(longest_tgt, lengths[i][1])
            if batch and (len(batch) == max_rows or (len(batch) + 1) * (src + tgt) > max_tokens):
                batches.append(batch)
                batch, src, tgt = [], lengths[i][0], lengths[i][1]
            batch.append(i)
            longest_src, longest_tgt = src, tgt
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches
