"""The WebSocket chat protocol: one small dataclass per frame type (see docs/protocol.md)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from daemon.messages import Finished


class FrameError(ValueError):
    """A client frame that cannot be accepted; `code` goes into the error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---- client -> server ----

@dataclass(frozen=True)
class ChatFrame:
    text: str
    session: str | None = None
    type: ClassVar[str] = "chat"


@dataclass(frozen=True)
class CancelFrame:
    type: ClassVar[str] = "cancel"


LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class ListenFrame:
    """The microphone button: start (`on`) or stop listening for a spoken question, in `lang` if given."""

    on: bool
    lang: str | None = None
    type: ClassVar[str] = "listen"


@dataclass(frozen=True)
class LanguageFrame:
    """The page's language switch (and after hello): spoken questions on this screen are in `lang`."""

    lang: str
    type: ClassVar[str] = "language"


@dataclass(frozen=True)
class SpeechFrame:
    """Speak answers aloud (`on`) or not."""

    on: bool
    type: ClassVar[str] = "speech"


@dataclass(frozen=True)
class NewVisitFrame:
    """"New customer": the screen's visit ends and a new one starts (answered with a `visit` frame)."""

    type: ClassVar[str] = "new_visit"


ClientFrame = ChatFrame | CancelFrame | ListenFrame | SpeechFrame | NewVisitFrame | LanguageFrame
CLIENT_TYPES = ("chat", "cancel", "listen", "speech", "new_visit", "language")


def parse_client_frame(raw: str, max_question_chars: int | None = None) -> ClientFrame:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack.
        raise FrameError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "a frame must be a JSON object")
    kind = data.get("type")
    if kind == "cancel":
        return CancelFrame()
    if kind == "new_visit":
        return NewVisitFrame()
    if kind in ("listen", "speech"):
        on = data.get("on")
        if not isinstance(on, bool):
            raise FrameError("bad_frame", "'on' must be true or false")
        return ListenFrame(on, _lang(data, required=False)) if kind == "listen" else SpeechFrame(on)
    if kind == "language":
        return LanguageFrame(_lang(data, required=True) or "en")
    if kind != "chat":
        raise FrameError("unknown_type",
                         f"unknown frame type {kind!r:.40}; expected one of {', '.join(CLIENT_TYPES)}")
    return _parse_chat(data, max_question_chars)


def _lang(data: dict[str, Any], *, required: bool) -> str | None:
    lang = data.get("lang")
    if lang is None and not required:
        return None
    if lang not in LANGUAGES:
        raise FrameError("bad_frame", f"'lang' must be one of {', '.join(map(repr, LANGUAGES))}")
    return str(lang)


def _parse_chat(data: dict[str, Any], max_question_chars: int | None) -> ChatFrame:
    text, session = data.get("text"), data.get("session")
    if not isinstance(text, str) or not text.strip():
        raise FrameError("bad_frame", "'text' must be a non-empty string")
    if max_question_chars is not None and len(text) > max_question_chars:
        raise FrameError("question_too_long",
                         f"the question has {len(text)} characters; at most {max_question_chars} are accepted")
    if session is not None and (not isinstance(session, str) or not 0 < len(session) <= 64):
        raise FrameError("bad_frame", "'session' must be null or a session id string")
    if not _encodable(text) or (session is not None and not _encodable(session)):
        raise FrameError("bad_frame", "the frame holds a lone surrogate (\\ud800-\\udfff), which is not text")
    return ChatFrame(text=text, session=session)


def _encodable(text: str) -> bool:
    """False for a string with a lone surrogate: JSON lets "\\ud800" through, but SQLite and the tokenizer
    encode to UTF-8 and would fail on it mid-answer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- server -> client ----

def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ServerFrame:
    type: ClassVar[str]

    def to_json(self) -> str:
        return _dump({"type": self.type, **asdict(self)})

    def _to_json_without_unset(self) -> str:
        """For frames whose optional fields are left out, rather than sent as null, when they do not apply."""
        return _dump({"type": self.type, **{k: v for k, v in asdict(self).items() if v is not None}})


@dataclass(frozen=True)
class VoiceFrame(ServerFrame):
    """The voice path's state as the page should show it (microphone and speaker buttons)."""

    available: bool
    listening: bool = False
    speaking: bool = False
    speech: bool = True
    detail: str | None = None
    lang: str = "en"
    """The language this screen's spoken questions are recognized in (and whose wake phrase is listened for)."""
    type: ClassVar[str] = "voice"


@dataclass(frozen=True)
class TranscriptFrame(ServerFrame):
    """What the microphone heard: partial results as they change, then the final question (may be empty)."""

    text: str
    final: bool
    settled: bool = False
    """A partial at a pause in the speech: all the words so far (the final, unless the visitor goes on)."""
    type: ClassVar[str] = "transcript"


@dataclass(frozen=True)
class SpeakingFrame(ServerFrame):
    """Progress of the answer being read aloud, per sentence: queued, started, finished or stopped."""

    state: str
    text: str
    synth_ms: float | None = None
    """`started` only: how long the sentence took to synthesize."""
    audio_ms: float | None = None
    """`started` only: how long the sentence sounds."""
    type: ClassVar[str] = "speaking"

    def to_json(self) -> str:
        return self._to_json_without_unset()


@dataclass(frozen=True)
class HelloFrame(ServerFrame):
    """The first frame on every connection: what the page needs to set itself up."""

    model: str
    ready: bool
    idle_reset: float
    max_question_chars: int
    suggestions: list[str]
    voice: VoiceFrame
    visit: str = ""
    """This screen's visit token: send it as X-Kioskd-Visit to /api/sessions."""
    history_mode: str = "visit"
    operator_unlock: bool = False
    """An operator PIN is set up (POST /api/operator/unlock)."""
    onscreen_keyboard: str = "auto"
    venue_name: str = ""
    welcome_en: str = ""
    welcome_zh: str = ""
    wake_phrase: str = ""
    """The wake phrase, when one is set (the welcome screen invites visitors to say it)."""
    wake_phrase_zh: str = ""
    """The wake phrase of a screen in Chinese ("": wake_phrase is said in Chinese too)."""
    engine: dict[str, str] = field(default_factory=dict)
    """Which engine answers now: kind (local|upstream), serving (local|upstream), and in upstream mode
    upstream (up|down) and a detail line; `model` names the model that answers now."""
    type: ClassVar[str] = "hello"

    def to_json(self) -> str:
        return _dump({"type": self.type, **asdict(self), "voice": {"type": VoiceFrame.type, **asdict(self.voice)}})


@dataclass(frozen=True)
class SessionFrame(ServerFrame):
    session: str
    type: ClassVar[str] = "session"


@dataclass(frozen=True)
class ResetFrame(ServerFrame):
    """The screen's conversation has ended (the kiosk was left idle); the next question starts a new one."""

    session: str
    reason: str = "idle"
    visit: str = ""
    """The new visit's token (the old one no longer works)."""
    type: ClassVar[str] = "reset"


@dataclass(frozen=True)
class VisitFrame(ServerFrame):
    """The answer to `new_visit`: the new visit's token (the old one no longer works)."""

    visit: str
    type: ClassVar[str] = "visit"


@dataclass(frozen=True)
class QueuedFrame(ServerFrame):
    """The question waits for the model: `position` answers go before it (1: only the one being written)."""

    position: int
    type: ClassVar[str] = "queued"


@dataclass(frozen=True)
class TokenFrame(ServerFrame):
    text: str
    type: ClassVar[str] = "token"


@dataclass(frozen=True)
class RetractFrame(ServerFrame):
    """The answer written so far is withdrawn (its venue sections do not support it): the page discards it, and
    the `token` frames that follow carry the replacement (the fallback)."""

    type: ClassVar[str] = "retract"


@dataclass(frozen=True)
class DoneFrame(ServerFrame):
    reason: str
    usage: dict[str, int]
    timings: dict[str, float]
    stored: bool = True
    """False: the answer was shown but waits in memory until the history database accepts it."""
    knowledge: str = "ordinary"
    """faq, grounded, fallback or ordinary: how the answer was made (see docs/protocol.md)."""
    sources: list[dict[str, str]] = field(default_factory=list)
    """The venue sections the answer used: {"file", "title"} each."""
    type: ClassVar[str] = "done"

    @classmethod
    def from_finished(cls, finished: Finished) -> DoneFrame:
        usage = {**asdict(finished.usage), "total_tokens": finished.usage.total_tokens}
        timings: dict[str, Any] = asdict(finished.timings)
        return cls(reason=finished.reason, usage=usage, timings=timings, stored=finished.stored,
                   knowledge=finished.knowledge, sources=[asdict(source) for source in finished.sources])


@dataclass(frozen=True)
class ErrorFrame(ServerFrame):
    code: str
    message: str
    retry_after: int | None = field(default=None)
    type: ClassVar[str] = "error"

    def to_json(self) -> str:
        return self._to_json_without_unset()  # retry_after only for busy
