"""Proposals by n-gram lookup: what followed the last time the text read like its last few tokens."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

LONGEST = 4
"""The longest n-gram looked up; a longer match is a stronger hint that the same words follow again."""
SHORTEST = 2
"""One token alone (a space, a comma) is followed by too many different things to be worth a batch."""


class NgramIndex:
    """The tokens of a text (the prompt, then the answer as it is written) and of reference texts (earlier
    answers), indexed by every n-gram of LONGEST..SHORTEST tokens to where its most recent continuation starts.

    Positions refer to one flat list where each reference text is followed by a separator (-1), so no n-gram
    and no proposal runs from one text into the next."""

    def __init__(self, references: Iterable[Sequence[int]] = ()) -> None:
        self._tokens: list[int] = []
        self._next: list[dict[tuple[int, ...], int]] = [{} for _ in range(LONGEST + 1)]
        for text in references:
            self.extend(text)
            self._tokens.append(-1)

    def __len__(self) -> int:
        return len(self._tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        """Add a token; the n-grams that end just before it now have it as their continuation."""
        tokens, end = self._tokens, len(self._tokens)
        for n in range(SHORTEST, LONGEST + 1):
            if end >= n:
                gram = tuple(tokens[end - n:end])
                if -1 not in gram:
                    self._next[n][gram] = end
        tokens.append(token)

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the longest earlier occurrence of the text's last tokens."""
        tokens = self._tokens
        for n in range(LONGEST, SHORTEST - 1, -1):
            if len(tokens) < n:
                continue
            start = self._next[n].get(tuple(tokens[-n:]))
            if start is None:
                continue
            proposal = []
            for token in tokens[start:start + limit]:
                if token == -1:
                    break
                proposal.append(token)
            if proposal:
                return proposal
        return []
