"""manifest.json: every file of a mirror with its sha256 and size, and what the mirror was built for;
`verify` hashes the files again against it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.files import write_text_atomically
from daemon.mirror.errors import MirrorError
from daemon.models.download import sha256_file

MANIFEST = "manifest.json"
FORMAT = 1


def mirror_files(mirror: Path) -> list[Path]:
    """The files a mirror serves, relative to it, sorted; hidden ones (work folders, .part files) excluded."""
    found = []
    for folder, dirs, files in os.walk(mirror):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            relative = (Path(folder) / name).relative_to(mirror)
            if not name.startswith(".") and not name.endswith(".part") and relative != Path(MANIFEST):
                found.append(relative)
    return sorted(found)


def write_manifest(mirror: Path, kioskd_version: str, targets: list[dict[str, str]]) -> Path:
    files = {str(relative): {"sha256": sha256_file(mirror / relative), "size": (mirror / relative).stat().st_size}
             for relative in mirror_files(mirror)}
    record = {"format": FORMAT, "kioskd_version": kioskd_version, "targets": targets, "files": files}
    path = mirror / MANIFEST
    write_text_atomically(path, json.dumps(record, indent=2) + "\n")
    return path


@dataclass(frozen=True)
class Verification:
    """What `verify` found: files that differ from the manifest, are gone, or are not in it."""

    checked: int
    bad: list[str]
    missing: list[str]
    unlisted: list[str]

    @property
    def ok(self) -> bool:
        return not self.bad and not self.missing


def read_manifest(mirror: Path) -> dict[str, Any]:
    path = mirror / MANIFEST
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MirrorError(f"{path} does not exist: is {mirror} a mirror made by `kioskd mirror build`?") from None
    except (OSError, ValueError) as exc:
        raise MirrorError(f"cannot read {path}: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise MirrorError(f"{path} has no `files` table")
    return record


def verify(mirror: Path) -> Verification:
    files: dict[str, dict[str, Any]] = read_manifest(mirror)["files"]
    bad: list[str] = []
    missing: list[str] = []
    for relative, expected in sorted(files.items()):
        path = mirror / relative
        if not path.is_file():
            missing.append(relative)
        elif path.stat().st_size != expected.get("size") or sha256_file(path) != expected.get("sha256"):
            bad.append(relative)
    unlisted = [str(relative) for relative in mirror_files(mirror) if str(relative) not in files]
    return Verification(len(files), bad, missing, unlisted)
