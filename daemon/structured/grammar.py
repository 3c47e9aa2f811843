"""The llama.cpp grammar (GBNF) an answer must follow: JSON for response_format, a tool call for a forced
tool_choice. JSON Schemas become grammars through llama-cpp-python's own converter (the port of llama.cpp's
json-schema-to-grammar), so what it supports is what llama-server supports."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from daemon.messages import GenerationRequest
from daemon.structured.qwen_tools import CLOSE, OPEN

ANY_OBJECT: dict[str, Any] = {"type": "object"}
MAX_COUNT = 500
"""Largest length or item count a schema may ask for: the converter (and llama.cpp's grammar parser after it)
writes a bounded repetition out once per item, so {"minItems": 10**9} would exhaust memory."""
MAX_GRAMMAR_CHARS = 256 * 1024
COUNT_KEYS = frozenset({"minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties",
                        "minContains", "maxContains"})
_REGEX_COUNT = re.compile(r"\{\s*(\d+)")
# The converter names its top rule "root"; a forced call wraps it in the <tool_call> tags.
_ROOT_RULE = re.compile(r"^root ::=", re.MULTILINE)


class GrammarError(ValueError):
    """A schema the converter cannot turn into a grammar; `param` is the request field it came from."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def answer_grammar(request: GenerationRequest) -> str:
    """GBNF text for `request`'s answer, or "" when it is free text. A forced tool call wins over
    response_format (the format is for text answers; a forced answer is a call). Raises GrammarError."""
    return _grammar_for(request.tools, request.tool_choice, request.response_format)


# The API layer converts a request's schema to refuse a bad one before it is queued, and the model thread needs
# the same grammar again: the cache makes the second conversion (and a client's repeated schema) free.
@functools.lru_cache(maxsize=32)
def _grammar_for(tools_json: str, tool_choice_json: str, response_format_json: str) -> str:
    choice = json.loads(tool_choice_json) if tool_choice_json else "auto"
    if tools_json and (choice == "required" or isinstance(choice, dict)):
        tools = json.loads(tools_json)
        if isinstance(choice, dict):
            tools = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
        return tool_call_grammar(tools)
    if response_format_json:
        return response_grammar(json.loads(response_format_json))
    return ""


def response_grammar(response_format: dict[str, Any]) -> str:
    kind = response_format.get("type")
    if kind == "json_object":
        return _convert(ANY_OBJECT, "response_format")
    if kind == "json_schema":
        schema = response_format["json_schema"].get("schema") or ANY_OBJECT
        return _convert(schema, "response_format.json_schema.schema")
    return ""


def tool_call_grammar(tools: list[dict[str, Any]]) -> str:
    """`<tool_call>\\n{"name": "<one of tools>", "arguments": <its parameters>}\\n</tool_call>`, the name first
    as Qwen2.5 writes it."""
    calls = [{"type": "object",
              "properties": {"name": {"const": t["function"]["name"]},
                             "arguments": t["function"].get("parameters") or ANY_OBJECT},
              "required": ["name", "arguments"]} for t in tools]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    body = _ROOT_RULE.sub("tool-call ::=", _convert(schema, "tools", ["name", "arguments"]), count=1)
    return f"root ::= {_literal(OPEN + chr(10))} tool-call {_literal(chr(10) + CLOSE)}\n{body}"


def _convert(schema: dict[str, Any], param: str, order: list[str] | None = None) -> str:
    # Imported here: llama_cpp loads the native library, which a daemon with only an upstream engine never needs.
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if (count := _largest_count(schema)) > MAX_COUNT:
        raise GrammarError(f"the JSON schema asks for {count} items or characters; at most {MAX_COUNT} are "
                           "supported", param)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema), order))
    except (ValueError, KeyError, TypeError, AssertionError, AttributeError, IndexError, RecursionError) as exc:
        raise GrammarError(f"the JSON schema cannot be turned into a grammar: {exc!s:.200}", param) from None
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise GrammarError("the JSON schema makes too large a grammar", param)
    return grammar


def _largest_count(value: Any, depth: int = 0) -> int:
    """The largest length/count keyword (or regex repetition) anywhere in a schema."""
    if depth > 64:
        return 0  # The converter's own recursion limit refuses a deeper one.
    if isinstance(value, dict):
        counts = [int(min(v, 10**9)) for k, v in value.items() if k in COUNT_KEYS and isinstance(v, int | float)]
        if isinstance(pattern := value.get("pattern"), str):
            counts += [int(n[:10]) for n in _REGEX_COUNT.findall(pattern)]
        return max([0, *counts, *(_largest_count(v, depth + 1) for v in value.values())])
    if isinstance(value, list):
        return max([0, *(_largest_count(v, depth + 1) for v in value)])
    return 0


def _literal(text: str) -> str:
    """A GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
