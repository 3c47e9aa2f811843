"""Writing files so that a reader, or a power cut, never sees half of one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomically(path: Path, text: str) -> None:
    """`text` in a new hidden file beside `path`, fsynced and renamed over it, then the directory fsynced: the
    old content or the new, never a mix, and never written into a file another name (a hard link) shares."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def link_or_copy(source: Path, dest: Path) -> None:
    """`dest` with the content of `source`: a hard link where the file system allows one (no second copy)."""
    dest.unlink(missing_ok=True)
    try:
        dest.hardlink_to(source)
    except OSError:
        shutil.copy2(source, dest)
