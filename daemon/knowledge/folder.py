"""Reading a venue's folder of Markdown files into sections, with every problem an operator must fix.

Every heading starts a section that runs to the next heading; a heading followed directly by a deeper one only
groups the sections under it. A heading that is a question (ends in ? or ？) makes an FAQ entry whose body is
the curated answer. A first body line `Keywords: a, b` (`关键词：…`) lists words visitors may use instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

from daemon.knowledge.terms import language

SUFFIXES = (".md", ".markdown")
MAX_SECTION_CHARS = 2000
"""Longest section body: a grounded answer puts a whole section before the question."""
MAX_SECTIONS = 1000
MAX_FILE_BYTES = 1024 * 1024
KEYWORD_LABELS = ("keywords", "关键词", "关键字")


class KnowledgeError(ValueError):
    """A folder that cannot be used; `problems` holds one line per thing to fix."""

    def __init__(self, folder: Path, problems: list[str]) -> None:
        super().__init__(f"the knowledge folder {folder} has {len(problems)} problem(s):\n  "
                         + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Section:
    file: str
    """Path of the Markdown file, relative to the folder (forward slashes)."""
    title: str
    line: int
    body: str
    keywords: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    """The headings that enclose this one, outermost first."""

    @property
    def is_faq(self) -> bool:
        return self.title.endswith(("?", "？"))

    @property
    def lang(self) -> str:
        return language(self.title + self.body)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Folder:
    path: Path
    sections: list[Section] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    digest: str = ""
    """sha256 over every file's name and content: the index is rebuilt only when it changes."""


def folder_digest(path: Path) -> str:
    """The content hash of the folder's Markdown files (names and bytes), without parsing them."""
    digest = hashlib.sha256(b"kioskd-knowledge-1\0")
    if path.is_dir():
        for name, file in _markdown_files(path):
            digest.update(name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def _markdown_files(path: Path) -> list[tuple[str, Path]]:
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
    return [(f.relative_to(path).as_posix(), f) for f in files if f.suffix.lower() in SUFFIXES]


def read_folder(path: Path) -> Folder:
    """Every section of the folder's Markdown files, or KnowledgeError listing all problems found."""
    if not path.is_dir():
        raise KnowledgeError(path, [f"{path} is not a folder" if path.exists() else f"{path} does not exist"])
    folder, problems = Folder(path), []
    digest = hashlib.sha256(b"kioskd-knowledge-1\0")
    markdown = _markdown_files(path)
    folder.ignored = sorted({p.relative_to(path).as_posix() for p in path.rglob("*")
                             if p.is_file() and not _hidden(p, path)} - {name for name, _ in markdown})
    for name, file in markdown:
        folder.files.append(name)
        data = file.read_bytes()
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        sections, found = parse_file(name, data)
        folder.sections += sections
        problems += found
    problems += _duplicates(folder.sections)
    if not folder.sections and not problems:
        problems.append(f"no sections found: write Markdown files ({', '.join(SUFFIXES)}) with headings in {path}")
    if len(folder.sections) > MAX_SECTIONS:
        problems.append(f"{len(folder.sections)} sections; at most {MAX_SECTIONS} are indexed")
    if problems:
        raise KnowledgeError(path, problems)
    folder.digest = digest.hexdigest()
    return folder


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def parse_file(name: str, data: bytes) -> tuple[list[Section], list[str]]:
    if len(data) > MAX_FILE_BYTES:
        return [], [f"{name}: {len(data)} bytes; at most {MAX_FILE_BYTES} per file"]
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        return [], [f"{name}: not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8"]
    lines = text.splitlines()
    headings = _headings(text)
    problems = []
    if headings and any(line.strip() for line in lines[: headings[0][0]]):
        problems.append(f"{name}:1: text before the first heading belongs to no section; give it a heading")
    if not headings and text.strip():
        problems.append(f"{name}: no headings; every section starts with a heading (# Opening hours)")
    sections = []
    for i, (start, end, level, title) in enumerate(headings):
        following = headings[i + 1] if i + 1 < len(headings) else None
        body = "\n".join(lines[end: following[0] if following else len(lines)]).strip()
        parents = tuple(t for (_, _, lv, t) in _enclosing(headings[:i], level))
        if not body:
            if following is None or following[2] <= level:
                problems.append(f"{name}:{start + 1}: section \"{title}\" has no text")
            continue
        keywords, body = _keywords(body)
        if not title:
            problems.append(f"{name}:{start + 1}: a heading without text")
        elif not body:
            problems.append(f"{name}:{start + 1}: section \"{title}\" has only keywords, no text")
        elif len(body) > MAX_SECTION_CHARS:
            problems.append(f"{name}:{start + 1}: section \"{title}\" has {len(body)} characters; at most "
                            f"{MAX_SECTION_CHARS} (split it under more headings)")
        else:
            sections.append(Section(name, title, start + 1, body, keywords, parents))
    return sections, problems


def _headings(text: str) -> list[tuple[int, int, int, str]]:
    """(first line, line after, level, text) of every ATX or setext heading; code blocks are not headings."""
    tokens = MarkdownIt("commonmark").parse(text)
    found = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            title = " ".join(tokens[i + 1].content.split())
            found.append((token.map[0], token.map[1], int(token.tag[1]), title))
    return found


def _enclosing(before: list[tuple[int, int, int, str]], level: int) -> list[tuple[int, int, int, str]]:
    chain: list[tuple[int, int, int, str]] = []
    for heading in before:
        while chain and chain[-1][2] >= heading[2]:
            chain.pop()
        chain.append(heading)
    return [h for h in chain if h[2] < level]


def _keywords(body: str) -> tuple[tuple[str, ...], str]:
    first, _, rest = body.partition("\n")
    label, sep, value = first.replace("：", ":").partition(":")
    if not sep or label.strip().lower() not in KEYWORD_LABELS:
        return (), body
    words = tuple(w.strip() for w in value.replace("，", ",").replace("、", ",").split(",") if w.strip())
    return words, rest.strip()


def _duplicates(sections: list[Section]) -> list[str]:
    seen: dict[str, Section] = {}
    problems = []
    for section in sections:
        key = " ".join(section.title.casefold().split())
        if key in seen:
            problems.append(f"{section.where}: heading \"{section.title}\" is also at {seen[key].where}; "
                            f"each heading must be unique (it names the answer's source)")
        else:
            seen[key] = section
    return problems
