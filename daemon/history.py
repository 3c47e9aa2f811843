"""Conversation history in SQLite: sessions and their turns, durable across crashes and restarts.

One connection, used only from the store's own thread (the async wrapper `History` hands every call to it),
in WAL mode with synchronous=FULL so that a committed turn survives a killed process or a power cut.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

TurnStatus = Literal["complete", "interrupted"]
TITLE_CHARS = 60

# Each entry moves the schema from version i to i + 1; PRAGMA user_version records where a file stands.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE turns (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('complete', 'interrupted')),
        created_at REAL NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE INDEX sessions_by_update ON sessions(updated_at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(Exception):
    """The history database cannot be used; the message says why and where."""


class NoSuchSession(KeyError):
    pass


@dataclass(frozen=True)
class SessionSummary:
    id: str
    title: str
    created_at: float
    updated_at: float
    turn_count: int


@dataclass(frozen=True)
class Turn:
    seq: int
    role: Literal["user", "assistant"]
    content: str
    status: TurnStatus
    created_at: float


def title_from(question: str) -> str:
    """A session's title: the first question on one line, cut at a word where that is possible."""
    line = " ".join(question.split())
    if len(line) <= TITLE_CHARS:
        return line
    cut = line[:TITLE_CHARS]
    space = cut.rfind(" ")
    return (cut[:space] if space > TITLE_CHARS // 2 else cut) + "…"


class HistoryStore:
    """The synchronous store; every method runs on the caller's thread (see `History`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError(f"cannot open history database {path}: {exc}") from None

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryError(f"{self.path} has schema version {version}, newer than this kioskd "
                               f"({SCHEMA_VERSION}); upgrade kioskd or move the file away")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            _LOGGER.info("migrating %s to schema version %d", self.path, target)
            with self._transaction():
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={target}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def create_session(self, title: str = "") -> str:
        session, now = uuid.uuid4().hex, time.time()
        self._db.execute("INSERT INTO sessions(id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                         (session, title, now, now))
        return session

    def exists(self, session: str) -> bool:
        return self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session,)).fetchone() is not None

    def add_turn(self, session: str, role: str, content: str, status: TurnStatus = "complete") -> int:
        """Append a turn in one transaction; the first user turn also names the session."""
        now = time.time()
        with self._transaction():
            row = self._db.execute("SELECT title, (SELECT COALESCE(MAX(seq), 0) FROM turns WHERE session_id = ?) "
                                   "FROM sessions WHERE id = ?", (session, session)).fetchone()
            if row is None:
                raise NoSuchSession(session)
            title, seq = row[0], int(row[1]) + 1
            self._db.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                             (session, seq, role, content, status, now))
            if not title and role == "user":
                title = title_from(content)
            self._db.execute("UPDATE sessions SET updated_at = ?, title = ? WHERE id = ?", (now, title, session))
        return seq

    def remove_turn(self, session: str, seq: int) -> None:
        """Take back a question that never got to the model (busy, too long), so nothing is half-stored."""
        with self._transaction():
            self._db.execute("DELETE FROM turns WHERE session_id = ? AND seq = ?", (session, seq))
            if seq == 1:
                self._db.execute("UPDATE sessions SET title = '' WHERE id = ?", (session,))

    def turns(self, session: str) -> list[Turn]:
        if not self.exists(session):
            raise NoSuchSession(session)
        rows = self._db.execute("SELECT seq, role, content, status, created_at FROM turns "
                                "WHERE session_id = ? ORDER BY seq", (session,)).fetchall()
        return [Turn(*row) for row in rows]

    def summary(self, session: str) -> SessionSummary:
        rows = self._summaries("WHERE s.id = ?", (session,))
        if not rows:
            raise NoSuchSession(session)
        return rows[0]

    def sessions(self, limit: int = 100, offset: int = 0) -> list[SessionSummary]:
        # A session whose only question was taken back holds nothing worth listing.
        return self._summaries("WHERE EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.id) "
                               "ORDER BY s.updated_at DESC, s.created_at DESC LIMIT ? OFFSET ?", (limit, offset))

    def _summaries(self, tail: str, params: tuple[object, ...]) -> list[SessionSummary]:
        rows = self._db.execute(
            "SELECT s.id, s.title, s.created_at, s.updated_at, "
            f"(SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) FROM sessions s {tail}", params).fetchall()
        return [SessionSummary(*row) for row in rows]

    def rename(self, session: str, title: str) -> None:
        cursor = self._db.execute("UPDATE sessions SET title = ? WHERE id = ?", (title, session))
        if cursor.rowcount == 0:
            raise NoSuchSession(session)

    def delete(self, session: str) -> None:
        cursor = self._db.execute("DELETE FROM sessions WHERE id = ?", (session,))
        if cursor.rowcount == 0:
            raise NoSuchSession(session)

    def purge_before(self, cutoff: float) -> int:
        """Delete sessions last used before `cutoff` (epoch seconds); returns how many."""
        return int(self._db.execute("DELETE FROM sessions WHERE updated_at < ?", (cutoff,)).rowcount)

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


class History:
    """The async face of HistoryStore: every call runs on the store's single thread, never on the loop."""

    def __init__(self, store: HistoryStore, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> History:
        """Open the store on the thread that will serve every later call."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        try:
            store = await asyncio.get_running_loop().run_in_executor(executor, HistoryStore, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def run(self, call: Callable[[HistoryStore], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, self.store)

    async def close(self) -> None:
        await self.run(HistoryStore.close)
        self._executor.shutdown(wait=True)
