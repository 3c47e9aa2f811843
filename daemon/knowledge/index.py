"""The venue's sections in SQLite: an FTS5 table over pre-tokenized terms, ranked with bm25() and coverage.

The index file lives in the state directory and is rebuilt only when the folder's content hash changes; a new
index is written beside the old one and renamed over it, so a reader of the old one is never disturbed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from daemon.knowledge.folder import Folder, Section, folder_digest, read_folder
from daemon.knowledge.scoring import Idf, Unit, coverage, units
from daemon.knowledge.synonyms import Synonyms
from daemon.knowledge.terms import index_text, language, terms

_LOGGER = logging.getLogger(__name__)

FORMAT = "kioskd-knowledge-index-1"
CANDIDATES = 40
SAME_LANGUAGE_BONUS = 0.2
TITLE_SHARE = 0.3
"""How much of a section's score comes from its heading (and keywords) alone."""


@dataclass(frozen=True)
class Hit:
    section: Section
    score: float
    coverage: float
    """Share of the question's meaning the whole section holds (0..1)."""
    title_coverage: float
    """Share the heading and keywords alone hold."""


@dataclass(frozen=True)
class _Entry:
    section: Section
    all_terms: frozenset[str]
    title_terms: frozenset[str]


class KnowledgeIndex:
    """Search over one folder's sections. Thread-safe for reads: each search opens no shared cursor state."""

    def __init__(self, db: sqlite3.Connection, folder: Path, digest: str, rebuilt: bool) -> None:
        self._db = db
        self.folder = folder
        self.digest = digest
        self.rebuilt = rebuilt
        """True when opening it had to (re)build the index: the folder changed or was new."""
        self._entries = [_entry(s) for s in _load_sections(db)]
        df: Counter[str] = Counter()
        for entry in self._entries:
            df.update(entry.all_terms)
        han = sum(1 for e in self._entries if e.section.lang == "zh")
        self._idf = Idf(df, han, len(self._entries) - han)
        self._synonyms = Synonyms().with_keywords((e.section.title, *e.section.keywords)
                                                  for e in self._entries if e.section.keywords)

    @classmethod
    def open(cls, folder: Path, db_path: Path) -> KnowledgeIndex:
        """The folder's index at `db_path`, built first when missing or out of date; KnowledgeError when the
        folder has problems (nothing is changed then)."""
        if not folder.is_dir():
            read_folder(folder)  # raises KnowledgeError naming the problem
        digest = folder_digest(folder)
        if (db := _open_current(db_path, digest)) is not None:
            _LOGGER.info("knowledge index %s is up to date", db_path)
            return cls(db, folder, digest, rebuilt=False)
        parsed = read_folder(folder)
        _build(db_path, parsed)
        _LOGGER.info("indexed %d sections of %d files from %s", len(parsed.sections), len(parsed.files), folder)
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        return cls(db, folder, parsed.digest, rebuilt=True)

    @property
    def sections(self) -> list[Section]:
        return [e.section for e in self._entries]

    def close(self) -> None:
        self._db.close()

    def search(self, question: str, limit: int = 3) -> list[Hit]:
        """The sections that best cover the question, best first (at most `limit`; none that share no term)."""
        found = terms(question)
        question_units = units(found, self._synonyms, self._idf)
        lang = language(question)
        hits = [self._score(self._entries[row], question_units, lang) for row in self._candidates(question_units)]
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:limit]

    def missing_topics(self, question: str) -> list[Unit]:
        """The question's synonym-group topics ("parking", "抽烟") that no section mentions in any of its words."""
        asked = units(terms(question), self._synonyms, self._idf)
        return [u for u in asked if len(u.alternatives) > 1
                and not any(u.found_in(e.all_terms) for e in self._entries)]

    def term_weight(self, term: str) -> float:
        """How much a term tells sections apart (its inverse document frequency)."""
        return self._idf(term)

    def question_units(self, text: str) -> list[Unit]:
        return units(terms(text), self._synonyms, self._idf)

    def _candidates(self, question_units: list[Unit]) -> list[int]:
        words = sorted({t for u in question_units for alt in u.alternatives for t in alt})
        if not words:
            return []
        query = " OR ".join(f'"{w}"' for w in words)
        rows = self._db.execute("SELECT rowid FROM fts WHERE fts MATCH ? ORDER BY bm25(fts, 3.0, 1.0) LIMIT ?",
                                (query, CANDIDATES)).fetchall()
        return [int(row[0]) - 1 for row in rows]

    def _score(self, entry: _Entry, question_units: list[Unit], lang: str) -> Hit:
        whole = coverage(question_units, entry.all_terms)
        title = coverage(question_units, entry.title_terms)
        bonus = SAME_LANGUAGE_BONUS if entry.section.lang == lang else 0.0
        return Hit(entry.section, (1 - TITLE_SHARE) * whole + TITLE_SHARE * title + bonus, whole, title)


def _entry(section: Section) -> _Entry:
    heading = " ".join((section.title, *section.keywords))
    context = " ".join(section.parents)
    title_terms = frozenset(terms(heading).all())
    return _Entry(section, title_terms | frozenset(terms(f"{context} {section.body}").all()), title_terms)


def _open_current(db_path: Path, digest: str) -> sqlite3.Connection | None:
    if not db_path.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.Error as exc:
        _LOGGER.warning("knowledge index %s is unreadable (%s); building it again", db_path, exc)
        return None
    if meta.get("format") == FORMAT and meta.get("digest") == digest:
        return db
    db.close()
    return None


def _build(db_path: Path, folder: Folder) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(db_path.name + ".new")
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        db.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE sections (id INTEGER PRIMARY KEY, file TEXT NOT NULL, title TEXT NOT NULL,
                                   line INTEGER NOT NULL, body TEXT NOT NULL, keywords TEXT NOT NULL,
                                   parents TEXT NOT NULL);
            CREATE VIRTUAL TABLE fts USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 0');
        """)
        for row, s in enumerate(folder.sections, start=1):
            db.execute("INSERT INTO sections VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (row, s.file, s.title, s.line, s.body, json.dumps(s.keywords), json.dumps(s.parents)))
            db.execute("INSERT INTO fts (rowid, title, body) VALUES (?, ?, ?)",
                       (row, index_text(" ".join((s.title, *s.keywords))),
                        index_text(" ".join((*s.parents, s.body)))))
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("digest", folder.digest)])
        db.commit()
    finally:
        db.close()
    os.replace(tmp, db_path)


def _load_sections(db: sqlite3.Connection) -> list[Section]:
    rows = db.execute("SELECT file, title, line, body, keywords, parents FROM sections ORDER BY id").fetchall()
    return [Section(f, t, int(ln), b, tuple(json.loads(k)), tuple(json.loads(p))) for f, t, ln, b, k, p in rows]
