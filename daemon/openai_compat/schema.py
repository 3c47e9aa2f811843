"""Validating OpenAI chat-completion requests into the engine's own types."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from daemon.messages import ChatMessage, Role, Sampling
from daemon.openai_compat.fields import ApiError as ApiError
from daemon.openai_compat.fields import only_keys, typed
from daemon.openai_compat.tools import check_grammar, parse_response_format, parse_tool_calls, parse_tools
from daemon.settings import Settings

ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                          "tool": "tool"}
# Message fields OpenAI defines that carry nothing for a text-only model. Clients that echo a previous reply back
# (the SDK's message objects) send them as null, so null is accepted; a value means a feature we lack.
NULL_MESSAGE_FIELDS = ("refusal", "function_call", "audio", "annotations")
INT64 = 2**63
# llama.cpp keeps top_k in a C int; larger values would wrap around silently.
MAX_TOP_K = 2**31 - 1
# Request fields understood (`user` is accepted and ignored: it only tags a caller for OpenAI's abuse tracking;
# `top_k` is llama.cpp's extension). Any other field is refused with a 400 naming it, never ignored.
UNDERSTOOD = frozenset({
    "model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "seed", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "user",
    "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs",
})
# OpenAI fields this server cannot honour; null means "not asked" and is accepted.
UNSUPPORTED = frozenset({
    "logit_bias", "functions", "function_call", "audio", "modalities", "prediction", "store", "metadata",
    "service_tier", "reasoning_effort", "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier",
})


@dataclass(frozen=True)
class ChatCompletionParams:
    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    stream: bool
    include_usage: bool
    tools: str = ""
    """The structured-output fields as JSON text ("" when absent), as daemon.messages.GenerationRequest has them."""
    tool_choice: str = ""
    response_format: str = ""
    parallel_tool_calls: bool = True
    """False: only the answer's first tool call is passed on."""

    @property
    def structured(self) -> bool:
        """The answer is JSON or may hold tool calls (tools offered, or a tool turn to answer)."""
        offered = bool(self.tools) and self.tool_choice != '"none"'
        return offered or bool(self.response_format) or self.messages[-1].role == "tool"


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
    _refuse_unknown(body)
    _typed(body, "model", str, None)  # Ignored (the loaded model answers), but OpenAI requires a string.
    _typed(body, "user", str, None)
    messages = _messages(body.get("messages"))
    if messages[0].role != "system":
        messages = (ChatMessage("system", settings.system_prompt), *messages)
    stream = _typed(body, "stream", bool, False)
    if _typed(body, "n", int, 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    tools, tool_choice = parse_tools(body)
    response_format = parse_response_format(body)
    check_grammar(tools, tool_choice, response_format)
    return ChatCompletionParams(messages, _sampling(body, settings), stream, _include_usage(body), tools,
                                tool_choice, response_format, _typed(body, "parallel_tool_calls", bool, True))


def _refuse_unknown(body: Mapping[str, Any]) -> None:
    """A field this server does not act on is refused: silently ignoring it would be worse."""
    for name, value in body.items():
        if name in UNSUPPORTED and value is not None:
            raise ApiError(400, f"'{name}' is not supported by this server", param=name)
        if name not in UNDERSTOOD and name not in UNSUPPORTED:
            raise ApiError(400, f"unknown field {name!r:.40} (not a chat-completion field this server supports)",
                           param=name)
    # Log-probabilities would need each token's logits read back out of llama-cpp-python's generate loop.
    if _typed(body, "logprobs", bool, False):
        raise ApiError(400, "'logprobs' is not supported by this server", param="logprobs")
    if body.get("top_logprobs") is not None:
        raise ApiError(400, "'top_logprobs' is not supported by this server", param="top_logprobs")


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
    for i, message in enumerate(out):
        if message.role == "tool" and message.tool_call_id not in _open_calls(out[:i]):
            raise ApiError(400, f"messages[{i}] answers no tool call of the assistant turn before it",
                           param=f"messages[{i}].tool_call_id")
    if out[-1].role not in ("user", "tool"):
        raise ApiError(400, "the last message must come from the user (or a tool)", param="messages")
    return tuple(out)


def _open_calls(before: list[ChatMessage]) -> set[str]:
    """The call ids a tool turn may answer: those of the assistant turn just before its run of tool turns."""
    for message in reversed(before):
        if message.role == "assistant":
            return {call["id"] for call in json.loads(message.tool_calls or "[]")}
        if message.role != "tool":
            break
    return set()


def _message(item: object, where: str) -> ChatMessage:
    if not isinstance(item, Mapping):
        raise ApiError(400, f"{where} must be an object", param=where)
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise ApiError(400, f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    only_keys(item, ("role", "content", "name", "tool_calls", "tool_call_id", *NULL_MESSAGE_FIELDS), where)
    for key in NULL_MESSAGE_FIELDS:
        if item.get(key) is not None:
            raise ApiError(400, f"{where}.{key} is not supported (text chat only)", param=f"{where}.{key}")
    _typed(item, "name", str, None, where=f"{where}.")  # A participant's name: accepted and ignored (llama.cpp too).
    if item.get("tool_calls") is not None and role != "assistant":
        raise ApiError(400, f"{where}.tool_calls belong to an assistant turn", param=f"{where}.tool_calls")
    calls = parse_tool_calls(item.get("tool_calls"), f"{where}.tool_calls")
    call_id = _typed(item, "tool_call_id", str, "", where=f"{where}.")
    if (role == "tool") != bool(call_id) or (role != "tool" and item.get("tool_call_id") is not None):
        raise ApiError(400, f"{where}.tool_call_id is required on a tool turn, and only there",
                       param=f"{where}.tool_call_id")
    # An assistant turn that only called tools has no text (OpenAI's clients send null).
    content = "" if calls and item.get("content") is None else _content(item.get("content"), f"{where}.content")
    return ChatMessage(ROLES[role], content, tool_calls=calls, tool_call_id=call_id)


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
        frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
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


_typed = typed


def _number(body: Mapping[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ApiError(400, f"'{name}' must be a number between {lo} and {hi}", param=name)
    return float(value)
