"""Channel ``legacy``: clean Unicode Khmer as a PDF typeset in a legacy Khmer font reads back.

Before Khmer Unicode, documents were typeset in fonts such as Limon and ABC that put Khmer glyphs
on Latin-1 / Windows-1252 code points and relied on the typist to enter the glyphs in *visual*
order. A PDF made with such a font extracts as Latin gibberish (``ខ្មែរ`` → ``Exµr``): pre-base
vowels and the pre-base coeng-ro glyph come before the consonant they belong to, split vowels
are two glyphs, subscript consonants are glyphs of their own.

:func:`to_legacy` reproduces that text from Unicode: it splits the text into clusters (base
consonant or independent vowel, robat, coeng + consonant subscripts, vowels, signs), orders each
cluster's glyphs visually and maps them to the font's codes.

Visual order of a cluster (as the Khmer OS Unicode→legacy converter orders it, khmeros.info
``UnicodeToLegacy``): pre-base vowel part, coeng-ro, base, robat, consonant shifter,
subscripts, below vowel, above vowel, post-base vowel part, signs above, signs after.

Sources of the glyph codes (public descriptions; the tables below were written from them, not
copied):

- Limon: the Unicode↔Limon table ``data/unicode_limon.csv`` of danhhong/limon_unicode_converter;
  ``limon.js`` and its test of chamnap/khmer_unicode_converter (taller vowel forms under
  subscripts, ``ញ`` before a subscript drawn as ``Ba``, ``ប`` before ``ា``/``ៅ`` drawn as ``)``,
  a shifter with an above vowel drawn in its ``u`` form, the ``ខ្ញុំ`` ligature ``´``); the
  README of the ``kfc`` Python package (Khmer Font Converter), whose worked example is
  ``ថ្ងៃខែឆ្នាំកំណើត`` → ``éf¶ExqñaMkMeNIt``.
- ABC: ``abc.js`` and its test of chamnap/khmer_unicode_converter (same consonants and vowels as
  Limon, different subscript and sign codes). Only this one source was found for ABC, so its
  table is less certain than Limon's.

Where the sources disagree: ``៛`` is the grave accent and ``ឫ``/``ឬ`` are ``b¤``/``b£`` as in
danhhong's table (chamnap has ``¹`` and the tails swapped); coeng-ro is ``R`` as in chamnap's
limon.js and in Limon text extracted from real PDFs (danhhong's table has the variant ``®``).

Fallback: a Khmer character with no documented glyph in the encoding (obsolete letters ``ឝ ឞ
ឣ ឤ ឨ ឩ ឳ``, ``៑ ៓ ៝``, ``៖``, ``៕`` in Limon, the Khmer symbols block) is kept as the Unicode
character, in its visual slot. Zero-width space/joiners and the invisible inherent vowels
``឴ ឵`` are dropped: legacy documents have none. Everything that is not Khmer (Latin, ASCII
digits, punctuation, spaces) passes unchanged; Khmer digits become ASCII digits, which is how the
legacy fonts encode them.

Output is Windows-1252 text: Latin-1 for common letters, plus ``‘ ’`` for ``៊ ៌``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from training.data.rows import ChannelResult, make_row

ENCODINGS: tuple[str, ...] = ("limon", "abc")

COENG = "\u17d2"
RO = "រ"
BA = "ប"
NYO = "ញ"
LA = "ឡ"

# Cluster slots (Unicode logical order is base, robat, coengs, shifter, vowel, signs; real text
# varies, so the parser below accepts marks in any order and sorts them into slots).
_PRE = frozenset("េែៃ")
_ABOVE = frozenset("ិីឹឺ")
_BELOW = frozenset("ុូួ")
_AFTER = frozenset("ា")
# Split vowels: (pre-base part, second part, slot of the second part); the second part is a key
# of the encoding's vowel table ("ឿ", "ៀ", "ៅ" stand for their own right-hand glyphs there).
_SPLIT = {
    "ើ": ("េ", "ី", "above"),
    "ឿ": ("េ", "ឿ", "after"),
    "ៀ": ("េ", "ៀ", "after"),
    "ោ": ("េ", "ា", "after"),
    "ៅ": ("េ", "ៅ", "after"),
}
_SHIFTERS = frozenset("៉៊")
_ROBAT = "៌"
_SIGNS_ABOVE = frozenset("ំ់៍៎៏័៑៓៝")
_SIGNS_AFTER = frozenset("ះៈ")
_JOINERS = frozenset("\u200c\u200d")

_BASES = "\u1780-\u17b3"
_MARKS = "\u17b6-\u17d1\u17d3\u17dd\u200c\u200d"
_CLUSTER = re.compile(
    f"[{_BASES}](?:{COENG}[{_BASES}]|[{_MARKS}])*"  # a cluster
    f"|(?:{COENG}[{_BASES}]?|[{_MARKS}])+"  # marks with no base (damaged input): kept together
)

# Letters shared by Limon and ABC (danhhong CSV; chamnap limon.js and abc.js agree).
_CONSONANTS = {
    "ក": "k", "ខ": "x", "គ": "K", "ឃ": "X", "ង": "g",
    "ច": "c", "ឆ": "q", "ជ": "C", "ឈ": "Q", "ញ": "j",
    "ដ": "d", "ឋ": "z", "ឌ": "D", "ឍ": "Z", "ណ": "N",
    "ត": "t", "ថ": "f", "ទ": "T", "ធ": "F", "ន": "n",
    "ប": "b", "ផ": "p", "ព": "B", "ភ": "P", "ម": "m",
    "យ": "y", "រ": "r", "ល": "l", "វ": "v", "ស": "s",
    "ហ": "h", "ឡ": "L", "អ": "G",
}  # fmt: skip
_VOWELS = {
    "ា": "a", "ិ": "i", "ី": "I", "ឹ": "w", "ឺ": "W",
    "ុ": "u", "ូ": "U", "ួ": "Y", "េ": "e", "ែ": "E", "ៃ": "é",
    # right-hand glyphs of the split vowels ឿ ៀ ៅ (ើ = e…I, ោ = e…a)
    "ឿ": "O", "ៀ": "o", "ៅ": "A",
}  # fmt: skip
# Taller vowel forms: below vowels under a subscript (or under ញ/ឡ, whose tails go below);
# above vowels raised over a shifter (only ប + ៊ keeps the shifter above).
_TALL = {"ុ": "ú", "ូ": "Ú", "ួ": "Ü", "ិ": "í", "ី": "Í", "ឹ": "å", "ឺ": "Å"}
_DIGITS = {chr(0x17E0 + i): str(i) for i in range(10)}


@dataclass(frozen=True)
class _Encoding:
    name: str
    subscripts: dict[str, str]  # consonant under coeng → glyph (coeng-ro excluded)
    coeng_ro: str
    signs: dict[str, str]  # shifters, robat, signs above and after
    independent: dict[str, str]  # independent vowels (bases)
    single: dict[str, str]  # Khmer characters outside clusters: punctuation, currency
    ligatures: dict[str, str]  # whole clusters drawn as one glyph
    ba_after: dict[str, str]  # ប + post-base vowel glyph → replacement for "b" + that glyph
    nyo_with_subscript: str = "Ba"
    nyo_subscript_under_nyo: str = "Ø"
    i_toandakhiat: str = ""  # ិ + ៍ drawn as one glyph
    shifter_below: str = "u"
    consonants: dict[str, str] = field(default_factory=lambda: _CONSONANTS)
    vowels: dict[str, str] = field(default_factory=lambda: _VOWELS)


LIMON = _Encoding(
    name="limon",
    subscripts={
        "ក": "á", "ខ": "ç", "គ": "Á", "ឃ": "Ç", "ង": "¶",
        "ច": "©", "ឆ": "ä", "ជ": "¢", "ឈ": "Ä", "ញ": "Ø",
        "ដ": "þ", "ឋ": "æ", "ឌ": "Ð", "ឍ": "Æ", "ណ": "Ñ",
        "ត": "þ", "ថ": "ß", "ទ": "Þ", "ធ": "§", "ន": "ñ",
        "ប": ",", "ផ": "ö", "ព": "<", "ភ": "Ö", "ម": "µ",
        "យ": "ü", "ល": "ø", "វ": "V", "ស": "S", "ហ": "ð", "អ": "¥",
    },
    coeng_ro="R",
    signs={
        "ំ": "M", "ះ": "H", "ៈ": "³", "៉": ":", "៊": "\u2018", "់": ";",
        "៌": "\u2019", "៍": "_", "៎": "+", "៏": "¾", "័": "½",
    },
    independent={
        "ឥ": "\\", "ឦ": "|", "ឧ": "]", "ឪ": "«", "ឯ": "É", "ឱ": "»", "ឲ": "[",
        "ឫ": "b¤", "ឬ": "b£", "ឭ": "B¤", "ឮ": "B£", "ឰ": "B§",
    },
    single={"។": ".", "ៗ": "²", "៛": "`"},
    ligatures={"ខ្ញុំ": "´", "ឱ្យ": "["},
    ba_after={"a": ")a", "A": ")A"},
    i_toandakhiat="×",
)  # fmt: skip

ABC = _Encoding(
    name="abc",
    subscripts={
        "ក": ";", "ខ": "ç", "គ": ":", "ឃ": "Ç", "ង": "¶",
        "ច": "©", "ឆ": "ä", "ជ": "¢", "ឈ": "Ä", "ញ": "J",
        "ដ": "þ", "ឋ": "æ", "ឌ": "Ð", "ឍ": "Æ", "ណ": "Ñ",
        "ត": "þ", "ថ": "S", "ទ": "Þ", "ធ": "§", "ន": "ñ",
        "ប": ",", "ផ": "ö", "ព": "<", "ភ": "Ö", "ម": "µ",
        "យ": "ü", "ល": "ø", "វ": "V", "ស": "ß", "ហ": "H", "អ": "ð",
    },
    coeng_ro="R",
    signs={
        "ំ": "M", "ះ": "¼", "ៈ": "£", "៉": "¨", "៊": "\u2018", "់": "´",
        "៌": "\u2019", "៍": "_", "៎": "+", "៏": "¾", "័": "&",
    },
    independent={
        "ឥ": "}", "ឦ": "»", "ឧ": "«", "ឪ": "]", "ឯ": "É", "ឱ": "{", "ឲ": "[",
        "ឫ": "¬", "ឬ": "¦", "ឭ": "\\", "ឮ": "|", "ឰ": "B§",
    },
    single={"។": ".", "៕": ">", "ៗ": "@", "៛": "$"},
    ligatures={"ឱ្យ": "["},
    ba_after={"a": "á", "A": "Á"},
    i_toandakhiat="#",
)  # fmt: skip

_TABLES = {enc.name: enc for enc in (LIMON, ABC)}
assert tuple(_TABLES) == ENCODINGS


def _cluster_to_legacy(cluster: str, enc: _Encoding) -> str:
    """One cluster (Unicode logical order) → the encoding's glyph codes in visual order."""
    if cluster in enc.ligatures:
        return enc.ligatures[cluster]
    base = ""
    pre: list[str] = []
    coeng_ro = False
    robat = shifter = ""
    subs: list[str] = []
    below: list[str] = []
    above: list[str] = []
    after: list[str] = []
    signs_above: list[str] = []
    signs_after: list[str] = []
    i, n = 0, len(cluster)
    if n and "\u1780" <= cluster[0] <= "\u17b3":
        base, i = cluster[0], 1
    while i < n:
        ch = cluster[i]
        i += 1
        if ch == COENG:
            if i < n and "\u1780" <= cluster[i] <= "\u17b3":
                if cluster[i] == RO:
                    coeng_ro = True
                else:
                    subs.append(cluster[i])
                i += 1
            else:
                signs_above.append(ch)  # a dangling coeng: no glyph, kept (fallback)
        elif ch in _PRE:
            pre.append(ch)
        elif ch in _ABOVE:
            above.append(ch)
        elif ch in _BELOW:
            below.append(ch)
        elif ch in _AFTER:
            after.append(ch)
        elif ch in _SPLIT:
            first, second, slot = _SPLIT[ch]
            pre.append(first)
            (above if slot == "above" else after).append(second)
        elif ch in _SHIFTERS:
            shifter += ch
        elif ch == _ROBAT:
            robat += ch
        elif ch in _SIGNS_ABOVE:
            signs_above.append(ch)
        elif ch in _SIGNS_AFTER:
            signs_after.append(ch)
        elif ch in _JOINERS:
            continue
        else:  # not expected from the cluster pattern; keep it
            signs_after.append(ch)

    vowels, signs = enc.vowels, enc.signs
    # Base glyph; ញ with a subscript loses its tail and is drawn as two glyphs.
    if not base:
        base_out = ""
    elif base == NYO and subs:
        base_out = enc.nyo_with_subscript
    else:
        base_out = enc.consonants.get(base) or enc.independent.get(base, base)
    subs_out = "".join(
        enc.nyo_subscript_under_nyo
        if base == NYO and sub == NYO
        else enc.subscripts.get(sub, COENG + sub)
        for sub in subs
    )
    tall_below = bool(subs) or base in (NYO, LA)
    below_out = "".join((_TALL if tall_below else vowels).get(v, v) for v in below)
    shifter_out = "".join(signs.get(s, s) for s in shifter)
    raised = False
    if shifter and above and all(v in _ABOVE for v in above):
        if base == BA and shifter == "៊":
            raised = True  # ប៊ី: shifter stays above, the vowel is raised over it
        else:
            shifter_out = enc.shifter_below  # the shifter moves under the base, drawn as "u"
    above_out = "".join((_TALL if raised else vowels).get(v, v) for v in above)
    after_out = "".join(vowels.get(v, v) for v in after)
    if base == BA and not subs and not coeng_ro and after_out[:1] in enc.ba_after:
        base_out, after_out = "", enc.ba_after[after_out[0]] + after_out[1:]
    signs_above_out = "".join(signs.get(s, s) for s in signs_above)
    if enc.i_toandakhiat and above == ["ិ"] and "៍" in signs_above and not raised:
        above_out = enc.i_toandakhiat
        signs_above_out = signs_above_out.replace(signs["៍"], "", 1)
    return "".join(
        (
            "".join(vowels.get(v, v) for v in pre),
            enc.coeng_ro if coeng_ro else "",
            base_out,
            "".join(signs.get(r, r) for r in robat),
            shifter_out,
            subs_out,
            below_out,
            above_out,
            after_out,
            signs_above_out,
            "".join(signs.get(s, s) for s in signs_after),
        )
    )


class _Converter:
    """Cached converter for one encoding: clusters repeat a lot, so each is converted once."""

    def __init__(self, enc: _Encoding) -> None:
        self.enc = enc
        singles = {**_DIGITS, **enc.single}
        self.translate = {ord(k): v for k, v in singles.items()}
        for dropped in ("\u200b", "\u17b4", "\u17b5", "\ufeff"):
            self.translate[ord(dropped)] = None
        self.cache: dict[str, str] = {}

    def _cluster(self, match: re.Match) -> str:
        cluster = match.group()
        out = self.cache.get(cluster)
        if out is None:
            out = _cluster_to_legacy(cluster, self.enc)
            if len(self.cache) < 200_000:
                self.cache[cluster] = out
        return out

    def __call__(self, text: str) -> str:
        return _CLUSTER.sub(self._cluster, text.translate(self.translate))


_KHMER = re.compile("[\u1780-\u17ff\u19e0-\u19ff]")
_CONVERTERS = {name: _Converter(enc) for name, enc in _TABLES.items()}


def _check_encoding(encoding: str) -> None:
    if encoding not in _CONVERTERS:
        raise ValueError(
            f"unknown legacy encoding {encoding!r}; valid encodings: {', '.join(ENCODINGS)}"
        )


def to_legacy(text: str, encoding: str = "limon") -> str:
    """Unicode Khmer → the text a PDF set in the legacy font ``encoding`` extracts as."""
    _check_encoding(encoding)
    return _CONVERTERS[encoding](text)


def make_rows(
    sentences: Sequence[str], *, seed: int, encodings: Sequence[str] | None = None
) -> ChannelResult:
    """One row per sentence: input is the sentence in a legacy encoding, target the sentence.

    With several encodings, each sentence's encoding is drawn from ``random.Random(seed)``.
    """
    chosen = tuple(ENCODINGS if encodings is None else encodings)
    if not chosen:
        raise ValueError(f"no legacy encoding given; valid encodings: {', '.join(ENCODINGS)}")
    for encoding in chosen:
        _check_encoding(encoding)
    rng = random.Random(seed)
    result = ChannelResult()
    kept_unicode = 0
    for sentence in sentences:
        encoding = chosen[rng.randrange(len(chosen))] if len(chosen) > 1 else chosen[0]
        converted = _CONVERTERS[encoding](sentence)
        if _KHMER.search(converted):
            kept_unicode += 1
        result.rows.append(make_row(converted, sentence, "legacy", encoding=encoding))
    if kept_unicode:
        result.notes.append(
            "some sentences keep Khmer characters that have no glyph in the legacy encoding "
            "(kept as Unicode)"
        )
    return result
