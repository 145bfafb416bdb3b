"""The one tiny trained model the export, runtime and server tests share, and its helpers.

Training it (300 steps) and exporting it take a few seconds; conftest.py builds it once per
session.
"""

import random

import numpy as np
import torch
from torch import Tensor, nn

from export.config import ExportConfig
from runtime.corrector import pad_ids

# A 24-wide model is the worst case for int8 (its CER change swings by about ±0.01 with the
# seed), so the bound here is looser than the default; that a bound fails an export is tested
# on its own in test_export.py.
EXPORT_CONFIG = ExportConfig(max_src_len=300, max_tgt_len=80, max_n=16, max_cer_change=0.05)


def corrupt(text: str, rng: random.Random) -> str:
    """A space inside a cluster or a dropped character: the damage PDF extraction does."""
    i = rng.randrange(1, len(text))
    return text[:i] + " " + text[i:] if rng.random() < 0.5 else text[:i] + text[i + 1 :]


def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the default vocabulary's ids (pad 0), padded as the Corrector pads them."""
    return pad_ids(rows, 0)


@torch.no_grad()
def torch_greedy_decode(
    model: nn.Module, src_ids: Tensor, src_mask: Tensor, max_len: int
) -> list[list[int]]:
    """Greedy output ids of every row, without bos/eos, at most ``max_len`` tokens each: the
    models' own cached decoding in torch, the reference the runtime's decoders are held to.

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
