"""The upstream engine's wire and settings: the request body in OpenAI's form, tool calls streamed back as
Qwen2.5 `<tool_call>` text, and the settings that are refused."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from daemon.gate import ModelGate
from daemon.messages import Busy, ChatMessage, GenerationRequest, Sampling
from daemon.settings import Settings, SettingsError, describe, load_settings
from daemon.upstream.engine import UpstreamEngine
from daemon.upstream.wire import ToolCallText, request_body
from tests.upstream_standin import MODEL, Reply, stand_in

TOOLS = json.dumps([{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
CALLS = json.dumps([{"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}])


def sampling(**kwargs: object) -> Sampling:
    values: dict[str, object] = {"max_tokens": 40, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
                                 "repeat_penalty": 1.1, **kwargs}
    return Sampling(**values)  # type: ignore[arg-type]


def tool_request() -> GenerationRequest:
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Weather in Paris?"),
                ChatMessage("assistant", "", tool_calls=CALLS),
                ChatMessage("tool", "{\"temp\": 21}", tool_call_id="call_1"),
                ChatMessage("user", "And tomorrow?"))
    return GenerationRequest(messages, sampling(stop=("END",), seed=3, presence_penalty=0.5), tools=TOOLS,
                             tool_choice=json.dumps("required"),
                             response_format=json.dumps({"type": "json_object"}))


def test_the_request_body_carries_tool_turns_and_the_openai_fields_as_given() -> None:
    body = request_body(tool_request(), "big-model")
    assert body["model"] == "big-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][2] == {"role": "assistant", "content": None, "tool_calls": json.loads(CALLS)}
    assert body["messages"][3] == {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "call_1"}
    assert body["tools"] == json.loads(TOOLS) and body["tool_choice"] == "required"
    assert body["response_format"] == {"type": "json_object"}
    assert (body["stop"], body["seed"], body["max_tokens"], body["temperature"], body["top_p"]) == (
        ["END"], 3, 40, 0.2, 0.9)
    assert body["presence_penalty"] == 0.5 and "frequency_penalty" not in body  # 0 is the default: not sent


def test_absent_fields_are_not_sent() -> None:
    body = request_body(GenerationRequest((ChatMessage("user", "Hi"),), sampling()), "")
    assert not {"model", "stop", "seed", "tools", "tool_choice", "response_format", "frequency_penalty",
                "presence_penalty"} & set(body)


def test_streamed_tool_call_fragments_become_one_qwen_block_per_call() -> None:
    calls = ToolCallText()
    out = calls.feed([{"index": 0, "id": "a", "function": {"name": "get_weather", "arguments": ""}}])
    out += calls.feed([{"index": 0, "function": {"arguments": "{\"city\": "}}])
    out += calls.feed([{"index": 0, "function": {"arguments": "\"Paris\"}"}}])
    assert out == []  # not complete until the next call or the end
    out += calls.feed([{"index": 1, "function": {"name": "get_time", "arguments": "{}"}}])
    assert out == ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>']
    assert calls.flush() == ['<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>']
    assert calls.flush() == []


def test_tool_calls_from_the_upstream_arrive_as_text_after_the_content() -> None:
    async def test() -> None:
        reply = Reply(pieces=("Let me check.",), tool_calls=(("get_weather", ('{"city"', ': "Par', 'is"}')),
                                                              ("get_time", ("{}",))))
        async with stand_in(replies=[reply]) as upstream:
            engine = UpstreamEngine(Settings(engine="upstream", upstream_url=upstream.url))
            assert await engine.check() and engine.model_id == MODEL
            async with engine.generate(tool_request()) as generation:
                pieces = [piece async for piece in generation]
            await engine.close()
        assert pieces == ["Let me check.",
                          '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
                          '\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>']
        assert generation.result is not None and generation.result.reason == "stop"
        assert generation.result.usage.prompt_tokens == 11
        sent = upstream.seen[0].body
        assert sent["tools"] == json.loads(TOOLS) and sent["messages"][3]["tool_call_id"] == "call_1"

    asyncio.run(test())


# ---- settings ----

def test_engine_upstream_needs_an_http_url() -> None:
    with pytest.raises(SettingsError, match="'upstream_url' is empty"):
        load_settings({"engine": "upstream"}, environ={})
    with pytest.raises(SettingsError, match=r"upstream_url.*not an http"):
        load_settings({}, environ={"KIOSKD_UPSTREAM_URL": "10.0.0.5:8080/v1"})
    with pytest.raises(SettingsError, match=r"engine.*not one of local, upstream"):
        load_settings({"engine": "remote"}, environ={})


def test_an_unreadable_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"upstream_token_file.*cannot read"):
        load_settings({"engine": "upstream", "upstream_url": "http://127.0.0.1:9/v1",
                       "upstream_token_file": str(tmp_path / "missing")}, environ={})


@pytest.mark.parametrize(("name", "value"), [("upstream_parallel", "0"), ("upstream_first_token_timeout", "0"),
                                             ("upstream_health_interval", "-1"), ("upstream_fallback", "maybe")])
def test_out_of_range_upstream_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value}, environ={})


def test_upstream_settings_come_from_the_environment_and_never_show_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-value\n")
    settings = load_settings({}, environ={
        "KIOSKD_ENGINE": "upstream", "KIOSKD_UPSTREAM_URL": "https://gpu.lan/v1", "KIOSKD_UPSTREAM_MODEL": "m",
        "KIOSKD_UPSTREAM_TOKEN_FILE": str(token), "KIOSKD_UPSTREAM_PARALLEL": "4",
        "KIOSKD_UPSTREAM_FALLBACK": "false"})
    assert (settings.engine, settings.upstream_url, settings.upstream_model, settings.upstream_parallel,
            settings.upstream_fallback) == ("upstream", "https://gpu.lan/v1", "m", 4, False)
    assert "s3cret-value" not in repr(describe(settings)) and "s3cret-value" not in repr(settings)


# ---- the gate with several holders ----

def test_a_gate_with_holders_admits_that_many_then_queues_in_order() -> None:
    async def test() -> None:
        gate = ModelGate(max_waiting=1, holders=2)
        await gate.acquire()
        assert not gate.busy
        await gate.acquire()
        assert gate.busy and gate.holding == 2
        positions: list[int] = []
        third = asyncio.create_task(gate.acquire(positions.append))
        await asyncio.sleep(0)
        assert positions == [1] and gate.waiting == 1
        with pytest.raises(Busy):
            await gate.acquire()  # the line (1) is full
        gate.release()
        await asyncio.wait_for(third, 1)
        assert gate.holding == 2
        gate.release()
        gate.release()
        assert gate.holding == 0 and not gate.busy

    asyncio.run(test())
