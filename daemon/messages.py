"""The engine's typed boundary: what a generation is asked for and what it reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "time_limit"]
KnowledgeKind = Literal["faq", "grounded", "fallback", "ordinary"]
"""How an answer was made: a venue FAQ's curated text, the model from venue sections, the fallback, or the model
on its own (see daemon.knowledge)."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    tool_calls: str = ""
    """An assistant turn's tool calls as the OpenAI API writes them (JSON array text); "" for none."""
    tool_call_id: str = ""
    """A "tool" turn: the call it answers."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    stop: tuple[str, ...] = ()
    seed: int | None = None
    frequency_penalty: float = 0.0
    """OpenAI's: lowers a token's logit by this much per time it already appears in the answer (-2 to 2)."""
    presence_penalty: float = 0.0
    """OpenAI's: lowers a token's logit by this much once it appears in the answer at all (-2 to 2)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One chat turn: the whole conversation so far (system prompt first) and how to sample the reply."""

    messages: tuple[ChatMessage, ...]
    sampling: Sampling
    request_id: str = ""
    conversation: str = ""
    """Which conversation this continues: the engine keeps recent conversations' KV caches by this key."""
    tools: str = ""
    """OpenAI `tools` (JSON array text) the model may call; "" for none. Tool calls come back in the answer's
    text in Qwen2.5's own format (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`), whichever engine
    wrote them (see daemon.structured)."""
    tool_choice: str = ""
    """OpenAI `tool_choice` (JSON text: "auto", "none", "required" or a named function); "" for the default."""
    response_format: str = ""
    """OpenAI `response_format` (JSON object text); "" for plain text."""


@dataclass(frozen=True)
class Timings:
    queue_ms: float
    """Time spent waiting for the model to be free."""
    ttft_ms: float
    """From the start of this generation to the first text handed out."""
    prompt_eval_tokens: int
    """Prompt tokens the model actually evaluated (the rest came from its KV cache)."""
    prompt_ms: float
    tokens_per_s: float
    """Decode speed after the first token (of the tokens sampled now: a draft's are not counted)."""
    total_ms: float
    drafted_tokens: int = 0
    """Answer tokens written ahead by a draft while the visitor was still speaking (daemon.prefill.draft)."""
    draft_prompt_tokens: int = 0
    """Prompt tokens that draft read (before the question was asked; not in `prompt_eval_tokens`)."""
    speculative_proposed: int = 0
    """Tokens proposed by n-gram lookup and checked by the model in batches (daemon.speculative)."""
    speculative_accepted: int = 0
    """Of those, the tokens the sampler picked itself (each saved a step)."""
    speculative_batches: int = 0
    """Batches that checked a proposal."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    text: str
    usage: Usage
    timings: Timings
    dropped_turns: int = field(default=0)
    """Oldest turns left out of the prompt to fit the context window."""
    stored: bool = field(default=True)
    """False when the history database refused the answer for now: it waits in memory and is saved later."""
    knowledge: KnowledgeKind = field(default="ordinary")
    sources: tuple[Source, ...] = field(default=())
    """The venue sections the answer used (none for a fallback or an ordinary answer)."""


PrefillSkip = Literal["", "not_ready", "busy", "cancelled", "too_long", "no_cut", "failed", "canned", "no_session"]
"""Why a prefill evaluated nothing: "" it ran; the model was loading or busy (a question goes first); a question
came before it started; the prompt does not fit; the user text was not found in the rendered prompt; llama.cpp
failed; the answer will be a fixed text (no model); the conversation is gone."""


@dataclass(frozen=True)
class PrefillReport:
    """What reading a question ahead of time (while the visitor still speaks) did; see daemon.prefill."""

    evaluated: int = 0
    """Prompt tokens the model read now."""
    cached: int = 0
    """Tokens of the cut prompt the context already held (restored or left from before)."""
    target: int = 0
    """Tokens of the prompt up to the end of the user text (less the held-back last token)."""
    ms: float = 0.0
    skipped: PrefillSkip = ""
    capped: bool = False
    """It stopped before `target` (token cap, time cap or a question arriving); the answer reads the rest."""
    drafted: int = 0
    """Answer tokens a draft sampled after the whole prompt (daemon.prefill.draft); 0 for a plain prefill."""


@dataclass(frozen=True)
class Source:
    """A venue section an answer used: its file (relative to the knowledge folder) and heading."""

    file: str
    title: str


class EngineError(Exception):
    """A generation could not run; `code` is the stable error code sent to clients."""

    code = "engine_error"


class ModelNotReady(EngineError):
    code = "model_loading"


class PromptTooLong(EngineError):
    code = "prompt_too_long"


class Busy(EngineError):
    code = "busy"


class ShuttingDown(EngineError):
    code = "shutting_down"
