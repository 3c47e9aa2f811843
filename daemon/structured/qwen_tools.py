"""OpenAI tools in Qwen2.5's own format: rendered into plain messages, and parsed back out of the answer.

The prompt side writes what Qwen2.5-Instruct's chat template writes for `tools`, assistant `tool_calls` and
"tool" turns, but as ordinary system/user/assistant messages: any GGUF's template can render them, and on a
Qwen2.5 model the prompt is token for token the one its own template makes. The answer side finds complete
`<tool_call>{json}</tool_call>` blocks in the streamed text (the format every engine hands back, see
daemon.messages.GenerationRequest.tools).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daemon.messages import ChatMessage, Role

QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TOOLS_INTRO = ("\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
               "You are provided with function signatures within <tools></tools> XML tags:\n<tools>")
TOOLS_OUTRO = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments "
               "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
               '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
OPEN, CLOSE = "<tool_call>", "</tool_call>"


def tools_offered(tools_json: str, tool_choice_json: str) -> bool:
    """Whether the model is shown the tools: some were given and tool_choice is not "none"."""
    return bool(tools_json) and (not tool_choice_json or json.loads(tool_choice_json) != "none")


def tojson(value: Any) -> str:
    """Jinja's `tojson` as Hugging Face templates define it (", " and ": " separators, no ASCII escaping)."""
    return json.dumps(value, ensure_ascii=False)


def tools_system_text(system: str, tools_json: str) -> str:
    tools = json.loads(tools_json)
    return system + TOOLS_INTRO + "".join("\n" + tojson(tool) for tool in tools) + TOOLS_OUTRO


def tool_call_block(name: str, arguments: Any) -> str:
    """One call as Qwen2.5 writes it; `arguments` is the parsed object (a JSON string is parsed first)."""
    if isinstance(arguments, str):
        # Not JSON: kept as the string it was (the API layer refuses this; an upstream may not).
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return f'{OPEN}\n{{"name": "{name}", "arguments": {tojson(arguments)}}}\n{CLOSE}'


def render_tools_into(messages: Sequence[ChatMessage], tools_json: str,
                      tool_choice_json: str) -> tuple[ChatMessage, ...]:
    """`messages` as plain system/user/assistant turns: the tools in the system message (unless tool_choice is
    "none"), an assistant's calls as <tool_call> blocks after its text, and each run of tool turns as one user
    turn of <tool_response> blocks."""
    turns: list[tuple[Role, str, bool]] = []  # role, text, whether it is a run of tool responses
    for message in messages:
        if message.role == "tool":
            response = f"<tool_response>\n{message.content}\n</tool_response>"
            if turns and turns[-1][2]:
                turns[-1] = ("user", f"{turns[-1][1]}\n{response}", True)
            else:
                turns.append(("user", response, True))
        elif message.role == "assistant" and message.tool_calls:
            blocks = [tool_call_block(call["function"]["name"], call["function"]["arguments"])
                      for call in json.loads(message.tool_calls)]
            turns.append(("assistant", "\n".join([message.content, *blocks] if message.content else blocks), False))
        else:
            turns.append((message.role, message.content, False))
    plain = tuple(ChatMessage(role, text) for role, text, _ in turns)
    if not tools_offered(tools_json, tool_choice_json):
        return plain
    if plain and plain[0].role == "system":
        return (ChatMessage("system", tools_system_text(plain[0].content, tools_json)), *plain[1:])
    return (ChatMessage("system", tools_system_text(QWEN_DEFAULT_SYSTEM, tools_json)), *plain)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str
    """The arguments as JSON text (an object)."""


Piece = str | ToolCall


class ToolCallSplitter:
    """Streamed answer text in; content text and complete tool calls out, in order.

    Only what may still become a tag is held back (a trailing "<tool" ...), plus trailing whitespace: the line
    breaks Qwen2.5 writes around its calls are format, not content. A block that is not a valid call (bad JSON,
    no name) is passed on as text, so nothing the model wrote is lost.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self._after_call = False  # whitespace right after a call is format
        self.calls = 0

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        out: list[Piece] = []
        while True:
            if self._inside:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return out
                out.append(self._call(self._buffer[:end]))
                self._buffer, self._inside, self._after_call = self._buffer[end + len(CLOSE):], False, True
                continue
            start = self._buffer.find(OPEN)
            if start < 0:
                keep = _held_back(self._buffer)
                self._content(self._buffer[: len(self._buffer) - keep], out)
                self._buffer = self._buffer[len(self._buffer) - keep:]
                return out
            self._content(self._buffer[:start].rstrip(), out)
            self._buffer, self._inside = self._buffer[start + len(OPEN):], True

    def flush(self) -> list[Piece]:
        """The end of the answer: an unclosed call counts if its JSON is complete, else it is text."""
        out: list[Piece] = []
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            call = self._call(rest)
            out.append(call if isinstance(call, ToolCall) else OPEN + rest)
        else:
            self._content(rest.rstrip() if self.calls else rest, out)
        return out

    def _content(self, text: str, out: list[Piece]) -> None:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        if text:
            out.append(text)

    def _call(self, body: str) -> Piece:
        call = parse_call(body)
        if call is None:
            return f"{OPEN}{body}{CLOSE}"
        self.calls += 1
        return call


def _held_back(text: str) -> int:
    """How many trailing characters may still turn out to be (whitespace before) an opening tag."""
    for size in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-size:]):
            return size + len(text[:-size]) - len(text[:-size].rstrip())
    return len(text) - len(text.rstrip())


def parse_call(body: str) -> ToolCall | None:
    """`{"name": ..., "arguments": {...}}` (arguments may also come as a JSON string of an object)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(value["name"], tojson(arguments))
