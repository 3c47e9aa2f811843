"""Speakable chunks from a streamed chat answer, cut as early as is safe so speech can start while the model writes.

`SentenceChunker.feed` takes the model's text pieces (arbitrary fragments of the answer) and returns the chunks that
they complete; `flush` ends the answer. Every character goes through the same small state machines one at a time,
so the chunks are identical however the answer was split into pieces, and `feed` costs O(len(piece)) amortised.

Three stages, each holding back only what it cannot decide yet:

1. Lines (`SentenceChunker`, classified by `audio.chunking.lines`): the start of each line decides what it is:
   prose (after stripping indentation, blockquote `>`, heading `#` and list markers `-`, `*`, `+`, `1.`), a code
   fence, or a table row (`|`). Code and tables are never spoken: each becomes one placeholder sentence.
2. Inline Markdown (`audio.chunking.markdown.InlineStripper`): drops emphasis, link targets, images, HTML tags and
   backticks, and turns bare URLs into their domain.
3. Sentences (`audio.chunking.sentences.Splitter`, with the abbreviation rules of `audio.chunking.abbreviations`):
   whitespace is collapsed and the plain text is cut at sentence ends.

Decisions where the rules left a choice:

- Every newline ends a chunk. Chat models put each sentence group, bullet and heading on its own line; hard-wrapped
  prose is rare and an extra pause there is harmless, while a heading run into the next sentence reads badly.
- A Chinese sentence end (。！？；… and ……) needs no whitespace, but the chunk is emitted when the next character
  arrives (or at a newline or flush): it may be a closing quote or bracket, which belongs to the sentence.
- After an English ". " the next word decides: a lowercase word continues the sentence (etc., e.g., "..." and most
  other abbreviations); titles (Dr., Mr., St., ...), initials and initialisms (U.S., e.g., J.) continue before any
  word; "No." continues before a number; a number at the start of a chunk ("1. Install") is a list ordinal. When in
  doubt we do not cut: a long chunk is harmless, a sentence cut in the middle of a name is not.
- Bare URLs are spoken as their domain ("https://www.example.com/a?b" -> "example.com"); link targets and images
  (including their alt text) are not spoken at all.
- Ordered-list markers have at most three digits, so a line starting "2024. That year" keeps its year.
- The table placeholder is spoken when the first row of a table is complete (not when the table ends), so the
  visitor hears it while the table is still being written; the code placeholder when the fence closes.
- The Chinese placeholders are used when the prose and table text so far has more CJK characters than Latin
  words. A placeholder set to None in English disables that placeholder in both languages.
- Chunk kinds: "sentence" ends at a sentence end, a newline, or before a code block or table; "clause" is cut
  early by `clause_min_chars` or at `max_chunk_chars`; "final" is the rest returned by `flush`.
- `clause_min_chars` counts the pending text including the clause mark, CJK (wide) characters as 2. It applies
  until the first "sentence" or "placeholder" chunk. ASCII , ; : count only when whitespace follows
  ("1,000", "9:30").
- `max_chunk_chars` cuts after the last space or CJK clause mark (，、：；) within the limit, else hard at the limit.
  No chunk but a placeholder is ever longer than the limit.
- Emoji and other symbols (Unicode category So, except °), variation selectors, joiners and "|" are dropped.
"""

from __future__ import annotations

import logging
from typing import Literal

from audio.chunking.chars import LanguageTally
from audio.chunking.chunks import DEFAULT_CONFIG, ChunkerConfig, ChunkKind, SpeechChunk
from audio.chunking.lines import LineMode, LineStart, classify_line_start
from audio.chunking.markdown import InlineStripper
from audio.chunking.sentences import Splitter

__all__ = ["DEFAULT_CONFIG", "ChunkKind", "ChunkerConfig", "SentenceChunker", "SpeechChunk"]

logger = logging.getLogger(__name__)


class SentenceChunker:
    """Turns a streamed answer into speakable chunks; see the module docstring for the rules."""

    def __init__(self, config: ChunkerConfig = DEFAULT_CONFIG) -> None:
        self._config = config
        self._out: list[SpeechChunk] = []
        self._reset()

    def feed(self, piece: str) -> list[SpeechChunk]:
        """The chunks completed by this piece of the answer (often none)."""
        for ch in piece:
            self._push(ch)
        return self._take()

    def flush(self) -> list[SpeechChunk]:
        """End of the answer: everything still pending, then a clean state for the next answer."""
        self._end_line(final=True)
        if self._fence is not None:
            logger.debug("answer ended inside a code block; speaking its placeholder anyway")
            self._placeholder("code")
        chunks = self._take()
        self._reset()
        return chunks

    def _reset(self) -> None:
        self._tally = LanguageTally()
        self._splitter = Splitter(self._config, self._out, self._tally)
        self._inline = InlineStripper(self._splitter.push)
        self._line_mode: LineMode = "start"
        self._line_head: list[str] = []
        self._code_line: list[str] = []
        self._fence: tuple[str, int] | None = None
        self._in_table = False
        self._table_announced = False

    def _take(self) -> list[SpeechChunk]:
        chunks = self._out[:]
        self._out.clear()
        return chunks

    def _push(self, ch: str) -> None:
        if ch == "\n":
            self._end_line(final=False)
        elif self._line_mode == "prose":
            self._inline.push(ch)
        elif self._line_mode == "start":
            self._push_line_start(ch)
        elif self._line_mode == "code":
            self._code_line.append(ch)
        elif self._line_mode == "table":
            self._tally.add(ch)
        # "fence_info": the language name after an opening fence is not spoken

    def _push_line_start(self, ch: str) -> None:
        if not self._line_head and (ch.isspace() or ch == ">"):
            return  # indentation and blockquote markers
        self._line_head.append(ch)
        line_start = classify_line_start("".join(self._line_head), at_line_end=False)
        if line_start is not None:
            self._begin_line(line_start)

    def _begin_line(self, line_start: LineStart) -> None:
        head = "".join(self._line_head)
        self._line_head.clear()
        if line_start.kind != "table":
            self._in_table = False
        if line_start.kind == "prose":
            self._line_mode = "prose"
            for ch in head[line_start.marker_len:]:
                self._inline.push(ch)
        elif line_start.kind == "fence":
            self._splitter.end_chunk("sentence")
            self._fence = line_start.fence
            self._line_mode = "fence_info"
        elif line_start.kind == "table":
            if not self._in_table:
                self._splitter.end_chunk("sentence")
                self._in_table, self._table_announced = True, False
            self._line_mode = "table"
            for ch in head:
                self._tally.add(ch)

    def _end_line(self, final: bool) -> None:
        if self._line_mode == "start":
            line_start = classify_line_start("".join(self._line_head), at_line_end=True)
            assert line_start is not None  # at a line end every line start is decided
            self._begin_line(line_start)
        if self._line_mode == "prose":
            self._inline.end_line()
            self._splitter.end_chunk("final" if final else "sentence")
        elif self._line_mode == "code":
            self._close_fence_if_closing("".join(self._code_line))
        elif self._line_mode == "table" and not self._table_announced:
            self._table_announced = True
            self._placeholder("table")
        elif self._line_mode == "start":
            self._splitter.end_chunk("final" if final else "sentence")  # a blank line
        self._code_line.clear()
        self._line_mode = "code" if self._fence is not None else "start"

    def _close_fence_if_closing(self, line: str) -> None:
        assert self._fence is not None
        char, length = self._fence
        stripped = line.strip()
        if len(stripped) >= length and stripped == char * len(stripped):
            self._fence = None
            self._placeholder("code")

    def _placeholder(self, kind: Literal["code", "table"]) -> None:
        config = self._config
        english, chinese = (
            (config.code_placeholder, config.code_placeholder_zh) if kind == "code"
            else (config.table_placeholder, config.table_placeholder_zh)
        )
        if english is None:
            return
        use_chinese = chinese is not None and self._tally.mostly_cjk()
        self._splitter.emit_placeholder(chinese if use_chinese and chinese is not None else english)
