"""Inline Markdown and HTML in a prose line, stripped one character at a time: emphasis, code spans, links, images,
tags and bare URLs (spoken as their domain)."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Literal

MAX_TAG_CHARS = 120
SPACING_TAGS = frozenset({"br", "p", "div", "li", "tr", "td", "th", "hr"})
URL_SCHEMES = ("http://", "https://")

InlineMode = Literal["text", "run", "escape", "bang", "image_alt", "after_bracket", "link_target", "tag", "scheme",
                     "url"]


class InlineStripper:
    """Markdown and HTML inside a prose line in, plain characters out (to `sink`)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._mode: InlineMode = "text"
        self._held: list[str] = []  # characters of a tag or URL scheme not yet known to be one
        self._run_char = ""
        self._run_len = 0
        self._run_prev = ""
        self._depth = 0
        self._tag_attrs = False
        self._autolink = False  # the URL came in <...>: its closing > is markup
        self._code_ticks = 0  # length of the backtick run that opened the current code span, 0 outside one
        self._prev = ""
        self._handlers: dict[InlineMode, Callable[[str], None]] = {
            "text": self._on_text, "run": self._on_run, "escape": self._on_escape, "bang": self._on_bang,
            "image_alt": self._on_image_alt, "after_bracket": self._on_after_bracket,
            "link_target": self._on_link_target, "tag": self._on_tag, "scheme": self._on_scheme, "url": self._on_url,
        }

    def push(self, ch: str) -> None:
        self._handlers[self._mode](ch)

    def end_line(self) -> None:
        """Settle whatever is held: nothing inline spans a line end."""
        while self._mode != "text":
            self._settle_at_line_end()
        self._code_ticks = 0
        self._prev = ""

    def _settle_at_line_end(self) -> None:
        mode = self._mode
        if mode in ("tag", "scheme"):
            self._release_held("")
        elif mode == "url":
            self._finish_url()
        else:
            self._mode = "text"
            if mode == "run":
                self._resolve_run("")
            elif mode == "bang":
                self._emit("!")
            # escape, image_alt, after_bracket, link_target: nothing left to say

    def _emit(self, ch: str) -> None:
        self._prev = ch
        self._sink(ch)

    def _on_text(self, ch: str) -> None:
        if self._code_ticks and ch != "`":
            self._emit(ch)  # code span text is spoken verbatim, markup characters included
        elif ch == "`" or (ch in "_~" and not self._code_ticks):
            self._start_run(ch)
        elif ch in "*[":
            self._prev = ch  # emphasis and link brackets are markup only
        elif ch == "]":
            self._mode = "after_bracket"
        elif ch == "!":
            self._mode = "bang"
        elif ch == "\\":
            self._mode = "escape"
        elif ch == "<":
            self._hold("tag", ch)
        elif ch in "hH" and not self._prev.isalnum():
            self._hold("scheme", ch)
        else:
            self._emit(ch)

    def _start_run(self, ch: str) -> None:
        self._mode = "run"
        self._run_char, self._run_len, self._run_prev = ch, 1, self._prev

    def _on_run(self, ch: str) -> None:
        if ch == self._run_char:
            self._run_len += 1
            return
        self._mode = "text"
        self._resolve_run(ch)
        self.push(ch)

    def _resolve_run(self, next_char: str) -> None:
        """A run of ` _ or ~ ended: code span delimiter, emphasis, strikethrough, or literal text."""
        char, count = self._run_char, self._run_len
        self._prev = char
        if char == "`":
            if not self._code_ticks:
                self._code_ticks = count
            elif self._code_ticks == count:
                self._code_ticks = 0
            return  # a shorter or longer run inside a code span is part of the code, but not worth saying
        snake_case = char == "_" and self._run_prev.isalnum() and next_char.isalnum()
        if snake_case or (char == "~" and count == 1):
            for _ in range(count):
                self._sink(char)

    def _on_escape(self, ch: str) -> None:
        self._mode = "text"
        if ch in string.punctuation:
            self._emit(ch)
        else:
            self.push(ch)

    def _on_bang(self, ch: str) -> None:
        self._mode = "text"
        if ch == "[":
            self._mode = "image_alt"
        else:
            self._emit("!")
            self.push(ch)

    def _on_image_alt(self, ch: str) -> None:
        if ch == "]":
            self._mode = "after_bracket"

    def _on_after_bracket(self, ch: str) -> None:
        self._prev = "]"
        if ch == "(":
            self._mode, self._depth = "link_target", 0
        else:
            self._mode = "text"
            self.push(ch)

    def _on_link_target(self, ch: str) -> None:
        if ch == "(":
            self._depth += 1
        elif ch == ")" and self._depth:
            self._depth -= 1
        elif ch == ")":
            self._mode, self._prev = "text", ")"

    def _hold(self, mode: InlineMode, ch: str) -> None:
        self._mode = mode
        self._held = [ch]
        self._tag_attrs = False

    def _release_held(self, ch: str) -> None:
        """What was held is ordinary text after all: say its first character, run the rest through again."""
        held, self._held = self._held, []
        self._mode, self._autolink = "text", False
        self._emit(held[0])
        for again in held[1:]:
            self.push(again)
        if ch:
            self.push(ch)

    def _on_tag(self, ch: str) -> None:
        held = self._held
        if ch == ">" and len(held) > 1:
            self._finish_tag()
            return
        if ch == ":" and not self._tag_attrs and "".join(held[1:]).lower() in ("http", "https"):
            self._mode, self._held, self._autolink = "scheme", [*held[1:], ch], True  # <https://...>
            return
        if len(held) == 1:
            ok = ch.isascii() and (ch.isalpha() or ch in "/!")
        elif self._tag_attrs:
            ok = len(held) < MAX_TAG_CHARS and ch != "<"  # "x <y and z <w": give up at once, not at the cap
        else:
            ok = ch.isascii() and (ch.isalnum() or ch in "- \t/")
            self._tag_attrs = ch in " \t/"
        if ok:
            held.append(ch)
        else:
            self._release_held(ch)  # "a < b", "<3": not a tag

    def _finish_tag(self) -> None:
        match = re.match(r"</?([A-Za-z][A-Za-z0-9-]*)", "".join(self._held))
        self._held, self._mode = [], "text"
        if match and match.group(1).lower() in SPACING_TAGS:
            self._emit(" ")
        else:
            self._prev = ">"

    def _on_scheme(self, ch: str) -> None:
        candidate = ("".join(self._held) + ch).lower()
        if not any(scheme.startswith(candidate) for scheme in URL_SCHEMES):
            self._release_held(ch)
            return
        self._held.append(ch)
        if candidate in URL_SCHEMES:
            self._mode, self._held, self._depth = "url", [], 0

    def _on_url(self, ch: str) -> None:
        if ch.isspace() or not ch.isascii() or ch in '<>"`*' or (ch == ")" and not self._depth):
            closes_autolink = self._autolink and ch == ">"
            self._finish_url()
            if not closes_autolink:
                self.push(ch)
            return
        if ch == "(":
            self._depth += 1
        elif ch == ")":
            self._depth -= 1
        self._held.append(ch)

    def _finish_url(self) -> None:
        """Say the domain of a bare URL; punctuation after it belongs to the sentence."""
        url, self._held, self._mode, self._autolink = "".join(self._held), [], "text", False
        trimmed = url.rstrip(".,;:!?'")
        host = re.split(r"[/?#]", trimmed, maxsplit=1)[0].rpartition("@")[2].partition(":")[0]
        if host.lower().startswith("www."):
            host = host[4:]
        for ch in host:
            self._emit(ch)
        for ch in url[len(trimmed):]:
            self.push(ch)

