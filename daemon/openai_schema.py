"""Validating OpenAI chat-completion requests into the engine's own types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from daemon.messages import ChatMessage, Role, Sampling
from daemon.settings import Settings

ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Message fields OpenAI defines that carry nothing for a text-only model. Clients that echo a previous reply back
# (the SDK's message objects) send them as null, so null is accepted; a value means a feature we lack (tools).
NULL_MESSAGE_FIELDS = ("refusal", "tool_calls", "tool_call_id", "function_call", "audio", "annotations")
INT64 = 2**63
# llama.cpp keeps top_k in a C int; larger values would wrap around silently.
MAX_TOP_K = 2**31 - 1


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


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def decode_json(raw: bytes) -> object:
    """A request body as JSON (UTF-8, RFC 8259), or ApiError 400 `bad_json`.

    Python's json module alone would let through NaN/Infinity, fail with RecursionError (a 500) on deep nesting,
    and accept lone surrogates ("\\ud800") that every later UTF-8 encode (SQLite, the tokenizer) chokes on.
    """
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # Raises on a lone surrogate anywhere.
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON (UTF-8)", code="bad_json") from None
    return value


def parse_chat_request(body: object, settings: Settings) -> ChatCompletionParams:
    if not isinstance(body, Mapping):
        raise ApiError(400, "the request body must be a JSON object")
    _typed(body, "model", str, None)  # Ignored (the loaded model answers), but OpenAI requires a string.
    messages = _messages(body.get("messages"))
    if messages[0].role != "system":
        messages = (ChatMessage("system", settings.system_prompt), *messages)
    stream = _typed(body, "stream", bool, False)
    if _typed(body, "n", int, 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    return ChatCompletionParams(messages, _sampling(body, settings), stream, _include_usage(body))


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, Mapping):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    include: bool = _typed(options, "include_usage", bool, False, where="stream_options.")
    return include


def _messages(raw: object) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty array", param="messages")
    out = [_message(item, f"messages[{i}]") for i, item in enumerate(raw)]
    if out[-1].role != "user":
        raise ApiError(400, "the last message must come from the user", param="messages")
    return tuple(out)


def _message(item: object, where: str) -> ChatMessage:
    if not isinstance(item, Mapping):
        raise ApiError(400, f"{where} must be an object", param=where)
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise ApiError(400, f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    for key in item:
        if key in ("role", "content"):
            continue
        if key == "name":  # A participant's name: accepted and ignored, as llama.cpp does.
            _typed(item, "name", str, None, where=f"{where}.")
        elif key not in NULL_MESSAGE_FIELDS:
            # Unknown keys are refused rather than ignored: a misspelt field would otherwise vanish silently.
            raise ApiError(400, f"{where} has an unknown field {key!r:.40}", param=f"{where}.{key}")
        elif item[key] is not None:
            raise ApiError(400, f"{where}.{key} is not supported (text chat only)", param=f"{where}.{key}")
    return ChatMessage(ROLES[role], _content(item.get("content"), f"{where}.content"))


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
    if not 0 <= top_k <= MAX_TOP_K:
        raise ApiError(400, f"'top_k' must be between 0 and {MAX_TOP_K}", param="top_k")
    seed = _typed(body, "seed", int, None)
    if seed is not None and not -INT64 <= seed < INT64:
        raise ApiError(400, "'seed' must be a 64-bit integer", param="seed")
    return Sampling(
        max_tokens=min(max_tokens or default.max_tokens, settings.max_tokens),
        temperature=temperature, top_p=top_p, top_k=top_k, repeat_penalty=default.repeat_penalty,
        stop=_stops(body.get("stop")), seed=seed,
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


def _typed(body: Mapping[str, Any], name: str, kind: type, default: Any, *, where: str = "") -> Any:
    """body[name] when it is a `kind` (null counts as absent); `where` prefixes the name of a nested field."""
    value = body.get(name)
    if value is None:
        return default
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 1.0 is the integer 1 (and JSON Schema agrees).
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, f"'{where}{name}' must be of type {_TYPE_NAMES.get(kind, kind.__name__)}",
                       param=where + name)
    return value


_TYPE_NAMES = {bool: "boolean", int: "integer", str: "string"}


def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be a number between {lo} and {hi}", param=name)
    return float(value)
