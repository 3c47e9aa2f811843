"""Feeding proposals into llama-cpp-python's generation loop and keeping count of how they fare.

`Llama.generate` already verifies: a list sent into its generator is evaluated after the token just sampled,
in one batch, and the sampler then runs at each position in turn; at the first position where it picks
something other than the proposed token, the rest of the batch is dropped from the KV cache and generation goes
on from the sampled token. The sampler sees exactly the tokens it would have seen without a proposal (each
sample is taken from the model's logits at that position, and every sampled token is accepted once, in order),
so greedy and seeded answers are unchanged. What generate lacks is the logits of every batch position without
`logits_all` (which would also compute them for the whole prompt, and keep an n_ctx x vocabulary matrix):
CountingLlama.eval asks for them only for the batches of an answer (`decoding`), which also pads a step without a
proposal to two tokens, so that each token's logits are computed the same way, proposal or not.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.speculative.ngram import NgramIndex
from daemon.speculative.policy import DraftLength

RECENT_ANSWERS = 16
"""Earlier answers kept as reference text: a kiosk is asked the same things all day. They only ever decide which
tokens are proposed, never what is written, so one visitor's answer cannot reach another's screen."""


@dataclass
class SpeculationStats:
    proposed: int = 0
    accepted: int = 0
    batches: int = 0

    def timings(self) -> dict[str, int]:
        """As the fields of daemon.messages.Timings."""
        return {"speculative_proposed": self.proposed, "speculative_accepted": self.accepted,
                "speculative_batches": self.batches}


class RecentAnswers:
    """The token lists of the last RECENT_ANSWERS answers, by conversation. A conversation the visitor ended or
    deleted is forgotten here too (daemon.context_cache calls `forget`), like its history and model state."""

    def __init__(self, keep: int = RECENT_ANSWERS) -> None:
        self._answers: deque[tuple[str, tuple[int, ...]]] = deque(maxlen=keep)
        self._lock = threading.Lock()  # forget comes from the event loop, the rest from the model thread

    def add(self, tokens: Sequence[int], conversation: str = "") -> None:
        if len(tokens) > 1:
            with self._lock:
                self._answers.append((conversation, tuple(tokens)))

    def forget(self, conversations: Collection[str]) -> None:
        with self._lock:
            kept = [(c, t) for c, t in self._answers if c not in conversations]
            self._answers.clear()
            self._answers.extend(kept)

    def texts(self) -> list[tuple[int, ...]]:
        with self._lock:
            return [tokens for _, tokens in self._answers]


class Speculation:
    """Drives one answer's generator, proposing continuations found in its prompt, the answer so far and
    `references`; `longest` 0: nothing is proposed (the steps are still batches, see CountingLlama.decoding)."""

    def __init__(self, llm: Any, longest: int, references: RecentAnswers | None = None) -> None:
        self._llm = llm
        self._context: Sequence[int] = ()
        self._references = references
        self._length = DraftLength(longest)
        self._room = 0  # tokens the answer may still write (its budget, the context window)
        self._index: NgramIndex | None = None
        self._fresh = False  # the pending proposal was made after the last token: send it
        self._proposed_last = 0
        self.stats = SpeculationStats()

    def tokens(self, generator: Generator[int, Sequence[int] | None, None], context: Sequence[int],
               room: int) -> Generator[int, None, None]:
        """The tokens `generator` samples after `context` (the prompt, and any tokens a draft wrote), sending a
        proposal into it whenever one can be checked; never more than `room` tokens in all."""
        llm = self._llm
        self._context, self._room = context, room
        token = next(generator)
        pending: list[int] = []
        llm.decoding = True  # the prompt was read above: every step from here on is a batch
        try:
            while True:
                yield token
                self._room -= 1
                pending = self._after(token, pending)
                token = generator.send(list(pending) if pending and self._fresh else None)
        finally:
            llm.decoding = False

    def _after(self, token: int, pending: list[int]) -> list[int]:
        """What is still proposed after `token` was sampled; a new proposal (self._fresh) when none is left."""
        if not self._length.longest:
            return []  # proposals off
        index = self._index_with(token)
        if pending and token == pending[0]:
            self.stats.accepted += 1
            self._fresh = False
            rest = pending[1:]
            if not rest:
                self._length.record(self._proposed_last, self._proposed_last)
            return rest
        if pending:  # cut short: the sampler picked another token here
            self._length.record(self._proposed_last, self._proposed_last - len(pending))
        proposal = index.propose(min(self._length.next(), self._room - 1)) if self._room > 1 else []
        self._fresh = bool(proposal)
        if proposal:
            self._proposed_last = len(proposal)
            self.stats.proposed += len(proposal)
            self.stats.batches += 1
        return proposal

    def _index_with(self, token: int) -> NgramIndex:
        if self._index is None:  # built after the first token, so it never delays the first words
            references = self._references.texts() if self._references is not None else []
            self._index = NgramIndex(references)
            self._index.extend(self._context)
        self._index.append(token)
        return self._index
