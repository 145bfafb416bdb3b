"""Greedy and input-guided aggressive decoding over the real onnxruntime engine."""

import random

import numpy as np
import pytest
from tiny import corrupt, pad

from runtime.decoding import _realign, _Row, aggressive_decode, greedy_decode
from runtime.engines.onnx import OnnxEngine
from tests.conftest import KHMER_SENTENCES


@pytest.fixture(scope="module")
def engine(artifact):
    return OnnxEngine(artifact, "fp32", threads=1)


def damaged(seed: int, copies: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [corrupt(s, rng) for s in KHMER_SENTENCES for _ in range(copies)]


@pytest.mark.parametrize("max_draft", [4, 64])
def test_aggressive_output_is_the_greedy_output(engine, vocab, max_draft):
    texts = [*damaged(7), *KHMER_SENTENCES, "abc", "ក"]
    ids, mask = pad([vocab.encode(t) for t in texts])
    greedy = greedy_decode(engine, ids, mask, 80)
    fast = aggressive_decode(engine, ids, mask, 80, max_draft=max_draft)
    for g, a in zip(greedy, fast, strict=True):
        assert a.ids == g.ids
        np.testing.assert_allclose(a.probs, g.probs, atol=1e-4)


def test_aggressive_needs_far_fewer_decoder_passes(engine, vocab):
    texts = damaged(8)
    ids, mask = pad([vocab.encode(t) for t in texts])
    greedy = greedy_decode(engine, ids, mask, 80)
    fast = aggressive_decode(engine, ids, mask, 80)
    assert all(d.passes >= len(d.ids) for d in greedy)  # one pass per token
    assert sum(d.passes for d in fast) * 4 < sum(d.passes for d in greedy)


def test_max_len_truncates_both_alike(engine, vocab):
    ids, mask = pad([vocab.encode(t) for t in damaged(9, copies=1)])
    for limit in (1, 5):
        greedy = greedy_decode(engine, ids, mask, limit)
        fast = aggressive_decode(engine, ids, mask, limit)
        assert [d.ids for d in fast] == [d.ids for d in greedy]
        assert all(len(d.ids) <= limit for d in fast)


def test_a_row_output_does_not_depend_on_its_batch(engine, vocab):
    """Per-row limits: each row decoded alone, with its own limit, equals the same row
    decoded in a batch with the others' limits (the server batches whatever arrives)."""
    texts = damaged(10, copies=1)
    ids, mask = pad([vocab.encode(t) for t in texts])
    limits = [3 + 2 * i for i in range(len(texts))]
    for decode in (greedy_decode, aggressive_decode):
        together = decode(engine, ids, mask, limits)
        for row, limit in enumerate(limits):
            alone_ids, alone_mask = pad([vocab.encode(texts[row])])
            (alone,) = decode(engine, alone_ids, alone_mask, limit)
            assert together[row].ids == alone.ids
            assert len(alone.ids) <= limit


# Re-alignment: after the model departs from the draft, where does the input resume?
SOURCE = [10, 11, 12, 13, 14, 15]


def test_realign_after_a_copied_token_moves_past_it():
    row = _Row(0, SOURCE, cursor=0, pending=12)
    assert _realign(row, agreed=2) == 3  # agreed 10 11, then chose 12 = the next input token


def test_realign_after_a_deletion_skips_the_deleted_input():
    row = _Row(0, SOURCE, cursor=0, pending=14)
    # agreed 10 11, then chose 14 instead of 12: the model deleted 12 13, so resume after 14
    assert _realign(row, agreed=2) == 5


def test_realign_after_an_insertion_keeps_the_input_where_it_was():
    row = _Row(0, SOURCE, cursor=0, pending=99)
    # agreed 10 11, then chose 99, nowhere in the input: an insertion, 12 still comes next
    assert _realign(row, agreed=2) == 2


def test_realign_after_a_substitution_catches_up_one_call_later():
    row = _Row(0, SOURCE, cursor=0, pending=99)
    row.cursor = _realign(row, agreed=2)  # 12 replaced by 99: looks like an insertion first
    row.pending = 13  # next call: the draft 12 13 ... is refused at once, the model says 13
    assert _realign(row, agreed=0) == 4  # found one ahead: resume after 13
