"""What travels to and from an OpenAI-compatible upstream: the request body, the SSE lines of its answer and
its streamed tool calls turned back into Qwen2.5's `<tool_call>` text (the form every engine's answer has)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from daemon.messages import ChatMessage, GenerationRequest


def openai_message(message: ChatMessage) -> dict[str, Any]:
    """One turn in OpenAI's form: an assistant turn with its tool calls, a tool turn with the call it answers."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = json.loads(message.tool_calls)
        out["content"] = message.content or None
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def request_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The chat completion asked of the upstream: always streamed, with the usage chunk at the end; the OpenAI
    fields the API layer validated go through as given."""
    sampling = request.sampling
    body: dict[str, Any] = {
        "messages": [openai_message(m) for m in request.messages],
        "stream": True, "stream_options": {"include_usage": True},
        "max_tokens": sampling.max_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
    }
    if model:
        body["model"] = model
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    for penalty in ("frequency_penalty", "presence_penalty"):
        if value := getattr(sampling, penalty):  # 0 is OpenAI's default: sent only when asked for
            body[penalty] = value
    for name in ("tools", "tool_choice", "response_format"):
        if text := getattr(request, name):
            body[name] = json.loads(text)
    return body


def sse_data(line: bytes) -> str | None:
    """The payload of one `data:` line of an event stream; None for blank lines, comments and other fields."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if not text.startswith("data:"):
        return None
    return text[5:].lstrip(" ")


@dataclass
class _Call:
    name: str = ""
    arguments: str = ""


def tool_call_text(name: str, arguments: str) -> str:
    """One call in Qwen2.5's own format; arguments that are not JSON are kept as the string they were."""
    try:
        parsed: Any = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        parsed = arguments
    payload = json.dumps({"name": name, "arguments": parsed}, ensure_ascii=False)
    return f"<tool_call>\n{payload}\n</tool_call>"


@dataclass
class ToolCallText:
    """Collects streamed `delta.tool_calls` and gives each call's text once its arguments are complete: when
    the next call's index appears, or at the end of the answer."""

    _calls: dict[int, _Call] = field(default_factory=dict)
    _open: int | None = None
    written: int = 0

    def feed(self, deltas: list[dict[str, Any]]) -> list[str]:
        done: list[str] = []
        for delta in deltas:
            index = int(delta.get("index", 0))
            if self._open is not None and index != self._open:
                done.append(self._close(self._open))
            call = self._calls.setdefault(index, _Call())
            self._open = index
            function = delta.get("function") or {}
            call.name += function.get("name") or ""
            call.arguments += function.get("arguments") or ""
        return done

    def flush(self) -> list[str]:
        return [self._close(self._open)] if self._open is not None else []

    def _close(self, index: int) -> str:
        call = self._calls.pop(index)
        self._open = None
        self.written += 1
        return tool_call_text(call.name, call.arguments)
