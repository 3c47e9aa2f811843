"""Rendering a conversation with the model's own chat template and fitting it into the context window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from daemon.messages import ChatMessage, PromptTooLong

Render = Callable[[Sequence[ChatMessage]], str]
Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class FittedPrompt:
    tokens: list[int]
    dropped_turns: int


def fit_prompt(messages: Sequence[ChatMessage], render: Render, tokenize: Tokenize,
               n_ctx: int, reply_budget: int) -> FittedPrompt:
    """Keep the system prompt and as many of the newest turns as leave `reply_budget` tokens free.

    Turns are dropped oldest first, whole exchanges at a time, so the kept history still starts with a
    question. A last question that cannot fit even alone raises PromptTooLong.
    """
    system = [m for m in messages[:1] if m.role == "system"]
    history = list(messages[len(system):])
    limit = n_ctx - reply_budget
    dropped = 0
    while True:
        tokens = tokenize(render([*system, *history]))
        if len(tokens) <= limit:
            return FittedPrompt(tokens, dropped)
        if len(history) <= 1:
            raise PromptTooLong(
                f"the question needs {len(tokens)} tokens but only {max(limit, 0)} fit in the context window "
                f"({n_ctx} tokens less {reply_budget} reserved for the answer)")
        cut = _next_question(history, 1)
        dropped += cut
        history = history[cut:]


def _next_question(history: Sequence[ChatMessage], start: int) -> int:
    """Index of the next user turn at or after `start` (the last turn if there is none)."""
    for i in range(start, len(history)):
        if history[i].role == "user":
            return i
    return len(history) - 1
