"""What the chunker takes and gives: its settings and the speakable chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChunkKind = Literal["sentence", "clause", "placeholder", "final"]


@dataclass(frozen=True)
class SpeechChunk:
    """One piece of speech: plain text (never empty, never only punctuation) and why it ended."""

    text: str
    kind: ChunkKind


@dataclass(frozen=True)
class ChunkerConfig:
    """How eagerly to cut, and what to say instead of code and tables (None: say nothing)."""

    clause_min_chars: int = 0
    code_placeholder: str | None = "The code is shown on the screen."
    table_placeholder: str | None = "The table is shown on the screen."
    max_chunk_chars: int = 300
    code_placeholder_zh: str | None = "代码显示在屏幕上。"
    table_placeholder_zh: str | None = "表格显示在屏幕上。"

    def __post_init__(self) -> None:
        if self.clause_min_chars < 0:
            raise ValueError(f"clause_min_chars must be >= 0, not {self.clause_min_chars}")
        if self.max_chunk_chars < 1:
            raise ValueError(f"max_chunk_chars must be >= 1, not {self.max_chunk_chars}")


DEFAULT_CONFIG = ChunkerConfig()
