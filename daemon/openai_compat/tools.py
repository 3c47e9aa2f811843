"""Validating OpenAI's structured-output fields: tools, tool_choice, response_format and an assistant turn's
tool_calls. Each comes out as the JSON text a GenerationRequest or ChatMessage carries (daemon.messages)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from daemon.openai_compat.fields import ApiError, only_keys, typed

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOLS = 128


def parse_tools(body: Mapping[str, Any]) -> tuple[str, str]:
    """`tools` and `tool_choice` as JSON text ("" when absent)."""
    raw = body.get("tools")
    if raw is not None and (not isinstance(raw, list) or len(raw) > MAX_TOOLS):
        raise ApiError(400, f"'tools' must be an array of at most {MAX_TOOLS} tools", param="tools")
    tools = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(raw or [])]
    names = [t["function"]["name"] for t in tools]
    if len(set(names)) != len(names):
        raise ApiError(400, "'tools' names a function twice", param="tools")
    typed(body, "parallel_tool_calls", bool, True)
    choice = _tool_choice(body.get("tool_choice"), names)
    return (json.dumps(tools, ensure_ascii=False) if tools else "",
            json.dumps(choice, ensure_ascii=False) if choice is not None else "")


def _tool(tool: object, where: str) -> dict[str, Any]:
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        raise ApiError(400, f"{where} must be an object of type \"function\"", param=where)
    only_keys(tool, ("type", "function"), where)
    function = tool.get("function")
    where += ".function"
    if not isinstance(function, Mapping):
        raise ApiError(400, f"{where} must be an object", param=where)
    only_keys(function, ("name", "description", "parameters", "strict"), where)
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ApiError(400, f"{where}.name must be 1 to 64 letters, digits, _ or -", param=f"{where}.name")
    typed(function, "description", str, None, where=f"{where}.")
    typed(function, "strict", bool, None, where=f"{where}.")
    parameters = function.get("parameters")
    if parameters is not None and not (isinstance(parameters, Mapping)
                                       and parameters.get("type", "object") == "object"):
        raise ApiError(400, f"{where}.parameters must be a JSON Schema of an object", param=f"{where}.parameters")
    return dict(tool)


def _tool_choice(raw: object, names: list[str]) -> object:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        if raw == "required" and not names:
            raise ApiError(400, "'tool_choice' \"required\" needs 'tools'", param="tool_choice")
        return raw
    if isinstance(raw, Mapping) and raw.get("type") == "function" and isinstance(raw.get("function"), Mapping):
        only_keys(raw, ("type", "function"), "tool_choice")
        name = raw["function"].get("name")
        if name in names:
            return {"type": "function", "function": {"name": name}}
        raise ApiError(400, f"'tool_choice' names a function not in 'tools': {name!r:.70}",
                       param="tool_choice.function.name")
    raise ApiError(400, "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                   "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")


def parse_response_format(body: Mapping[str, Any]) -> str:
    """`response_format` as JSON text; "" when absent or plain text. A schema llama.cpp's converter cannot
    turn into a grammar is refused here, before the answer is queued."""
    raw = body.get("response_format")
    if raw is None:
        return ""
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    if kind not in ("text", "json_object", "json_schema"):
        raise ApiError(400, "'response_format.type' must be \"text\", \"json_object\" or \"json_schema\"",
                       param="response_format")
    if kind != "json_schema":
        only_keys(raw, ("type",), "response_format")
        return "" if kind == "text" else json.dumps({"type": kind})
    only_keys(raw, ("type", "json_schema"), "response_format")
    spec, where = raw.get("json_schema"), "response_format.json_schema"
    if not isinstance(spec, Mapping):
        raise ApiError(400, f"'{where}' must be an object", param=where)
    only_keys(spec, ("name", "description", "schema", "strict"), where)
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ApiError(400, f"'{where}.name' must be 1 to 64 letters, digits, _ or -", param=f"{where}.name")
    typed(spec, "description", str, None, where=f"{where}.")
    typed(spec, "strict", bool, None, where=f"{where}.")
    typed(spec, "schema", dict, None, where=f"{where}.")
    return json.dumps(raw, ensure_ascii=False)


def check_grammar(tools: str, tool_choice: str, response_format: str) -> None:
    """Refuse (400) a schema the grammar converter cannot handle."""
    from daemon.messages import GenerationRequest, Sampling
    from daemon.structured.grammar import GrammarError, answer_grammar

    probe = GenerationRequest((), Sampling(1, 0.0, 1.0, 0, 1.0), tools=tools, tool_choice=tool_choice,
                              response_format=response_format)
    try:
        answer_grammar(probe)
    except GrammarError as exc:
        raise ApiError(400, str(exc), param=exc.param) from None


def parse_tool_calls(raw: object, where: str) -> str:
    """An assistant turn's `tool_calls` as JSON text ("" for none)."""
    if raw is None:
        return ""
    if not isinstance(raw, list):
        raise ApiError(400, f"{where} must be an array", param=where)
    calls = []
    for i, call in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(call, Mapping) or call.get("type", "function") != "function":
            raise ApiError(400, f"{at} must be an object of type \"function\"", param=at)
        only_keys(call, ("id", "type", "function"), at)
        call_id = typed(call, "id", str, None, where=f"{at}.")
        function = call.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str) \
                or not isinstance(function.get("arguments"), str):
            raise ApiError(400, f"{at}.function must have a string name and arguments", param=f"{at}.function")
        # Arguments that are not JSON are kept as they were: a model's own call may be broken JSON, and a client
        # that sends the conversation back must not be refused for it.
        only_keys(function, ("name", "arguments"), f"{at}.function")
        calls.append({"id": call_id or f"call_{i}", "type": "function",
                      "function": {"name": function["name"], "arguments": function["arguments"]}})
    return json.dumps(calls, ensure_ascii=False) if calls else ""
