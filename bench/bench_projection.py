"""Per-turn token counts measured on this machine, projected onto a Raspberry Pi 4 and Pi 5 (issue 19).

Pure arithmetic and file reading, no model: bench.bench_coldstart measures the counts and calls this. The time to
first token on a board is the tokens the model reads for the turn (after cache reuse) / the board's prompt rate;
the answer time is the answer's tokens / its decode rate. The rates are published figures for Qwen2.5-0.5B Q4
with llama.cpp (Pi 5 at 2 threads), not measured here; the start-up work and the per-request overhead of the
daemon (retrieval, rendering, restoring a state file) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX_MAGIC = b"KIOSKD-PREFIX-1\n"
"""The first line of a stored prefix state (daemon.prefix_states.MAGIC; read here only to count its tokens)."""


@dataclass(frozen=True)
class Board:
    name: str
    prompt_tps: float
    decode_tps: float


BOARDS = (Board("Pi 5", 174.0, 34.0), Board("Pi 4", 25.0, 9.5))


@dataclass(frozen=True)
class TurnTokens:
    """What one turn cost the model: tokens of its whole prompt, of those read (not reused), of its answer."""

    label: str
    prompt_tokens: int
    prompt_eval_tokens: int
    completion_tokens: int


def seconds_to_first_token(tokens: int, board: Board) -> float:
    return tokens / board.prompt_tps


def seconds_to_answer(tokens: int, board: Board) -> float:
    return tokens / board.decode_tps


def projection_rows(turns: Sequence[TurnTokens], boards: Sequence[Board] = BOARDS) -> Iterator[str]:
    """A Markdown table: per turn its tokens, then per board TTFT (read tokens), the whole answer's time, and
    TTFT if every prompt token were read (no prefix state, no conversation cache)."""
    head = ["turn", "prompt tokens", "read", "answer tokens"]
    for b in boards:
        head += [f"{b.name} TTFT s", f"{b.name} answer s", f"{b.name} TTFT s, all read"]
    yield "| " + " | ".join(head) + " |"
    yield "|" + " --- |" * len(head)
    for t in turns:
        cells = [t.label, str(t.prompt_tokens), str(t.prompt_eval_tokens), str(t.completion_tokens)]
        for b in boards:
            cells += [f"{seconds_to_first_token(t.prompt_eval_tokens, b):.2f}",
                      f"{seconds_to_answer(t.completion_tokens, b):.1f}",
                      f"{seconds_to_first_token(t.prompt_tokens, b):.2f}"]
        yield "| " + " | ".join(cells) + " |"


def startup_rows(prefix_tokens: int, boards: Sequence[Board] = BOARDS) -> Iterator[str]:
    """What building every prefix state before READY costs on each board (the first start after a wipe, an update
    of the model or llama.cpp, or a changed venue text); with the states on disk this work is skipped."""
    yield "| board | prefix tokens read before READY | seconds, no states on disk | seconds, states on disk |"
    yield "| --- | --- | --- | --- |"
    for b in boards:
        yield f"| {b.name} | {prefix_tokens} | {seconds_to_first_token(prefix_tokens, b):.1f} | 0 |"


def stored_prefixes(directory: Path) -> list[tuple[int, ...]]:
    """The token sequences of the prefix state files in `directory` (files that do not parse are skipped)."""
    out = []
    for path in sorted(directory.glob("*.kvstate")):
        with path.open("rb") as fh:
            if fh.readline() != PREFIX_MAGIC:
                continue
            try:
                count = int(json.loads(fh.readline())["tokens"])
            except (ValueError, KeyError, TypeError):
                continue
            raw = fh.read(4 * count)
        if len(raw) == 4 * count:
            out.append(tuple(int.from_bytes(raw[i:i + 4], "little", signed=True) for i in range(0, len(raw), 4)))
    return out


def prefix_tree_tokens(prefixes: Iterable[Sequence[int]]) -> int:
    """Tokens the model reads to build all `prefixes` when each is built on the one before it (the engine keeps
    what the live context shares): the nodes of their prefix tree, i.e. in sorted order each one's length minus
    what it shares with its predecessor."""
    total, previous = 0, tuple[int, ...]()
    for p in sorted(tuple(x) for x in prefixes):
        shared = 0
        for a, b in zip(previous, p, strict=False):
            if a != b:
                break
            shared += 1
        total += len(p) - shared
        previous = p
    return total
