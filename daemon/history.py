"""Conversation history in SQLite: sessions and their turns, durable across crashes and restarts.

One connection, used only from the store's own thread (the async wrapper `History` hands every call to it),
in WAL mode with synchronous=FULL so that a committed turn survives a killed process or a power cut.

A turn the database refuses for now (locked by another process, disk full, I/O error) is not lost: it is kept
in memory, in order, and written by `History`'s retry with back-off as soon as the database accepts it again;
every later turn waits behind it, so the stored order is always the order of the conversation.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

TurnStatus = Literal["complete", "interrupted"]
TITLE_CHARS = 60

BUSY_TIMEOUT_MS = 5000  # reads, sessions and the rest wait this long for another process's lock
TURN_WRITE_WAIT_MS = 1000  # a turn waits less: the answer's `done` (and its last spoken words) wait for it
RETRY_WAIT_MS = 50  # a retry must not hold the store's thread (and every reader behind it) for long
SHUTDOWN_WAIT_MS = 2000  # the last attempt before the daemon exits
MAX_PENDING = 200  # turns kept in memory at most; beyond this, new questions are refused (answers always kept)

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
IN_MEMORY = Path(":memory:")
"""A history that is never written to disk (history_mode off)."""


class HistoryError(Exception):
    """The history database cannot be used; the message says why and where."""


class NoSuchSession(KeyError):
    pass


@dataclass(eq=False)
class PendingTurn:
    """A turn the database did not accept yet; compared by identity, so a question can be taken back."""

    session: str
    role: Literal["user", "assistant"]
    content: str
    status: TurnStatus
    created_at: float


@dataclass(frozen=True)
class TurnRef:
    """Where an appended turn went: stored under `seq`, or kept in memory (`pending`) until it can be; `failure`
    says why the database refused this very turn (None when it only waits behind earlier unsaved turns), and
    `waiting` how many turns are kept in memory, this one included."""

    seq: int = 0
    pending: PendingTurn | None = None
    failure: str | None = None
    waiting: int = 0

    @property
    def stored(self) -> bool:
        return self.pending is None


@dataclass
class FlushResult:
    saved: int = 0
    left: list[PendingTurn] = field(default_factory=list)
    error: str | None = None


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
        self._pending: deque[PendingTurn] = deque()
        self.pending_error = ""  # why the database refused the oldest waiting turn, last time it was tried
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted text is overwritten, not left in free pages
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
            self._db.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (SQLITE_FULL); a second ROLLBACK would hide the cause.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _busy_wait(self, ms: int) -> Iterator[None]:
        self._db.execute(f"PRAGMA busy_timeout={int(ms)}")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def limit_pages(self, pages: int) -> None:
        """Fault injection (setting fault_history_max_pages): a database that cannot grow beyond `pages` pages
        fails like a full disk (SQLITE_FULL) for this connection."""
        self._db.execute(f"PRAGMA max_page_count={int(pages)}")

    def close(self) -> None:
        self._db.close()

    def create_session(self, title: str = "") -> str:
        session, now = uuid.uuid4().hex, time.time()
        self._db.execute("INSERT INTO sessions(id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                         (session, title, now, now))
        return session

    def exists(self, session: str) -> bool:
        return self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session,)).fetchone() is not None

    def add_turn(self, session: str, role: str, content: str, status: TurnStatus = "complete",
                 at: float | None = None) -> int:
        """Append a turn in one transaction; the first user turn also names the session."""
        now = time.time() if at is None else at
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

    def append_turn(self, session: str, role: Literal["user", "assistant"], content: str,
                    status: TurnStatus = "complete") -> TurnRef:
        """Append a turn, or keep it in memory when the database refuses it for now (see the module doc).

        Raises NoSuchSession, and HistoryError for a question when MAX_PENDING turns already wait."""
        turn = PendingTurn(session, role, content, status, time.time())
        if self._pending and self.flush_pending().left:
            return self._keep(turn, None)
        try:
            with self._busy_wait(TURN_WRITE_WAIT_MS):
                return TurnRef(seq=self.add_turn(session, role, content, status, at=turn.created_at))
        except sqlite3.OperationalError as exc:  # locked, full, I/O error: may pass; anything else is a bug
            return self._keep(turn, str(exc))

    def _keep(self, turn: PendingTurn, failure: str | None) -> TurnRef:
        if turn.role == "user" and len(self._pending) >= MAX_PENDING:
            raise HistoryError(f"{len(self._pending)} turns are waiting to be saved; the history database "
                               f"refuses writes ({failure or self.pending_error})")
        self._pending.append(turn)
        if failure is not None:
            self.pending_error = failure
        return TurnRef(pending=turn, failure=failure, waiting=len(self._pending))

    def flush_pending(self, wait_ms: int = RETRY_WAIT_MS) -> FlushResult:
        """Write the waiting turns in order; stop at the first the database still refuses."""
        result = FlushResult()
        while self._pending:
            turn = self._pending[0]
            try:
                with self._busy_wait(wait_ms):
                    self.add_turn(turn.session, turn.role, turn.content, turn.status, at=turn.created_at)
                result.saved += 1
            except NoSuchSession:  # Deleted (DELETE /api/sessions/{id}) while its turn waited: nothing to keep.
                _LOGGER.info("session %s was deleted; its waiting %s turn is dropped", turn.session, turn.role)
            except sqlite3.OperationalError as exc:
                self.pending_error = result.error = str(exc)
                break
            self._pending.popleft()
        result.left = list(self._pending)
        return result

    def pending_turns(self, session: str) -> list[Turn]:
        """The session's turns still waiting to be saved, numbered after its stored ones."""
        waiting = [t for t in self._pending if t.session == session]
        base = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE session_id = ?",
                                    (session,)).fetchone()[0])
        return [Turn(base + i, t.role, t.content, t.status, t.created_at) for i, t in enumerate(waiting, 1)]

    def take_back(self, session: str, ref: TurnRef) -> None:
        """Take back a question that never got to the model, stored or still waiting."""
        if ref.pending is None:
            self.remove_turn(session, ref.seq)
        elif ref.pending in self._pending:
            self._pending.remove(ref.pending)

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

    def sessions(self, limit: int = 100, offset: int = 0, among: Collection[str] | None = None
                 ) -> list[SessionSummary]:
        """Newest first; with `among`, only those sessions (a visit's)."""
        ids = sorted(among or ()) if among is not None else None
        within = "" if ids is None else f"AND s.id IN ({','.join('?' * len(ids))}) "
        # A session whose only question was taken back holds nothing worth listing.
        return self._summaries(f"WHERE EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.id) {within}"
                               "ORDER BY s.updated_at DESC, s.created_at DESC LIMIT ? OFFSET ?",
                               (*(ids or ()), limit, offset))

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
        if not self.erase([session]):
            raise NoSuchSession(session)

    def erase(self, sessions: Collection[str] | None) -> int:
        """Delete these sessions (None: every one) and their waiting turns, so that their text is gone from the
        files too: overwritten in the database (secure_delete) and the write-ahead log emptied. How many."""
        ids = list(sessions) if sessions is not None else None
        if ids == []:
            return 0
        where = "" if ids is None else f" WHERE id IN ({','.join('?' * len(ids))})"
        with self._transaction():
            removed = int(self._db.execute(f"DELETE FROM sessions{where}", ids or ()).rowcount)
        kept = [t for t in self._pending if ids is not None and t.session not in ids]
        self._pending = deque(kept)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return removed

    def purge_before(self, cutoff: float) -> int:
        """Delete sessions last used before `cutoff` (epoch seconds); returns how many."""
        return int(self._db.execute("DELETE FROM sessions WHERE updated_at < ?", (cutoff,)).rowcount)

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


class History:
    """The async face of HistoryStore: every call runs on the store's single thread, never on the loop.

    It also owns the retry of turns the database refused (see the module doc): back-off from RETRY_FIRST to
    RETRY_MAX seconds while any wait, and one last attempt when it closes."""

    RETRY_FIRST = 0.5
    RETRY_MAX = 5.0

    def __init__(self, store: HistoryStore, executor: ThreadPoolExecutor) -> None:
        self.store = store
        self._executor = executor
        self._retry: asyncio.Task[None] | None = None
        # Told of each turn that must wait in memory, and of turns lost (GET /metrics counts them).
        self.on_write_deferred: Callable[[], None] = _nothing
        self.on_write_failed: Callable[[int], None] = _nothing_lost

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

    async def append(self, session: str, role: Literal["user", "assistant"], content: str,
                     status: TurnStatus = "complete", *, request_id: str = "") -> TurnRef:
        """Append a turn (HistoryStore.append_turn); one that must wait is retried in the background."""
        try:
            ref = await self.run(lambda store: store.append_turn(session, role, content, status))
        except (HistoryError, sqlite3.Error):  # too many turns wait already, or a broken database: not stored
            self.on_write_failed(1)
            raise
        if ref.stored:
            return ref
        self.on_write_deferred()
        context = {"SESSION_ID": session, "REQUEST_ID": request_id or session}
        if ref.failure is not None:  # The first refusal of an outage: said once, with what and where.
            _LOGGER.warning("the history database refused the %s turn of session %s (request %s): %s; keeping it "
                            "in memory and retrying until it is saved", _what(role, status), session,
                            request_id or session, ref.failure, extra=context)
        else:
            _LOGGER.info("the %s turn of session %s waits behind %d unsaved turn(s)", _what(role, status), session,
                         ref.waiting - 1, extra=context)
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_until_saved(), name="history-retry")
        return ref

    async def _retry_until_saved(self) -> None:
        started, delay = time.monotonic(), self.RETRY_FIRST
        while True:
            await asyncio.sleep(delay)
            result = await self.run(HistoryStore.flush_pending)
            if not result.left:
                _LOGGER.info("the history database accepts writes again: every waiting turn is saved (%.1f s after "
                             "the first refusal)", time.monotonic() - started)
                return
            _LOGGER.debug("history retry: %d turn(s) still waiting: %s", len(result.left), result.error)
            delay = min(delay * 2, self.RETRY_MAX)

    async def close(self) -> None:
        """One last attempt at the waiting turns (the daemon is stopping), then close the store."""
        if self._retry is not None:
            self._retry.cancel()
            await asyncio.gather(self._retry, return_exceptions=True)
        result = await self.run(lambda store: store.flush_pending(SHUTDOWN_WAIT_MS))
        if result.saved:
            _LOGGER.info("saved %d waiting turn(s) before stopping", result.saved)
        if left := result.left:
            self.on_write_failed(len(left))
            where = ", ".join(f"{t.session} ({_what(t.role, t.status)}, {len(t.content)} chars)" for t in left)
            _LOGGER.error("stopping with %d turn(s) the history database did not accept (%s); they are lost: %s",
                          len(left), result.error, where)
        await self.run(HistoryStore.close)
        self._executor.shutdown(wait=True)


def _what(role: str, status: str) -> str:
    return "question" if role == "user" else "answer" if status == "complete" else "interrupted answer"


def _nothing() -> None:
    pass


def _nothing_lost(turns: int) -> None:
    pass
