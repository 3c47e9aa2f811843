"""Tool calls in OpenAI's response shapes: the `tool_calls` deltas of a streamed answer and the `tool_calls` of a
whole one, from the answer text's Qwen2.5 `<tool_call>` blocks (daemon.structured.qwen_tools)."""

from __future__ import annotations

import uuid
from typing import Any

from daemon.structured.qwen_tools import Piece, ToolCall, ToolCallSplitter


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class CallDeltas:
    """Answer text in; OpenAI `delta` objects out: {"content": ...} for text, and for each complete call one
    delta with its id, type and name (arguments "") then one with its arguments, as OpenAI streams them and its
    clients accumulate them by `index`. Without tools (`enabled` False) the text passes straight through."""

    def __init__(self, enabled: bool, parallel: bool = True) -> None:
        self._splitter = ToolCallSplitter() if enabled else None
        self._parallel = parallel
        self.calls: list[dict[str, Any]] = []
        """The calls passed on so far, in a whole answer's `tool_calls` shape."""

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self._splitter is None:
            return [{"content": text}] if text else []
        return self._deltas(self._splitter.feed(text))

    def flush(self) -> list[dict[str, Any]]:
        return self._deltas(self._splitter.flush()) if self._splitter is not None else []

    def finish_reason(self, reason: str) -> str:
        """`reason` of a plain answer, or "tool_calls" when the answer ended after calling tools."""
        return "tool_calls" if self.calls and reason == "stop" else reason

    def _deltas(self, pieces: list[Piece]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append({"content": piece})
            elif self._parallel or not self.calls:  # parallel_tool_calls false: only the first call counts
                out.extend(self._call(piece))
        return out

    def _call(self, call: ToolCall) -> list[dict[str, Any]]:
        index, call_id = len(self.calls), new_call_id()
        self.calls.append({"id": call_id, "type": "function",
                           "function": {"name": call.name, "arguments": call.arguments}})
        return [{"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                 "function": {"name": call.name, "arguments": ""}}]},
                {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}]


def whole_message(text: str, enabled: bool, parallel: bool = True) -> tuple[dict[str, Any], CallDeltas]:
    """A whole answer's `message`: its text as `content` (null when it only called tools) and its `tool_calls`."""
    deltas = CallDeltas(enabled, parallel)
    parts = [d["content"] for d in (*deltas.feed(text), *deltas.flush()) if "content" in d]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(parts)}
    if deltas.calls:
        message["tool_calls"] = deltas.calls
        message["content"] = message["content"] or None
    return message, deltas
