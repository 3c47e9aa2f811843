"""Checking a grounded answer against its sections while it streams, before any of it reaches the visitor.

Text is released as soon as it is settled: a number or time still being written ("9", "9:", "9:0") is held
back until it is complete, so an opening hour the sections never state is never shown or spoken. The answer
is unsupported when it states a number or time the sections (and the question) do not, when the model says
itself that the information is not there, when a finished sentence says yes where the section says no
(daemon.knowledge.claims), or when the whole answer adds nothing to the question ("Yes."); the caller then
replaces it with the section's own words or the fallback.
"""

from __future__ import annotations

import re

from daemon.knowledge.claims import adds_nothing, asks_back, contradicts, lacks_amount, sentences
from daemon.knowledge.facts import unsupported
from daemon.knowledge.terms import normalize

_NUMERAL = r"[\d零〇一二两三四五六七八九十百]"
# The end of the text while a number, time or price may still be growing.
_OPEN_TAIL = re.compile(
    rf"(?:上午|早上|中午|下午|晚上)?{_NUMERAL}+(?:[:.,]{_NUMERAL}*)*\s*(?:[ap]\.?m?\.?|[点點时]半?|分)?$",
    re.IGNORECASE)
_NOT_THERE = re.compile(
    r"\b(?:do not|don't|does not|doesn't|did not|didn't)\s+(?:have|contain|mention|provide|include|say|specify|"
    r"state|list)\s+(?:any\s+|the\s+|that\s+|this\s+|specific\s+|more\s+|enough\s+|such\s+)*"
    r"(?:information|info|details|data|mention)"
    r"|\bno (?:information|mention|details|data) (?:about|on|of|regarding|is|was)"
    r"|\bnot (?:mentioned|specified|provided|stated|listed|included|covered) in\b"
    r"|\bi(?:'m| am) (?:not sure|sorry|afraid|unable)|\bunable to (?:find|answer|provide|determine)"
    r"|\bcan(?:not|'t) (?:find|answer|provide|tell|determine)|\bi don't know\b|\bi do not know\b"
    r"|\bthere is no (?:information|mention)"
    r"|没有提到|没有提及|未提及|未提到|没有提供|未提供|没有相关|没有具体|没有关于|没有这方面|没有找到|"
    r"无法回答|无法确定|无法提供|不清楚|不知道|抱歉|对不起")


_ENDED = re.compile(r"[。！？；!?;.]\s*$")


class SupportCheck:
    """Feed the answer's pieces; get back what may be shown. `violation` says why the answer is unsupported."""

    def __init__(self, evidence: str, question: str = "", about: str = "") -> None:
        self._evidence = f"{evidence}\n{question}"
        self._section = evidence
        self._section_sentences = sentences(evidence)
        self._question = question
        self._about = about
        self._text = ""
        self._released = 0
        self._claims_checked = 0
        self.violation: str | None = None
        self.declined = False
        """The model said the sections do not answer the question: the fallback, not the section's words."""

    @property
    def text(self) -> str:
        return self._text

    def feed(self, piece: str) -> str:
        """The newly settled text, or "" (also once the answer is found unsupported: nothing more is shown)."""
        self._text += piece
        tail = _OPEN_TAIL.search(self._text)
        return self._release(tail.start() if tail else len(self._text))

    def finish(self) -> str:
        if self.violation is None and self._text.strip():
            if adds_nothing(self._text, self._question, self._section):
                self.violation = "adds nothing to the question"
            elif asks_back(self._text):
                self.violation = "answers with a question"
            elif lacks_amount(self._text, self._question, self._section):
                self.violation = "gives no number, though the question asks for one"
        return self._release(len(self._text), finished=True)

    def _release(self, end: int, finished: bool = False) -> str:
        self._check_claims(finished)
        if self.violation is not None or end <= self._released:
            return ""
        settled = self._text[:end]
        if invented := unsupported(settled, self._evidence):
            self.violation = f"states {', '.join(invented)}, which the sections do not"
        elif found := _NOT_THERE.search(normalize(settled)):
            self.violation = f"the model says the sections do not answer it ({found.group(0)!r})"
            self.declined = True
        if self.violation is not None:
            return ""
        out, self._released = settled[self._released:], end
        return out

    def _check_claims(self, finished: bool) -> None:
        """Each sentence once it is complete (the last one when the answer ends)."""
        if self.violation is not None:
            return
        claims = sentences(self._text)
        complete = claims if finished or _ENDED.search(self._text) else claims[:-1]
        for n, claim in enumerate(complete[self._claims_checked:], start=self._claims_checked):
            if contradicts(claim, self._section_sentences, self._question, self._about, first=n == 0):
                self.violation = f"contradicts its section ({claim!r})"
                return
        self._claims_checked = max(self._claims_checked, len(complete))
