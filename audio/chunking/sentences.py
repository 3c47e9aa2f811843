"""Plain text in, chunks out: the splitter collapses whitespace and cuts at sentence ends, clause marks and the
length limit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from audio.chunking.abbreviations import dot_continues
from audio.chunking.chars import LanguageTally, display_width, is_cjk_letter, is_silent, is_speakable
from audio.chunking.chunks import ChunkerConfig, ChunkKind, SpeechChunk

CJK_SENTENCE_ENDS = frozenset("。！？；")
ASCII_SENTENCE_ENDS = frozenset(".!?")
ELLIPSIS = "…"
ALL_SENTENCE_ENDS = CJK_SENTENCE_ENDS | ASCII_SENTENCE_ENDS | {ELLIPSIS}
CLOSERS = frozenset("\"')]}”’」』）》〉】〕")
CJK_CLAUSE_MARKS = frozenset("，、：")
ASCII_CLAUSE_MARKS = frozenset(",;:")
CUT_MARKS = frozenset("，、：；")  # ASCII marks are not cut points: "1,000" and "9:30" must stay whole
LEADING_PUNCTUATION = re.compile(r"^[^\w]+")
SPACE_BEFORE_PUNCTUATION = re.compile(r" +(?=[,!?;:。，、！？；：]|\.(?: |$))")
MAX_WORD_LOOKBACK = 32
# Before the first sentence is out, a long enough first phrase may also end before one of these words: the
# visitor hears "The bus stop is on Main Street" a sentence sooner, and a break before a conjunction or a
# preposition is where a speaker would breathe anyway. ("of" and "to" are left out: breaks there sound wrong.)
PHRASE_BREAK_WORDS = frozenset((
    "and", "but", "or", "so", "because", "which", "where", "when", "while", "if",
    "near", "at", "in", "on", "with", "from", "after", "before", "until", "by",
))

CandidateKind = Literal["cjk", "dot", "strong", "ellipsis", "clause"]


@dataclass
class Candidate:
    """A possible chunk end waiting for the characters that decide it."""

    kind: CandidateKind
    run_start: int  # index in the pending text of the first end mark
    run_end: int  # index just after the last end mark (closing quotes come after it)
    awaiting_word: bool = False  # whitespace followed: the next word decides (abbreviations, "... and")


class Splitter:
    """Plain text in, chunks out: collapses whitespace and cuts at sentence ends."""

    def __init__(self, config: ChunkerConfig, out: list[SpeechChunk], tally: LanguageTally) -> None:
        self._config = config
        self._out = out
        self._tally = tally
        self._pending: list[str] = []
        self._width = 0
        self._candidate: Candidate | None = None
        self._speech_started = False
        self._emitted_any = False  # phrase breaks only shorten the very first chunk

    def push(self, ch: str) -> None:
        self._tally.add(ch)
        if ch.isspace():
            self._push_space()
        elif is_silent(ch):
            return
        elif self._candidate is None or not self._resolve(self._candidate, ch):
            self._append(ch)

    def end_chunk(self, kind: ChunkKind) -> None:
        """Emit everything pending, whatever it ends with."""
        text = "".join(self._pending)
        self._pending.clear()
        self._width = 0
        self._candidate = None
        self._emit(text, kind)

    def emit_placeholder(self, text: str) -> None:
        self.end_chunk("sentence")
        self._emit(text, "placeholder")

    def _emit(self, text: str, kind: ChunkKind) -> None:
        text = SPACE_BEFORE_PUNCTUATION.sub("", text.strip())
        if not is_speakable(text):
            return
        self._out.append(SpeechChunk(text, kind))
        self._emitted_any = True
        if kind in ("sentence", "placeholder"):
            self._speech_started = True

    def _push_space(self) -> None:
        candidate = self._candidate
        if candidate is None:
            if self._pending and self._pending[-1] != " ":
                self._break_before_phrase_word()
                self._pending.append(" ")
                self._width += 1
        elif candidate.kind in ("dot", "ellipsis"):
            candidate.awaiting_word = True
        else:
            self.end_chunk("clause" if candidate.kind == "clause" else "sentence")

    def _break_before_phrase_word(self) -> None:
        """At the space after a word: the first chunk may end before it (see PHRASE_BREAK_WORDS). Decided only
        once the word and the space after it have arrived, so it does not depend on how the text was split."""
        start = len(self._pending)
        while start > 0 and self._pending[start - 1] != " ":
            start -= 1
        word = "".join(self._pending[start:])
        if start == 0 or word.lower() not in PHRASE_BREAK_WORDS:
            return
        head_width = self._width - sum(display_width(ch) for ch in word) - 1
        minimum = self._config.clause_min_chars
        if minimum > 0 and not self._emitted_any and head_width >= minimum:
            head = "".join(self._pending[:start])
            self._pending = list(word)
            self._width = sum(display_width(ch) for ch in word)
            self._emit(head, "clause")

    def _resolve(self, candidate: Candidate, ch: str) -> bool:
        """Settle the candidate with the non-space character `ch`; True when `ch` was absorbed into the chunk."""
        if candidate.awaiting_word:
            if self._continues_after(candidate, ch):
                self._candidate = None
                self._pending.append(" ")  # the space collapsed while we waited belongs to the sentence
                self._width += 1
            else:
                self.end_chunk("sentence")
            return False
        if candidate.kind == "clause":
            self._candidate = None  # ASCII clause marks need whitespace after them ("1,000", "9:30")
            return False
        if ch in CLOSERS or ch in ALL_SENTENCE_ENDS:
            if len(self._pending) >= self._config.max_chunk_chars:
                self.end_chunk("sentence")  # a chunk never outgrows the limit, not even by closing quotes
                return False
            self._absorb(candidate, ch)
            return True
        if candidate.kind in ("cjk", "ellipsis") or is_cjk_letter(ch):
            self.end_chunk("sentence")
        else:
            self._candidate = None  # "3.14", "example.com", "Yahoo!Inc": the mark is inside a token
        return False

    def _absorb(self, candidate: Candidate, ch: str) -> None:
        self._pending.append(ch)
        self._width += display_width(ch)
        if ch in ALL_SENTENCE_ENDS:
            candidate.run_end = len(self._pending)
            if ch in "!?！？" and candidate.kind in ("dot", "ellipsis"):
                candidate.kind = "strong"

    def _append(self, ch: str) -> None:
        self._pending.append(ch)
        self._width += display_width(ch)
        if len(self._pending) > self._config.max_chunk_chars:
            self._cut_run_on()  # `ch` itself stays pending: a cut is never after the last character
        end = len(self._pending)
        if ch in ALL_SENTENCE_ENDS:
            self._candidate = Candidate(self._end_kind(ch), end - 1, end)
        elif self._early_clause_allowed() and ch in CJK_CLAUSE_MARKS:
            self.end_chunk("clause")
        elif self._early_clause_allowed() and ch in ASCII_CLAUSE_MARKS:
            self._candidate = Candidate("clause", end - 1, end)

    @staticmethod
    def _end_kind(ch: str) -> CandidateKind:
        if ch in CJK_SENTENCE_ENDS:
            return "cjk"
        if ch == ELLIPSIS:
            return "ellipsis"
        return "dot" if ch == "." else "strong"

    def _early_clause_allowed(self) -> bool:
        minimum = self._config.clause_min_chars
        return minimum > 0 and not self._speech_started and self._width >= minimum

    def _continues_after(self, candidate: Candidate, next_char: str) -> bool:
        """Whether ". " (or "... ") followed by `next_char` is inside a sentence rather than its end."""
        if next_char.islower():
            return True
        if candidate.kind != "dot" or candidate.run_end - candidate.run_start != 1:
            return False
        word = self._word_before(candidate.run_start)
        return dot_continues(word, len(word) == candidate.run_start, next_char)

    def _word_before(self, index: int) -> str:
        start = index
        while start > 0 and index - start < MAX_WORD_LOOKBACK and self._pending[start - 1] != " ":
            start -= 1
        return LEADING_PUNCTUATION.sub("", "".join(self._pending[start:index]))

    def _cut_run_on(self) -> None:
        """The pending text outgrew max_chunk_chars with no sentence end: cut at the last space or clause mark."""
        limit = self._config.max_chunk_chars
        while len(self._pending) > limit:  # twice when the space restored after "Dr." overflowed too
            self._cut_once(limit)

    def _cut_once(self, limit: int) -> None:
        cut = limit
        for index in range(limit - 1, 0, -1):
            if self._pending[index] == " ":
                cut = index
                break
            if self._pending[index] in CUT_MARKS:
                cut = index + 1
                break
        head, rest = "".join(self._pending[:cut]), "".join(self._pending[cut:]).lstrip()
        self._emit(head, "clause")
        self._pending = list(rest)
        self._width = sum(display_width(ch) for ch in rest)

