"""English rules for a period followed by a space that does not end the sentence: titles, initials, initialisms,
list ordinals and "No. 5"-style number abbreviations."""

from __future__ import annotations

import re

from audio.chunking.lines import MAX_LIST_NUMBER_DIGITS

TITLE_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "mx", "dr", "prof", "rev", "hon", "st", "mt", "gen", "col", "capt", "lt", "sgt", "gov",
    "sen", "rep", "pres", "vs", "cf", "approx", "ca", "dept", "univ",
})
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "nr", "vol", "vols", "p", "pp", "fig", "figs", "eq", "ch", "sec", "art"})
INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]|[A-HJ-Z]")  # not "I.": "So did I. Then" ends there


def dot_continues(word: str, starts_chunk: bool, next_char: str) -> bool:
    """Whether a single "." after `word`, then a space, then `next_char` (not lowercase) is inside a sentence.
    `starts_chunk`: `word` is all the chunk holds so far."""
    lowered = word.lower()
    if lowered in TITLE_ABBREVIATIONS or INITIALISM.fullmatch(word):
        return True
    if word.isdigit() and starts_chunk and len(word) <= MAX_LIST_NUMBER_DIGITS:
        return True  # "1. Install" at the start of a chunk is an ordinal, not a sentence
    return lowered in NUMBER_ABBREVIATIONS and next_char.isdigit()
