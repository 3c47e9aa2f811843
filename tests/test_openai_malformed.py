"""Malformed requests to POST /v1/chat/completions, the kind llama.cpp's server tests send: each is refused with
an OpenAI-style error naming the bad field, and none of them reaches the engine."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes import ScriptedEngine, Served
from tests.test_openai_protocol import ServerThread

PATH = "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}
USER = [{"role": "user", "content": "hi"}]
LIMIT = 4096  # max_message_bytes for the served app (the smallest the settings allow), so 413 is cheap to hit.


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    param: str | None
    code: str = "invalid_request"
    status: int = 400
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    chunked: bool = False


CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def with_user(**fields: Any) -> bytes:
    return json.dumps({"messages": USER, **fields}).encode()


def with_message(**fields: Any) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hi", **fields}]}).encode()


def messages(value: Any) -> bytes:
    return json.dumps({"messages": value}).encode()


CASES = [
    # messages
    Case("messages missing", b"{}", "messages"),
    Case("messages null", messages(None), "messages"),
    Case("messages a string", messages("hi"), "messages"),
    Case("messages empty", messages([]), "messages"),
    Case("messages [123]", messages([123]), "messages[0]"),
    Case("messages [{}]", messages([{}]), "messages[0].role"),
    Case("numeric role", messages([{"role": 1, "content": "hi"}]), "messages[0].role"),
    Case("tool turn without tool_call_id", messages([{"role": "tool", "content": "hi"}]), "messages[0].tool_call_id"),
    Case("tool turn answering no call", messages([*USER, {"role": "tool", "content": "{}", "tool_call_id": "c1"}]),
         "messages[1].tool_call_id"),
    Case("tool_call_id on a user turn", with_message(tool_call_id="c1"), "messages[0].tool_call_id"),
    Case("missing content", messages([{"role": "user"}]), "messages[0].content"),
    Case("null content", with_message(content=None), "messages[0].content"),
    Case("numeric content", with_message(content=5), "messages[0].content"),
    Case("image content part", with_message(content=[{"type": "image_url", "image_url": {"url": "x"}}]),
         "messages[0].content"),
    Case("unknown message field", with_message(contnet="typo"), "messages[0].contnet"),
    Case("tool call without a function", messages([{"role": "assistant", "tool_calls": [{"id": "1"}]}, *USER]),
         "messages[0].tool_calls[0].function"),
    Case("tool_calls null is fine, [] on a user turn is not", with_message(tool_calls=[]), "messages[0].tool_calls"),
    Case("tool calls on a user turn", with_message(tool_calls=[CALL]), "messages[0].tool_calls"),
    Case("tool call arguments not a string", messages([{"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": {}}}]}, *USER]), "messages[0].tool_calls[0].function"),
    Case("assistant turn with neither text nor calls", messages([{"role": "assistant", "content": None}, *USER]),
         "messages[0].content"),
    Case("numeric name", with_message(name=5), "messages[0].name"),
    Case("second message bad", messages([*USER, "hi"]), "messages[1]"),
    Case("last from assistant", messages([{"role": "assistant", "content": "hi"}]), "messages"),
    # lengths
    *(Case(f"max_tokens {v!r}", with_user(max_tokens=v), "max_tokens") for v in (10**12, -1, 0, "5", True, 1.5)),
    Case("max_completion_tokens 0", with_user(max_completion_tokens=0), "max_completion_tokens"),
    # sampling
    *(Case(f"temperature {v!r}", with_user(temperature=v), "temperature") for v in (-0.5, "1", 2.5, False)),
    *(Case(f"top_p {v!r}", with_user(top_p=v), "top_p") for v in (1.5, -0.1, "1")),
    *(Case(f"top_k {v!r}", with_user(top_k=v), "top_k") for v in (-1, 2**31, "40")),
    *(Case(f"seed {v!r}", with_user(seed=v), "seed") for v in (2**64, "1", 1.5)),
    Case("stop of 5 strings", with_user(stop=list("abcde")), "stop"),
    Case("stop a number", with_user(stop=5), "stop"),
    Case("stop [1]", with_user(stop=[1]), "stop"),
    # the request itself
    *(Case(f"n {v!r}", with_user(n=v), "n") for v in (2, 0, "1")),
    *(Case(f"stream {v!r}", with_user(stream=v), "stream") for v in ("yes", 1)),
    Case("stream_options a string", with_user(stream_options="x"), "stream_options"),
    Case("include_usage a string", with_user(stream_options={"include_usage": "yes"}),
         "stream_options.include_usage"),
    Case("model a number", with_user(model=5), "model"),
    # fields this server does not act on: refused by name, never ignored
    Case("an unknown field", with_user(frobnicate=1), "frobnicate"),
    Case("logprobs", with_user(logprobs=True), "logprobs"),
    Case("top_logprobs", with_user(top_logprobs=2), "top_logprobs"),
    Case("logit_bias", with_user(logit_bias={"1": 5}), "logit_bias"),
    Case("functions (the old tools)", with_user(functions=[{"name": "f"}]), "functions"),
    Case("user a number", with_user(user=5), "user"),
    *(Case(f"{name} {v!r}", with_user(**{name: v}), name)
      for name in ("frequency_penalty", "presence_penalty") for v in (-2.5, 3, "1")),
    # tools, tool_choice, response_format
    Case("tools an object", with_user(tools=TOOL), "tools"),
    Case("tool of another type", with_user(tools=[{"type": "retrieval"}]), "tools[0]"),
    Case("tool without a function", with_user(tools=[{"type": "function"}]), "tools[0].function"),
    Case("tool name with a space", with_user(tools=[{"type": "function", "function": {"name": "a b"}}]),
         "tools[0].function.name"),
    Case("tool parameters not an object schema", with_user(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "string"}}}]), "tools[0].function.parameters"),
    Case("unknown key in a function", with_user(tools=[{"type": "function", "function": {"name": "f", "x": 1}}]),
         "tools[0].function.x"),
    Case("a tool named twice", with_user(tools=[TOOL, TOOL]), "tools"),
    Case("parallel_tool_calls a string", with_user(tools=[TOOL], parallel_tool_calls="no"), "parallel_tool_calls"),
    Case("tool_choice unknown", with_user(tools=[TOOL], tool_choice="always"), "tool_choice"),
    Case("tool_choice required without tools", with_user(tool_choice="required"), "tool_choice"),
    Case("tool_choice names an unknown tool", with_user(tools=[TOOL], tool_choice={
        "type": "function", "function": {"name": "g"}}), "tool_choice.function.name"),
    Case("response_format a string", with_user(response_format="json"), "response_format"),
    Case("response_format of another type", with_user(response_format={"type": "xml"}), "response_format"),
    Case("json_schema without a name", with_user(response_format={"type": "json_schema", "json_schema": {
        "schema": {}}}), "response_format.json_schema.name"),
    Case("json_schema schema a list", with_user(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": []}}), "response_format.json_schema.schema"),
    Case("json_schema the converter refuses", with_user(response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"$ref": "#/definitions/missing"}}}), "response_format.json_schema.schema"),
    # the body
    Case("not JSON", b"{nope", None, "bad_json"),
    Case("empty body", b"", None, "bad_json"),
    Case("NaN is not JSON", b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', None,
         "bad_json"),
    Case("lone surrogate", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', None, "bad_json"),
    Case("invalid UTF-8", b'{"messages": [{"role": "user", "content": "\xff"}]}', None, "bad_json"),
    Case("deep nesting", b"[" * 4000, None, "bad_json"),  # Python's parser ran out of stack: was a 500.
    Case("a JSON array", b"[]", None),
    Case("a JSON string", b'"hi"', None),
    Case("JSON null", b"null", None),
    Case("too large", with_user(pad="x" * LIMIT), None, "body_too_large", 413),
    Case("too large, chunked", with_user(pad="x" * LIMIT), None, "body_too_large", 413, chunked=True),
    # Content-Type
    *(Case(f"Content-Type {t}", with_user(), None, "unsupported_content_type", headers={"Content-Type": t})
      for t in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")),
]


# Accepted: the behaviour the refusals above must not spill into.
ACCEPTED = [
    Case("fields asked not to be used", with_user(logprobs=False, top_logprobs=None, logit_bias=None, user="k7",
                                                 response_format={"type": "text"}, tools=[TOOL], tool_choice="none",
                                                 parallel_tool_calls=False, frequency_penalty=0.5), None),
    Case("OpenAI's null message fields", with_message(refusal=None, tool_calls=None, audio=None), None),
    Case("a participant name", with_message(name="visitor"), None),
    Case("a tool turn answering the call before it, arguments not JSON", messages([
        *USER, {"role": "assistant", "content": None, "tool_calls": [
            {**CALL, "function": {"name": "f", "arguments": "{broken"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}, *USER]), None),
    Case("no Content-Type", with_user(), None, headers={}),
    Case("JSON with a charset", with_user(), None, headers={"Content-Type": "application/json; charset=utf-8"}),
    Case("null sampling fields take the defaults", with_user(temperature=None, max_tokens=None, stop=None), None),
    Case("an integral float is an integer", with_user(max_tokens=2.0, n=1.0, top_k=40.0), None),
]


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Served, ScriptedEngine]]:
    engine = ScriptedEngine(["ok"])
    server = ServerThread(engine, {"max_message_bytes": LIMIT})
    yield server.start(), engine
    server.stop()


def post(served: Served, case: Case) -> tuple[int, str, Any]:
    """The case sent exactly as written (raw bytes and headers): status, Content-Type and decoded body."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
    try:
        if case.chunked:
            pieces = iter([case.body[i:i + 1000] for i in range(0, len(case.body), 1000)])
            conn.request("POST", PATH, body=pieces, headers=case.headers, encode_chunked=True)
        else:
            conn.request("POST", PATH, body=case.body, headers=case.headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_request_is_refused_before_the_engine(shared: tuple[Served, ScriptedEngine], case: Case) -> None:
    served, engine = shared
    asked, ran = len(engine.requests), len(engine.runs)
    status, content_type, body = post(served, case)
    assert status == case.status, body
    assert content_type.startswith("application/json")
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", case.code, case.param)
    assert isinstance(error["message"], str) and error["message"]
    assert (len(engine.requests), len(engine.runs)) == (asked, ran), "a refused request reached the engine"


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.name for c in ACCEPTED])
def test_tolerated_request_is_answered(shared: tuple[Served, ScriptedEngine], case: Case) -> None:
    served, engine = shared
    ran = len(engine.runs)
    status, _, body = post(served, case)
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "ok"
    assert len(engine.runs) == ran + 1
    assert engine.runs[-1].request.messages[-1].content == "hi"
