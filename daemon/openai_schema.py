"""Validating OpenAI chat-completion requests into the engine's own types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.messages import ChatMessage, Role, Sampling
from daemon.settings import Settings

ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    """A request the API refuses; rendered as an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str = "invalid_request", kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatCompletionParams:
    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    stream: bool
    include_usage: bool


def parse_chat_request(body: object, settings: Settings) -> ChatCompletionParams:
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    messages = _messages(body.get("messages"))
    if messages[0].role != "system":
        messages = (ChatMessage("system", settings.system_prompt), *messages)
    stream = _typed(body, "stream", bool, False)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, Mapping):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    if _typed(body, "n", int, 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    return ChatCompletionParams(messages, _sampling(body, settings), stream, include_usage)


def _messages(raw: object) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty array", param="messages")
    out = []
    for i, item in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(item, Mapping):
            raise ApiError(400, f"{where} must be an object", param=where)
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise ApiError(400, f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
        out.append(ChatMessage(ROLES[role], _content(item.get("content"), f"{where}.content")))
    if out[-1].role != "user":
        raise ApiError(400, "the last message must come from the user", param="messages")
    return tuple(out)


def _content(raw: object, where: str) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):  # The array form: only text parts are understood.
        parts = []
        for part in raw:
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ApiError(400, f"{where}: only text content parts are supported", param=where)
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"{where} must be a string or an array of text parts", param=where)


def _sampling(body: Mapping[str, Any], settings: Settings) -> Sampling:
    default = settings.sampling()
    max_tokens = _max_tokens(body, settings)
    temperature = _number(body, "temperature", default.temperature, 0.0, 2.0)
    top_p = _number(body, "top_p", default.top_p, 0.0, 1.0)
    top_k = _typed(body, "top_k", int, default.top_k)
    if top_k < 0:
        raise ApiError(400, "top_k must not be negative", param="top_k")
    return Sampling(
        max_tokens=min(max_tokens or default.max_tokens, settings.max_tokens),
        temperature=temperature, top_p=top_p, top_k=top_k, repeat_penalty=default.repeat_penalty,
        stop=_stops(body.get("stop")), seed=_typed(body, "seed", int, None),
    )


def _max_tokens(body: Mapping[str, Any], settings: Settings) -> int | None:
    """max_completion_tokens, else the older max_tokens; each, when given, is checked on its own."""
    limits: dict[str, int | None] = {}
    for name in ("max_completion_tokens", "max_tokens"):
        value = _typed(body, name, int, None)
        if value is not None and not 1 <= value <= settings.n_ctx:
            raise ApiError(400, f"'{name}' must be between 1 and {settings.n_ctx}", param=name)
        limits[name] = value
    return limits["max_completion_tokens"] or limits["max_tokens"]


def _stops(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if isinstance(raw, list) and len(raw) <= 4 and all(isinstance(s, str) for s in raw):
        return tuple(raw)
    raise ApiError(400, "'stop' must be a string or an array of at most 4 strings", param="stop")


def _typed(body: Mapping[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"'{name}' must be of type {kind.__name__}", param=name)
    return value


def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be a number between {lo} and {hi}", param=name)
    return float(value)
