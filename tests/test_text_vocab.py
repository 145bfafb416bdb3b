import itertools
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import any_text

from runtime.text import Piece, Vocab, is_khmer, join_pieces, split_by_vocab

VOCAB = Vocab.default()


def test_specials_come_first() -> None:
    assert (VOCAB.pad_id, VOCAB.bos_id, VOCAB.eos_id, VOCAB.unk_id) == (0, 1, 2, 3)
    assert VOCAB.encode("ក") == [4]


def test_default_covers_khmer_ascii_and_zero_width() -> None:
    khmer = [*range(0x1780, 0x17DE), *range(0x17E0, 0x17EA), *range(0x17F0, 0x17FA)]
    for cp in [*khmer, *range(0x19E0, 0x1A00), *range(0x20, 0x7F)]:
        assert chr(cp) in VOCAB
        assert unicodedata.category(chr(cp)) != "Cn"
    for ch in "«»“”‘’–—…•·°‰§№\u200b\u200c\u200d":
        assert ch in VOCAB
    for ch in "\u00a0\t\n\ufeff":  # normalization removes these
        assert ch not in VOCAB
    assert len(VOCAB) == 4 + len(VOCAB.chars)


def test_unknown_characters_encode_as_unk() -> None:
    assert VOCAB.encode("a😀") == [VOCAB.encode("a")[0], VOCAB.unk_id]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=VOCAB.chars))
def test_encode_decode_round_trip(text: str) -> None:
    assert VOCAB.decode(VOCAB.encode(text)) == text


def test_decode_skips_specials_and_stops_at_eos() -> None:
    ab = VOCAB.encode("ab")
    ids = [VOCAB.bos_id, ab[0], VOCAB.unk_id, ab[1], VOCAB.eos_id, ab[0], VOCAB.pad_id]
    assert VOCAB.decode(ids) == "ab"
    assert VOCAB.decode(ids, stop_at_eos=False) == "aba"


@pytest.mark.parametrize("bad_id", [-1, 10_000])
def test_decode_refuses_ids_outside_the_vocabulary(bad_id: int) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        VOCAB.decode([bad_id])


def test_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    VOCAB.to_json(path)
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == "khmer-correct-vocab"
    assert Vocab.from_json(path) == VOCAB
    assert Vocab.from_dict(VOCAB.to_dict()) == VOCAB


@pytest.mark.parametrize(
    ("corrupt", "problem"),
    [
        (lambda data: data.update(format="something-else"), "format"),
        (lambda data: data.update(version=2), "version 2"),
        (lambda data: data["chars"].append("ក"), "more than once"),
        (lambda data: data["chars"].append("ab"), "not a single character"),
        (lambda data: data.update(specials=["<pad>", "<unk>"]), "specials"),
        (lambda data: data.pop("chars"), "lacks chars"),
    ],
)
def test_refuses_a_corrupted_file(tmp_path: Path, corrupt, problem: str) -> None:
    data = VOCAB.to_dict()
    corrupt(data)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=problem) as refusal:
        Vocab.from_json(path)
    assert str(path) in str(refusal.value)


def test_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"format": "khmer-correct-vocab", ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.json"):
        Vocab.from_json(path)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(VOCAB.chars))
def test_refuses_any_duplicate(ch: str) -> None:
    with pytest.raises(ValueError, match="more than once"):
        Vocab([*VOCAB.chars, ch])


def test_is_khmer() -> None:
    assert all(map(is_khmer, "ក្រ៛១\u19e0"))
    assert not any(map(is_khmer, "a \u200b😀"))


@settings(max_examples=500, deadline=None)
@given(any_text())
def test_unknown_characters_pass_through(text: str) -> None:
    pieces = split_by_vocab(text, VOCAB)
    assert join_pieces(pieces) == text
    position = 0
    for piece in pieces:
        assert piece.text and text[position : position + len(piece.text)] == piece.text
        assert all((ch in VOCAB) == piece.known for ch in piece.text)
        position += len(piece.text)
    assert all(a.known != b.known for a, b in itertools.pairwise(pieces))


def test_splits_into_known_and_unknown_runs() -> None:
    assert split_by_vocab("ក😀😀ខ", VOCAB) == [
        Piece("ក", True),
        Piece("😀😀", False),
        Piece("ខ", True),
    ]
