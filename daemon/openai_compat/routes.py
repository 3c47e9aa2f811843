"""POST /v1/chat/completions and GET /v1/models, compatible with OpenAI's clients."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import asdict
from typing import Any

from aiohttp import hdrs, web

from daemon.appkeys import ENGINE, KNOWLEDGE, METRICS, SETTINGS
from daemon.client_limits import client_generation
from daemon.conversation import fallback_for
from daemon.knowledge.answers import KnowledgeAnswer
from daemon.knowledge.library import VenueKnowledge
from daemon.knowledge.planning import Plan
from daemon.messages import ChatMessage, EngineError, Finished, GenerationRequest
from daemon.openai_compat.calls import CallDeltas, whole_message
from daemon.openai_compat.schema import ApiError, ChatCompletionParams, decode_json, parse_chat_request
from daemon.settings import Settings
from daemon.structured.qwen_tools import tools_offered

CREATED = int(time.time())


async def list_models(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    model = {"id": engine.model_id, "object": "model", "created": CREATED, "owned_by": "kioskd"}
    return web.json_response({"object": "list", "data": [model]})


async def read_json(request: web.Request) -> object:
    """The request's JSON body; ApiError for a non-JSON Content-Type (400), a body that is too large (413) or
    not JSON (400). A missing Content-Type is accepted, as llama.cpp does, for hand-written requests."""
    if hdrs.CONTENT_TYPE in request.headers and not _is_json(request.content_type):
        raise ApiError(400, f"the Content-Type must be application/json, not {request.content_type!r}",
                       code="unsupported_content_type")
    limit = request.app[SETTINGS].current.max_message_bytes
    too_large = ApiError(413, f"the request body exceeds {limit} bytes", code="body_too_large")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # A chunked body has no Content-Length; aiohttp stops it at the limit.
        raise too_large from None
    return decode_json(raw)


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (content_type.startswith("application/")
                                                   and content_type.endswith("+json"))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS].current
    params = parse_chat_request(await read_json(request), settings)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    plan = await _plan(request.app[KNOWLEDGE], params, settings)
    if params.stream:
        return await _stream(request, params, plan, completion_id)
    answer = KnowledgeAnswer(plan, _discard, None, fallback_for(settings, plan.lang))
    finished = await _run(request, params, answer, completion_id)
    return web.json_response(_completion(request, completion_id, finished, params))


def _calls_enabled(params: ChatCompletionParams) -> bool:
    return tools_offered(params.tools, params.tool_choice)


async def _plan(knowledge: VenueKnowledge, params: ChatCompletionParams, settings: Settings) -> Plan:
    """The venue knowledge's plan for the last question; the caller's own system message is kept (and a
    grounded answer's section added to it).

    A structured request (JSON asked for, tools offered, or a tool's result to answer) is answered by the model
    alone: a venue FAQ or the fallback is fixed prose that would stand in for the JSON or the tool call, and a
    grounded answer's check may retract the model's text and say a section's sentences instead (prose again)."""
    if params.structured:
        # The language only picks a fallback text, which an ordinary plan never says.
        return Plan("ordinary", "en", system_prompt=params.messages[0].content)
    system = dataclasses.replace(settings, system_prompt=params.messages[0].content)
    previous = next((m.content for m in reversed(params.messages[:-1]) if m.role == "user"), "")
    return await knowledge.plan(params.messages[-1].content, system, previous)


async def _discard(_: str) -> None:
    pass


async def _run(request: web.Request, params: ChatCompletionParams, answer: KnowledgeAnswer,
               completion_id: str) -> Finished:
    """The whole answer: curated text, or the model's through `answer` (which passes on what may be shown)."""
    finished = await _answer(request, params, answer, completion_id)
    request.app[METRICS].answered(finished)
    return finished


async def _answer(request: web.Request, params: ChatCompletionParams, answer: KnowledgeAnswer,
                  completion_id: str) -> Finished:
    if answer.canned:
        return await answer.stream_canned()
    messages = (ChatMessage("system", answer.plan.system_prompt), *params.messages[1:])
    with client_generation(request):  # 429 for a client that already has its answer(s) running or waiting
        generation = request.app[ENGINE].generate(
            GenerationRequest(messages, params.sampling, request_id=completion_id, tools=params.tools,
                              tool_choice=params.tool_choice, response_format=params.response_format))
        async with generation:  # Waits for the model (or raises Busy).
            async for piece in generation:
                if not await answer.piece(piece):
                    generation.cancel()
                    break
    assert generation.result is not None
    return await answer.finish(generation.result)


def _base(request: web.Request, completion_id: str, kind: str) -> dict[str, Any]:
    return {"id": completion_id, "object": kind, "created": int(time.time()),
            "model": request.app[ENGINE].model_id, "system_fingerprint": "kioskd"}


def _usage(finished: Finished) -> dict[str, Any]:
    u = finished.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def _finish_reason(finished: Finished) -> str:
    # OpenAI has no "cancelled"; a cut-short answer is closest to "length".
    return "stop" if finished.reason == "stop" else "length"


def _completion(request: web.Request, completion_id: str, finished: Finished,
                params: ChatCompletionParams) -> dict[str, Any]:
    message, calls = whole_message(finished.text, _calls_enabled(params), params.parallel_tool_calls)
    return {
        **_base(request, completion_id, "chat.completion"),
        "choices": [{"index": 0, "message": message,
                     "logprobs": None, "finish_reason": calls.finish_reason(_finish_reason(finished))}],
        "usage": _usage(finished),
        "timings": asdict(finished.timings),
        **_knowledge(finished),
    }


async def _stream(request: web.Request, params: ChatCompletionParams, plan: Plan,
                  completion_id: str) -> web.StreamResponse:
    """Server-sent events. The headers wait for the first text, so a prompt the model refuses is still a plain
    400. A grounded answer is sent once its sections are found to support it (a stream cannot take text back)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    base = _base(request, completion_id, "chat.completion.chunk")
    held: list[str] | None = [] if plan.kind == "grounded" else None
    calls = CallDeltas(_calls_enabled(params), params.parallel_tool_calls)

    async def send(payload: dict[str, Any]) -> None:
        if not response.prepared:
            await response.prepare(request)
            await send(chunk(delta({"role": "assistant", "content": ""})))
        await response.write(f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {**base, "choices": choices, **extra}

    def delta(content: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

    async def on_piece(text: str) -> None:
        if held is not None:
            held.append(text)
        else:
            for piece in calls.feed(text):
                await send(chunk(delta(piece)))

    async def on_retract() -> None:
        if held is not None:
            held.clear()

    settings = request.app[SETTINGS].current
    answer = KnowledgeAnswer(plan, on_piece, on_retract, fallback_for(settings, plan.lang))
    try:
        finished = await _run(request, params, answer, completion_id)
    except EngineError as exc:
        if not response.prepared:
            raise  # Nothing sent yet: the middleware answers with a plain JSON error.
        # The status line is gone; OpenAI's clients raise on an error event in the stream.
        request.app[METRICS].error(exc.code, str(exc), callers_fault=False)
        await send({"error": {"message": str(exc), "type": "server_error", "param": None, "code": exc.code}})
        await response.write_eof()
        return response
    for text in held or ():
        await send(chunk(delta({"content": text})))
    for piece in calls.flush():
        await send(chunk(delta(piece)))
    await send(chunk(delta({}, calls.finish_reason(_finish_reason(finished))), timings=asdict(finished.timings),
                     **_knowledge(finished)))
    if params.include_usage:
        await send(chunk([], usage=_usage(finished)))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _knowledge(finished: Finished) -> dict[str, Any]:
    """The extra fields that say how an answer was made and from which venue sections."""
    return {"knowledge": finished.knowledge, "sources": [asdict(source) for source in finished.sources]}
