"""OpenAI parity on the local engine, with the official `openai` client against a real daemon serving the real
SmolLM2 model: JSON mode, JSON Schema, forced tool calls (streamed and whole), tool turns, stop and seed, and
fields refused with a 400 naming them. The test model is tiny and rarely calls a tool on its own, so the tests
rely on grammar-forced output (tool_choice "required" or named, response_format)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionToolParam

from tests.conftest import Daemon, start_daemon

WEATHER: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city today.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "London", "Tokyo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city", "days"]}}}
OPENING: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "opening_hours", "description": "When the museum is open on a day.",
    "parameters": {"type": "object", "properties": {"day": {"type": "string", "enum": ["monday", "sunday"]}},
                   "required": ["day"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]
PERSON_SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                  "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                                  "member": {"type": "boolean"}},
                 "required": ["name", "age", "member"], "additionalProperties": False}


@pytest.fixture(scope="module")
def daemon(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("parity"), "--model", str(test_model), "--max-tokens", "160",
                     "--temperature", "0")
    yield d
    assert d.stop() == 0, d.log()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def check_weather_arguments(arguments: str) -> None:
    args = json.loads(arguments)
    assert set(args) == {"city", "days"}, args
    assert args["city"] in ("Paris", "London", "Tokyo") and isinstance(args["days"], int) and 1 <= args["days"] <= 7


def test_json_object_answer_parses(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"}, max_tokens=120)
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice
    assert isinstance(json.loads(choice.message.content or ""), dict)


def test_json_schema_answer_validates(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "Invent a museum member."}], max_tokens=120,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA}})
    person = json.loads(reply.choices[0].message.content or "")
    assert set(person) == {"name", "age", "member"}, person
    assert isinstance(person["name"], str) and len(person["name"]) <= 20
    assert isinstance(person["age"], int) and not isinstance(person["age"], bool) and 0 <= person["age"] <= 150
    assert isinstance(person["member"], bool)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}],
                         ids=["required", "named"])
def test_forced_tool_call_whole(client: openai.OpenAI, choice: Any) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK_WEATHER, tools=[OPENING, WEATHER] if
                                           choice != "required" else [WEATHER], tool_choice=choice, max_tokens=80)
    c = reply.choices[0]
    assert c.finish_reason == "tool_calls", c
    assert c.message.content is None and c.message.tool_calls is not None and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    check_weather_arguments(call.function.arguments)


def test_forced_tool_call_streamed_accumulates(client: openai.OpenAI) -> None:
    """The client's own stream helper folds our `tool_calls` deltas into a whole message."""
    with client.beta.chat.completions.stream(
            model="any", messages=ASK_WEATHER, tools=[WEATHER, OPENING], max_tokens=80,
            tool_choice={"type": "function", "function": {"name": "get_weather"}}) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events, events
    c = final.choices[0]
    assert c.finish_reason == "tool_calls"
    assert not c.message.content and c.message.tool_calls is not None and len(c.message.tool_calls) == 1
    assert c.message.tool_calls[0].function.name == "get_weather"
    check_weather_arguments(c.message.tool_calls[0].function.arguments)


def test_streamed_chunks_have_openai_tool_call_shape(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="any", messages=ASK_WEATHER, tools=[WEATHER],
                                                 tool_choice="required", max_tokens=80, stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first, *rest = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather"
    check_weather_arguments((first.function.arguments or "") + "".join(
        (r.function.arguments or "") for r in rest if r.function))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_conversation_with_a_tool_turn_is_answered(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="any", messages=ASK_WEATHER, tools=[WEATHER],
                                           tool_choice="required", max_tokens=80)
    call = first.choices[0].message.tool_calls
    assert call
    messages: list[Any] = [*ASK_WEATHER, first.choices[0].message.model_dump(exclude_none=True),
                           {"role": "tool", "tool_call_id": call[0].id, "content": '{"forecast": "sunny, 21 C"}'}]
    reply = client.chat.completions.create(model="any", messages=messages, tools=[WEATHER], max_tokens=40)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    # tool_choice "none": the tools are not offered and the answer is plain text.
    plain = client.chat.completions.create(model="any", messages=messages, tools=[WEATHER], tool_choice="none",
                                           max_tokens=40)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content


def test_a_tool_turn_must_answer_a_call(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="any", max_tokens=5, messages=[
            *ASK_WEATHER, {"role": "tool", "tool_call_id": "call_nowhere", "content": "{}"}])
    assert caught.value.body["param"] == "messages[1].tool_call_id"  # type: ignore[index]


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"frobnicate": True}, "frobnicate", "unknown field"),
    ({"logprobs": True}, "logprobs", "not supported"),
    ({"logit_bias": {"50256": -100}}, "logit_bias", "not supported"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER]},
     "tool_choice.function.name", "not in 'tools'"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "letters"),
    ({"response_format": {"type": "yaml"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": "no"}}},
     "response_format.json_schema.schema", "object"),
])
def test_unsupported_fields_are_refused_by_name(client: openai.OpenAI, extra: dict[str, Any], param: str,
                                                words: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="any", messages=ASK_WEATHER, max_tokens=5, extra_body=extra)
    body: Any = caught.value.body
    assert caught.value.status_code == 400 and body["param"] == param, body
    assert words in body["message"], body


def test_accepted_null_and_default_fields(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="any", messages=ASK_WEATHER, max_tokens=5, logprobs=False,
                                           user="kiosk-7", parallel_tool_calls=True, frequency_penalty=0.5,
                                           presence_penalty=0.5, response_format={"type": "text"},
                                           extra_body={"metadata": None})
    assert reply.choices[0].message.content


def test_stop_ends_the_answer(client: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    free = client.chat.completions.create(model="any", messages=ask, max_tokens=40)  # temperature 0: repeatable
    text = free.choices[0].message.content or ""
    stop = text.split()[len(text.split()) // 2]  # a word in the middle of the answer
    assert len(stop) >= 1 and text.index(stop) > 0, text
    stopped = client.chat.completions.create(model="any", messages=ask, max_tokens=40, stop=[stop, "zzz"])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop)]


def test_same_seed_same_answer(client: openai.OpenAI) -> None:
    ask: Any = [{"role": "user", "content": "Tell me a short story about a robot."}]

    def answer(seed: int) -> str:
        reply = client.chat.completions.create(model="any", messages=ask, max_tokens=30, temperature=1.2,
                                               seed=seed)
        return reply.choices[0].message.content or ""

    first = answer(7)
    assert answer(7) == first
    assert any(answer(seed) != first for seed in (8, 9, 10)), "the seed changed nothing"
