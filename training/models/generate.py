"""Model outputs in torch: batched greedy decoding through the seq2seq interface (encode once,
then cached decode), and the editor's single pass."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from runtime.editing import Edited, edit_texts
from training.models.editor import Editor


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


@torch.no_grad()
def edit(
    model: Editor, src_ids: Tensor, src_mask: Tensor, min_confidence: float = 0.0
) -> list[Edited]:
    """The editor's one pass, turned into output ids by the runtime's collapse and gate
    (`runtime.editing`), exactly as serving does."""
    was_training = model.training
    model.eval()
    try:
        labels, probs = model.best_path(src_ids, src_mask)
    finally:
        model.train(was_training)
    c = model.config
    return edit_texts(
        labels.cpu().numpy(),
        probs.float().cpu().numpy(),
        src_ids.cpu().numpy(),
        src_mask.cpu().numpy(),
        upsample=c.upsample,
        blank_id=c.blank_id,
        min_confidence=min_confidence,
    )


def correct_ids(
    model: nn.Module, src_ids: Tensor, src_mask: Tensor, max_len: int
) -> list[list[int]]:
    """Each row's corrected ids: the editor's ungated one pass, or greedy decoding of at most
    ``max_len`` tokens for the autoregressive models."""
    if isinstance(model, Editor):
        return [e.ids for e in edit(model, src_ids, src_mask)]
    return greedy_decode(model, src_ids, src_mask, max_len)
