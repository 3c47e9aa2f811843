"""The SQLite history store on real files: schema, turns, titles, listing, purge, migration guard."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from daemon.history import SCHEMA_VERSION, HistoryError, HistoryStore, NoSuchSession, title_from


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "state" / "history.db")


def test_schema_is_created_in_wal_mode(store: HistoryStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_turns_are_kept_in_order_and_name_the_session(store: HistoryStore) -> None:
    session = store.create_session()
    store.add_turn(session, "user", "  Where is the\n library?  ")
    store.add_turn(session, "assistant", "Second floor.")
    store.add_turn(session, "user", "Thanks")
    store.add_turn(session, "assistant", "You're", status="interrupted")
    turns = store.turns(session)
    assert [(t.seq, t.role, t.status) for t in turns] == [
        (1, "user", "complete"), (2, "assistant", "complete"), (3, "user", "complete"),
        (4, "assistant", "interrupted")]
    summary = store.summary(session)
    assert summary.title == "Where is the library?" and summary.turn_count == 4


def test_sessions_are_listed_newest_first(store: HistoryStore) -> None:
    first, second, empty = store.create_session(), store.create_session(), store.create_session()
    store.add_turn(second, "user", "earlier question")
    time.sleep(0.01)
    store.add_turn(first, "user", "later question")
    assert [s.id for s in store.sessions()] == [first, second]
    assert store.summary(empty).turn_count == 0
    assert [s.id for s in store.sessions(limit=1, offset=1)] == [second]


def test_rename_delete_and_unknown_sessions(store: HistoryStore) -> None:
    session = store.create_session()
    store.add_turn(session, "user", "hello")
    store.rename(session, "Greeting")
    assert store.summary(session).title == "Greeting"
    store.delete(session)
    for call in (store.turns, store.summary, store.delete, lambda s: store.rename(s, "x"),
                 lambda s: store.add_turn(s, "user", "x")):
        with pytest.raises(NoSuchSession):
            call(session)
    assert sqlite3.connect(store.path).execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 0


def test_purge_removes_only_sessions_unused_since_the_cutoff(store: HistoryStore) -> None:
    old, fresh = store.create_session(), store.create_session()
    store.add_turn(old, "user", "old")
    cutoff = time.time()
    time.sleep(0.01)
    store.add_turn(fresh, "user", "new")
    assert store.purge_before(cutoff) == 1
    assert [s.id for s in store.sessions()] == [fresh]


def test_titles_are_one_line_and_bounded() -> None:
    assert title_from("a\nb\tc") == "a b c"
    long = title_from("word " * 40)
    assert len(long) <= 61 and long.endswith("…") and not long.endswith(" …")
    assert title_from("请问图书馆在哪里？" * 10).endswith("…")


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer than this kioskd"):
        HistoryStore(path)


def test_an_unusable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(HistoryError, match="cannot open history database"):
        HistoryStore(blocker / "history.db")


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    first = HistoryStore(path)
    session = first.create_session()
    first.add_turn(session, "user", "你好")
    first.close()
    again = HistoryStore(path)
    assert [t.content for t in again.turns(session)] == ["你好"]
    assert again.integrity_check() == "ok"


def test_a_taken_back_question_leaves_nothing(store: HistoryStore) -> None:
    session = store.create_session()
    seq = store.add_turn(session, "user", "too long")
    store.remove_turn(session, seq)
    assert store.turns(session) == []
    assert store.summary(session).title == ""
    assert store.sessions() == []


def locked(path: Path) -> sqlite3.Connection:
    """Another process's write transaction on the file (SQLITE_BUSY for the store until it commits)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


def test_turns_refused_by_a_locked_database_wait_in_order_and_are_saved_later(store: HistoryStore) -> None:
    a, b = store.create_session(), store.create_session()
    store.add_turn(a, "user", "Q1")
    other = locked(store.path)
    began = time.monotonic()
    first = store.append_turn(a, "assistant", "A1")
    assert time.monotonic() - began < 2.5, "a turn does not wait the full busy timeout"
    assert not first.stored and first.failure and "locked" in first.failure
    behind = store.append_turn(b, "user", "Q2")  # another session, still behind the first
    question = store.append_turn(a, "user", "never asked")
    assert behind.failure is None and behind.waiting == 2
    assert [t.content for t in store.pending_turns(a)] == ["A1", "never asked"]
    assert [t.seq for t in store.pending_turns(a)] == [2, 3]
    store.take_back(a, question)  # the model never started on it
    assert store.flush_pending().left == [first.pending, behind.pending]
    other.execute("COMMIT")
    result = store.flush_pending()
    assert result.saved == 2 and result.left == []
    assert [(t.seq, t.content) for t in store.turns(a)] == [(1, "Q1"), (2, "A1")]
    assert [t.content for t in store.turns(b)] == ["Q2"] and store.summary(b).title == "Q2"
    assert store.append_turn(a, "user", "Q3").seq == 3


def test_a_full_queue_refuses_questions_but_keeps_answers(store: HistoryStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("daemon.history.MAX_PENDING", 2)
    session = store.create_session()
    gone = store.create_session()
    other = locked(store.path)
    store.append_turn(session, "user", "Q1")
    store.append_turn(gone, "assistant", "for a deleted session")
    with pytest.raises(HistoryError, match="2 turns are waiting"):
        store.append_turn(session, "user", "Q2")
    assert not store.append_turn(session, "assistant", "A1").stored
    other.execute("DELETE FROM sessions WHERE id = ?", (gone,))
    other.execute("COMMIT")
    assert store.flush_pending().left == []  # the deleted session's turn is dropped, the rest saved
    assert [t.content for t in store.turns(session)] == ["Q1", "A1"]
