"""How many tokens to propose next, from how the last proposals fared.

Verifying k proposed tokens costs one batch of k + 1 tokens instead of one token: on a CPU that is not free
(the batch is compute-bound where one token is memory-bound), so a proposal that is mostly rejected is a loss.
The length grows while proposals are taken whole (a quote is being copied) and falls back to what was accepted
when one is cut short (the answer left the quote)."""

from __future__ import annotations

from dataclasses import dataclass

START = 4


@dataclass
class DraftLength:
    longest: int
    current: int = START

    def __post_init__(self) -> None:
        self.current = min(max(1, self.current), self.longest)  # 0 when proposals are off

    def next(self) -> int:
        return self.current

    def record(self, proposed: int, accepted: int) -> None:
        if proposed <= 0:
            return
        if accepted >= proposed:
            self.current = min(self.longest, self.current * 2)
        else:
            self.current = min(self.longest, accepted + 1)
