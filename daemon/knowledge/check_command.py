"""`kioskd knowledge check DIR`: what the daemon would index from a folder, or every problem to fix first."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TextIO

from daemon.knowledge.folder import KnowledgeError, read_folder
from daemon.knowledge.index import KnowledgeIndex


def run_check(folder: Path, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """0 when the folder is usable (its sections are listed), 1 with the same messages the daemon refuses it
    with."""
    try:
        parsed = read_folder(folder)
        with tempfile.TemporaryDirectory(prefix="kioskd-knowledge-") as tmp:
            KnowledgeIndex.open(folder, Path(tmp) / "index.db").close()  # the very index the daemon builds
    except KnowledgeError as exc:
        err.write(f"kioskd: {exc}\n")
        return 1
    by_file: dict[str, int] = {}
    for section in parsed.sections:
        if section.file not in by_file:
            by_file[section.file] = 0
            out.write(f"{section.file}\n")
        by_file[section.file] += 1
        kind = "FAQ" if section.is_faq else "section"
        heading = " > ".join((*section.parents, section.title))
        keywords = f"  [keywords: {', '.join(section.keywords)}]" if section.keywords else ""
        out.write(f"  line {section.line:<4} {kind:<8} {section.lang}  {heading} ({len(section.body)} chars)"
                  f"{keywords}\n")
    faqs = sum(1 for s in parsed.sections if s.is_faq)
    out.write(f"ok: {len(parsed.sections)} sections ({faqs} FAQ) in {len(parsed.files)} files\n")
    if parsed.ignored:
        out.write(f"not Markdown, ignored: {', '.join(parsed.ignored)}\n")
    return 0
