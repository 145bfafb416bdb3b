"""Hypothesis strategies shared by the text-layer tests: Khmer-like text, well-formed or damaged."""

from hypothesis import strategies as st

COENG = "\u17d2"
ROBAT = "\u17cc"
RO = "\u179a"
ZWSP, ZWNJ, ZWJ = "\u200b", "\u200c", "\u200d"

CONSONANTS = [chr(cp) for cp in range(0x1780, 0x17A3)]
BASES = [chr(cp) for cp in range(0x1780, 0x17B4)]  # consonants and independent vowels
BASES_EXCEPT_RO = [ch for ch in BASES if ch != RO]
VOWELS = [chr(cp) for cp in range(0x17B6, 0x17C6)]
SHIFTERS = ["\u17c9", "\u17ca"]
SIGNS_ABOVE = ["\u17c6", "\u17cb", "\u17cd", "\u17ce", "\u17cf", "\u17d0", "\u17d1", "\u17dd"]
SIGNS_AFTER = ["\u17c7", "\u17c8"]
KHMER_SIGNS = [ROBAT, COENG, *SHIFTERS, *VOWELS, *SIGNS_ABOVE, *SIGNS_AFTER]
DIGITS = [*"0123456789", *(chr(cp) for cp in range(0x17E0, 0x17EA))]
PUNCTUATION = [*"។៕៖ៗ?!.,;:()«»“”-–—…%$", "\u19e0"]
WHITESPACE = [" ", " ", " ", "\t", "\n", "\u00a0", "\u2002", "\u202f", "\u3000"]


def _optional(options: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(["", *options])


@st.composite
def valid_clusters(draw: st.DrawFn) -> str:
    """One well-formed Khmer syllable in normal order, built slot by slot."""
    subscripts = []
    count = draw(st.integers(0, 2))
    if count == 2:
        subscripts.append(draw(st.sampled_from(BASES_EXCEPT_RO)))  # of two, ro comes last
    if count:
        subscripts.append(draw(st.sampled_from(BASES)))
    signs_above = draw(st.lists(st.sampled_from(SIGNS_ABOVE), max_size=2))
    return "".join(
        [
            draw(st.sampled_from(BASES)),
            draw(_optional([ROBAT])),
            *(COENG + subscript for subscript in subscripts),
            draw(_optional(SHIFTERS)),
            draw(_optional([ZWNJ, ZWJ])),
            draw(_optional(VOWELS)),
            *signs_above,
            draw(_optional(SIGNS_AFTER)),
            draw(_optional([ZWJ + COENG + ch for ch in BASES_EXCEPT_RO])),
        ]
    )


def khmer_text(max_pieces: int = 40) -> st.SearchStrategy[str]:
    """Khmer as extractors damage it: syllables mixed with stray signs and subscripts, spaces of
    every kind, zero-width characters, Latin, digits, punctuation and arbitrary characters."""
    piece = st.one_of(
        valid_clusters(),
        st.sampled_from(CONSONANTS),
        st.sampled_from(KHMER_SIGNS),
        st.sampled_from(BASES).map(lambda ch: COENG + ch),
        st.sampled_from(WHITESPACE),
        st.sampled_from([ZWSP, ZWNJ, ZWJ, "\ufeff"]),
        st.text("abcdefghijklmnopqrstuvwxyzABC", min_size=1, max_size=6),
        st.sampled_from(DIGITS),
        st.sampled_from(PUNCTUATION),
        st.characters(),
    )
    return st.lists(piece, max_size=max_pieces).map("".join)


def any_text() -> st.SearchStrategy[str]:
    """Khmer-like text most of the time, arbitrary Unicode the rest."""
    return st.one_of(khmer_text(), st.text())


@st.composite
def damaged_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """A (source, target) pair where target is source with a few edits, like a correction."""
    target = draw(khmer_text())
    source = list(target)
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, len(source)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        insertion = draw(st.sampled_from([" ", COENG, *VOWELS[:4], *CONSONANTS[:4], "$"]))
        if edit == "insert":
            source.insert(position, insertion)
        elif position < len(source):
            source[position : position + 1] = [] if edit == "delete" else [insertion]
    return "".join(source), target


# What a hostile or broken client sends: every kind of character a text pipeline trips on.
CONTROLS = [chr(cp) for cp in [*range(0x20), *range(0x7F, 0xA0)]]  # NUL included
COMBINING = [chr(cp) for cp in range(0x300, 0x370)]  # marks with no base of their own
INVISIBLE = [ZWSP, ZWNJ, ZWJ, "\u2060", "\ufeff", "\u00ad", "\u034f", "\u180e"]
BIDI = [
    *"\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    *(chr(cp) for cp in range(0x5D0, 0x5EB)),  # Hebrew
    *(chr(cp) for cp in range(0x627, 0x64B)),  # Arabic
]
EMOJI = ["😀", "👍🏽", "🇰🇭", "👩\u200d👩\u200d👧", "❤\ufe0f", "🏳️‍🌈", "\U0001f9d1\u200d\U0001f4bb"]
ODDITIES = ["\ufffd", "\uffff", "\ufffe", "\U0010ffff", "\ue000", "\U000e0041", "\u2028", "\u2029"]


def hostile_text(max_pieces: int = 30) -> st.SearchStrategy[str]:
    """Khmer-like text laced with control characters (NUL too), combining marks without a
    base, lone joiners, right-to-left text and bidi controls, emoji, non-characters and any
    other code point that UTF-8 can carry."""
    piece = st.one_of(
        khmer_text(8),
        st.sampled_from(CONTROLS),
        st.sampled_from(COMBINING + KHMER_SIGNS),
        st.sampled_from(INVISIBLE),
        st.sampled_from(BIDI),
        st.sampled_from(EMOJI),
        st.sampled_from(ODDITIES),
        st.text(st.characters(codec="utf-8"), max_size=8),
    )
    # khmer_text's arbitrary characters include lone surrogates, which no client can send.
    return st.lists(piece, max_size=max_pieces).map("".join).filter(_encodable)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
