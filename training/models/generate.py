"""Batched greedy decoding through the common interface (encode once, then cached decode)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def greedy_decode(
    model: nn.Module, src_ids: Tensor, src_mask: Tensor, max_len: int
) -> list[list[int]]:
    """Greedy output ids of every row, without bos/eos, at most ``max_len`` tokens each.

    All rows decode in one batch, one token per step at their own positions; a row stops at its
    eos (later steps feed it pad, and their outputs are discarded); the loop ends when every row
    has stopped. The model is put in eval mode for the call and restored afterwards.
    """
    c = model.config
    was_training = model.training
    model.eval()
    try:
        b = src_ids.shape[0]
        memory = model.encode(src_ids, src_mask)
        cache = model.init_cache(b, max_len, src_ids.device)
        tokens = torch.full((b, 1), c.bos_id, dtype=torch.long, device=src_ids.device)
        positions = torch.zeros((b, 1), dtype=torch.long, device=src_ids.device)
        finished = torch.zeros(b, dtype=torch.bool, device=src_ids.device)
        steps = []
        for _ in range(max_len):
            logits, cache = model.decode(tokens, positions, memory, cache)
            nxt = logits[:, -1].argmax(-1).masked_fill(finished, c.pad_id)
            steps.append(nxt)
            finished |= nxt == c.eos_id
            if bool(finished.all()):
                break
            tokens, positions = nxt[:, None], positions + 1
    finally:
        model.train(was_training)
    out = []
    for row in torch.stack(steps, 1).tolist() if steps else [[] for _ in range(b)]:
        out.append(row[: row.index(c.eos_id)] if c.eos_id in row else row)
    return out
