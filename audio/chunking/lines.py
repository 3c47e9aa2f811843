"""What a line of Markdown is, decided from its first few characters: prose (and the list or heading marker to skip),
a code fence, a table row, or a blank line."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

MAX_LIST_NUMBER_DIGITS = 3  # also bounds the "1. Install" ordinal rule in abbreviations
MAX_FENCE_RUN = 32  # longer fence markers are decided without waiting for the run to end

LineKind = Literal["prose", "fence", "table", "blank"]
LineMode = Literal["start", "prose", "fence_info", "code", "table"]


@dataclass(frozen=True)
class LineStart:
    """What a line is, decided from its first few characters."""

    kind: LineKind
    marker_len: int = 0  # heading or list marker at the start of a prose line, not spoken
    fence: tuple[str, int] = ("", 0)  # fence character and run length


def classify_line_start(head: str, at_line_end: bool) -> LineStart | None:
    """`head`: the line after indentation and `>`; None while more characters are needed to tell."""
    if not head:
        return LineStart("blank") if at_line_end else None
    first = head[0]
    run = len(head) - len(head.lstrip(first))
    waiting = run == len(head) and not at_line_end
    if first in "`~":
        if waiting and run < MAX_FENCE_RUN:
            return None  # "```" may still become "````", which a "```" line does not close
        return LineStart("fence", fence=(first, run)) if run >= 3 else LineStart("prose")
    if first == "|":
        return LineStart("table")
    if first == "#":
        if waiting and run <= 6:
            return None
        heading = run <= 6 and (run == len(head) or head[run] in " \t")
        return LineStart("prose", marker_len=run if heading else 0)
    if first in "-*+":
        if len(head) == 1 and not at_line_end:
            return None
        return LineStart("prose", marker_len=1 if len(head) == 1 or head[1] in " \t" else 0)
    if first.isascii() and first.isdigit():
        return _classify_ordinal(head, at_line_end)
    return LineStart("prose")


def _classify_ordinal(head: str, at_line_end: bool) -> LineStart | None:
    """ "1. " and "1) " start a list item; "3.14" and "2024. " do not."""
    digits = len(head) - len(head.lstrip(string.digits))
    if digits > MAX_LIST_NUMBER_DIGITS:
        return LineStart("prose")
    if digits == len(head):
        return LineStart("prose") if at_line_end else None
    if head[digits] not in ".)":
        return LineStart("prose")
    if digits + 1 == len(head):
        return LineStart("prose", marker_len=digits + 1) if at_line_end else None
    return LineStart("prose", marker_len=digits + 1 if head[digits + 1] in " \t" else 0)

