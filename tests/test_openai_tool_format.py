"""Tool calls in Qwen2.5's format without a model: the prompt rendering, the streaming splitter, the grammars,
and the OpenAI response shapes the API layer builds from a scripted engine's text."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest

from daemon.messages import ChatMessage, EngineError, GenerationRequest, Sampling
from daemon.openai_compat.calls import CallDeltas, whole_message
from daemon.prefill.draft import Draft, drafting_allowed
from daemon.structured.grammar import GrammarError, answer_grammar
from daemon.structured.qwen_tools import ToolCall, ToolCallSplitter, render_tools_into, tools_offered
from tests.fakes import ScriptedEngine
from tests.test_openai_protocol import Start, start  # noqa: F401 (the fixture)

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather today.",
                                         "parameters": {"type": "object", "properties": {
                                             "city": {"type": "string"}}, "required": ["city"]}}}
TOOLS = json.dumps([TOOL])
CALL_TEXT = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
PARIS = ToolCall("get_weather", '{"city": "Paris"}')
# What Qwen2.5-Instruct's own chat template writes after the system text when `tools` are given.
QWEN_TOOLS_TEXT = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather today.", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n</tools>\n\n'
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call>"
    ' XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def split(pieces: list[str]) -> list[str | ToolCall]:
    splitter = ToolCallSplitter()
    out: list[str | ToolCall] = []
    for piece in pieces:
        out += splitter.feed(piece)
    out += splitter.flush()
    return out


def joined(items: list[str | ToolCall]) -> list[str | ToolCall]:
    """Adjacent text pieces as one (the splitter may pass text on in several pieces)."""
    out: list[str | ToolCall] = []
    for item in items:
        if isinstance(item, str) and out and isinstance(out[-1], str):
            out[-1] += item
        else:
            out.append(item)
    return out


def test_a_call_split_at_every_character_is_found() -> None:
    assert split(list(CALL_TEXT)) == [PARIS]


def test_text_around_calls_is_kept_and_the_format_line_breaks_dropped() -> None:
    text = f"Let me check.\n{CALL_TEXT}\n{CALL_TEXT.replace('Paris', 'Rome')}\nDone."
    for size in (1, 3, 7, len(text)):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        assert joined(split(pieces)) == ["Let me check.", PARIS, ToolCall("get_weather", '{"city": "Rome"}'),
                                         "Done."], size


def test_only_a_possible_tag_is_held_back() -> None:
    splitter = ToolCallSplitter()
    assert splitter.feed("a < b and <tool") == ["a < b and"]
    assert splitter.feed("box> here") == [" <toolbox> here"]
    assert splitter.flush() == []


def test_an_unclosed_call_at_the_end() -> None:
    # The JSON is complete (the model stopped before the closing tag): it is a call.
    assert split(['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}']) == [PARIS]
    # Cut off inside the JSON: nothing is lost, the text is passed on as it was.
    assert split(["Hi ", '<tool_call>\n{"name": "get_we']) == ["Hi", '<tool_call>\n{"name": "get_we']


def test_a_block_that_is_not_a_call_stays_text() -> None:
    for body in ("not json", '{"arguments": {}}', '{"name": "f", "arguments": [1]}'):
        assert joined(split([f"<tool_call>{body}</tool_call>"])) == [f"<tool_call>{body}</tool_call>"]
    assert split(['<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>']) == [ToolCall("f", '{"a": 1}')]


def test_plain_text_passes_unchanged() -> None:
    text = "Opening hours: 9 < 10 <b>bold</b>\n\n"
    assert "".join(str(p) for p in split(list(text))) == text


def test_render_writes_qwen_tool_text_calls_and_responses() -> None:
    calls = json.dumps([{"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": '{"city": "Paris"}'}},
                        {"id": "c2", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": '{"city": "Rome"}'}}])
    messages = (ChatMessage("system", "Be brief."), ChatMessage("user", "Weather?"),
                ChatMessage("assistant", "", tool_calls=calls), ChatMessage("tool", "sunny", tool_call_id="c1"),
                ChatMessage("tool", "rain", tool_call_id="c2"))
    rendered = render_tools_into(messages, TOOLS, "")
    assert rendered == (
        ChatMessage("system", "Be brief." + QWEN_TOOLS_TEXT), ChatMessage("user", "Weather?"),
        ChatMessage("assistant", CALL_TEXT + "\n" + CALL_TEXT.replace("Paris", "Rome")),
        ChatMessage("user", "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response>"))
    # "none": the tools are not offered, the history is still written out.
    assert render_tools_into(messages, TOOLS, '"none"')[0] == ChatMessage("system", "Be brief.")
    assert not tools_offered(TOOLS, '"none"') and tools_offered(TOOLS, '"auto"') and not tools_offered("", "")
    # An assistant's text comes before its calls.
    first_call = json.dumps(json.loads(calls)[:1])
    said = render_tools_into((ChatMessage("assistant", "Checking.", tool_calls=first_call),), "", "")
    assert said == (ChatMessage("assistant", "Checking.\n" + CALL_TEXT),)


def request(**fields: str) -> GenerationRequest:
    return GenerationRequest((), Sampling(10, 0.0, 1.0, 0, 1.0), **fields)


def test_grammars() -> None:
    assert answer_grammar(request()) == ""
    assert answer_grammar(request(tools=TOOLS)) == "" == answer_grammar(request(tools=TOOLS, tool_choice='"auto"'))
    forced = answer_grammar(request(tools=TOOLS, tool_choice='"required"'))
    assert forced.startswith('root ::= "<tool_call>\\n" tool-call "\\n</tool_call>"')
    assert '"\\"get_weather\\""' in forced
    assert "object" in answer_grammar(request(response_format='{"type": "json_object"}'))
    with pytest.raises(GrammarError) as caught:
        answer_grammar(request(response_format=json.dumps(
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}})))
    assert caught.value.param == "response_format.json_schema.schema"


def test_call_deltas_and_whole_message() -> None:
    deltas = CallDeltas(enabled=True)
    out = deltas.feed("Sure." + CALL_TEXT[:20]) + deltas.feed(CALL_TEXT[20:]) + deltas.flush()
    assert out[0] == {"content": "Sure."}
    head, args = out[1]["tool_calls"][0], out[2]["tool_calls"][0]
    assert (head["index"], head["type"], head["function"]) == (0, "function", {"name": "get_weather",
                                                                               "arguments": ""})
    assert head["id"].startswith("call_") and args == {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    assert deltas.finish_reason("stop") == "tool_calls" and deltas.finish_reason("length") == "length"
    message, _ = whole_message(CALL_TEXT + CALL_TEXT, enabled=True, parallel=False)
    assert message["content"] is None and len(message["tool_calls"]) == 1
    plain, calls = whole_message(CALL_TEXT, enabled=False)
    assert plain == {"role": "assistant", "content": CALL_TEXT} and calls.finish_reason("stop") == "stop"


def test_api_turns_scripted_call_text_into_tool_calls(start: Start) -> None:  # noqa: F811
    pieces = ["I will look. ", CALL_TEXT[:5], CALL_TEXT[5:30], CALL_TEXT[30:], "\n"]
    engine = ScriptedEngine(pieces)
    _, client = start(engine)
    tools: Any = [TOOL]
    whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Weather?"}],
                                           tools=tools, tool_choice="auto", response_format={"type": "text"})
    c = whole.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content == "I will look."
    assert c.message.tool_calls and c.message.tool_calls[0].function.name == "get_weather"
    req = engine.requests[-1]
    assert json.loads(req.tools) == [TOOL] and req.tool_choice == '"auto"' and req.response_format == ""
    with client.beta.chat.completions.stream(model="m", messages=[{"role": "user", "content": "Weather?"}],
                                             tools=tools) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls
    assert call and call[0].function.arguments == '{"city": "Paris"}' and final.choices[0].finish_reason == "tool_calls"
    # A tool turn and the assistant's calls reach the engine as typed messages.
    client.chat.completions.create(model="m", messages=[
        {"role": "user", "content": "Weather?"}, whole.choices[0].message.model_dump(exclude_none=True),  # type: ignore[misc]
        {"role": "tool", "tool_call_id": c.message.tool_calls[0].id, "content": "sunny"}], tools=tools)
    sent = engine.requests[-1].messages
    assert sent[-1] == ChatMessage("tool", "sunny", tool_call_id=c.message.tool_calls[0].id)
    assert json.loads(sent[-2].tool_calls)[0]["function"]["name"] == "get_weather"
    assert sent[-2].content == "I will look."


def test_without_tools_the_text_is_left_alone(start: Start) -> None:  # noqa: F811
    engine = ScriptedEngine([CALL_TEXT])
    _, client = start(engine)
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == CALL_TEXT and reply.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"frobnicate": 1})


def test_no_draft_follows_a_grammar() -> None:
    """A draft's sampler followed no grammar, so an answer that must follow one never starts from a draft."""
    sampling = Sampling(10, 0.0, 1.0, 0, 1.0)
    assert drafting_allowed(sampling) and not drafting_allowed(sampling, 'root ::= "{}"')
    draft = Draft((1, 2), (3,), sampling, complete=False)

    context = SimpleNamespace(n_tokens=2, input_ids=[1, 2])  # the live context as the draft left it
    assert draft.fits([1, 2], sampling, context)
    assert not draft.fits([1, 2], sampling, context, 'root ::= "{}"')


def test_a_grammar_llama_cpp_cannot_parse_is_an_engine_error(test_model: Path) -> None:
    from daemon.llama_adapter import checked_grammar, load_llama

    llm = load_llama(test_model, n_ctx=256, n_batch=64, threads=1, threads_batch=1)
    try:
        with pytest.raises(EngineError, match="grammar"):
            checked_grammar(llm, 'root ::= "a" undefined-rule')  # a NULL sampler would crash the daemon
        assert checked_grammar(llm, 'root ::= "a"') is checked_grammar(llm, 'root ::= "a"')  # parsed once
    finally:
        llm.close()
