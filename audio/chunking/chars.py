"""Character classes the chunker's stages share: CJK letters, display width, characters never spoken."""

from __future__ import annotations

import unicodedata

KEPT_SYMBOLS = frozenset("°")
SILENT_CHARS = frozenset("|\ufe0e\ufe0f\u200d\u20e3")
SILENT_CATEGORIES = frozenset({"So", "Cf", "Co", "Cs", "Cn"})


def is_cjk_letter(ch: str) -> bool:
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF
        or 0x3040 <= code <= 0x30FF or 0xAC00 <= code <= 0xD7AF or 0x20000 <= code <= 0x2FFFF
    )


def display_width(ch: str) -> int:
    return 2 if not ch.isascii() and unicodedata.east_asian_width(ch) in ("W", "F") else 1


def is_silent(ch: str) -> bool:
    """Emoji, skin tones, joiners and other symbols a voice would read out as noise or skip anyway."""
    if ch in SILENT_CHARS:
        return True
    if ch.isascii() or ch in KEPT_SYMBOLS:
        return False
    return unicodedata.category(ch) in SILENT_CATEGORIES or 0x1F3FB <= ord(ch) <= 0x1F3FF


def is_speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


class LanguageTally:
    """Counts CJK characters against Latin words, to pick the placeholders' language."""

    def __init__(self) -> None:
        self.cjk_chars = 0
        self.latin_words = 0
        self._in_latin_word = False

    def add(self, ch: str) -> None:
        is_latin = ch.isascii() and ch.isalpha()
        if is_latin and not self._in_latin_word:
            self.latin_words += 1
        elif is_cjk_letter(ch):
            self.cjk_chars += 1
        self._in_latin_word = is_latin

    def mostly_cjk(self) -> bool:
        return self.cjk_chars > self.latin_words

