"""The one tiny trained model the export, runtime and server tests share, and its helpers.

Training it (300 steps) and exporting it take a few seconds; conftest.py builds it once per
session.
"""

import random

import numpy as np

from export.config import ExportConfig

# A 24-wide model is the worst case for int8 (its CER change swings by about ±0.01 with the
# seed), so the bound here is looser than the default; that a bound fails an export is tested
# on its own in test_export.py.
EXPORT_CONFIG = ExportConfig(max_src_len=300, max_tgt_len=80, max_n=16, max_cer_change=0.05)


def corrupt(text: str, rng: random.Random) -> str:
    """A space inside a cluster or a dropped character: the damage PDF extraction does."""
    i = rng.randrange(1, len(text))
    return text[:i] + " " + text[i:] if rng.random() < 0.5 else text[:i] + text[i + 1 :]


def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, ids != 0
