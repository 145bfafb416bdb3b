"""The one text normalization; training, serving and the metrics all see text through it.

`normalize(text)`:

1. removes ZWSP (U+200B) and BOM (U+FEFF), invisible word-break hints that extractors keep or
   drop at random, so no model can predict them and no metric should count them; and control
   characters (Unicode Cc other than tab, newline, vertical tab, form feed and carriage
   return), which extractors such as pypdf emit for glyphs with no Unicode mapping and which
   are never text;
2. applies NFC;
3. turns every run of whitespace (whatever str.isspace accepts: tab, newline, NBSP,
   U+2000-200A, U+202F, U+3000, ...) into one U+0020 and strips it from both ends.

ZWNJ and ZWJ stay: they change how Khmer is shaped. Removal goes before NFC so that characters
it separated compose; whitespace is a starter that composes with nothing, so step 3 keeps the
text NFC and normalizing twice changes nothing.
"""

import re
import unicodedata

_LINE_SPACING = "\t\n\v\f\r"
_CONTROLS = [chr(cp) for cp in [*range(0x20), *range(0x7F, 0xA0)] if chr(cp) not in _LINE_SPACING]
_DROP = str.maketrans(dict.fromkeys(["\u200b", "\ufeff", *_CONTROLS]))
_WHITESPACE_RUN = re.compile(r"\s+")


def normalize(text: str) -> str:
    """`text` in the normal form the module docstring defines."""
    composed = unicodedata.normalize("NFC", text.translate(_DROP))
    return _WHITESPACE_RUN.sub(" ", composed).strip()
